"""Secrets are never shown, logged or written: tokens passed where a variable's NAME goes,
passwords in addresses and proxy settings, the user's own tables in diffs and --json, and
the log of a server the tool starts. The tool runs as its own process (`run_cli`)."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from tests.tool import ROOT, cli_env, run_cli

TOKENS = {
    "github": "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "hugging face": "hf_AbCdEfGhIjKlMnOpQrStUvWxYz123456",
    "github fine-grained": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCD",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "random": "Zx81Qw72Er63Ty54Ui45Op36",
}


@pytest.mark.parametrize("flag", ["--env-key", "--env-header"])
@pytest.mark.parametrize("token", list(TOKENS.values()), ids=list(TOKENS))
def test_a_token_given_as_a_variable_name_is_refused_unseen(make_ollama, tmp_path, flag,
                                                            token) -> None:
    srv = make_ollama()
    home = tmp_path / "codex"
    value = token if flag == "--env-key" else f"Authorization={token}"
    run = run_cli("config", "--host", srv.url, "--codex-home", str(home), "--no-validate",
                  flag, value, "m", env=cli_env(HOME=str(tmp_path)))
    assert run.code == 2
    assert "looks like a secret: it was not written or shown" in run.err
    assert token not in run.out + run.err
    assert not home.exists() or not any(token.encode() in p.read_bytes()
                                        for p in home.iterdir() if p.is_file())


def test_variable_names_are_still_accepted(make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = tmp_path / "codex"
    run = run_cli("config", "--host", srv.url, "--codex-home", str(home), "--no-validate",
                  "--env-key", "HF_TOKEN", "--env-header", "X-Api-Key=OLLAMA_API_KEY", "m",
                  env=cli_env(HOME=str(tmp_path)))
    assert run.code == 0, run.err
    text = (home / "config.toml").read_text()
    assert 'env_key = "HF_TOKEN"' in text and "OLLAMA_API_KEY" in text


@pytest.mark.parametrize(("host", "secret"), [
    ("http://admin:S3cret/Pw@127.0.0.1:{port}", "S3cret"),  # a slash in the password
    ("ftp://user:pw0rd@127.0.0.1:{port}", "pw0rd"),  # an unsupported scheme
    ("http://admin:hunter2@127.0.0.1:notaport", "hunter2"),  # an invalid port
])
def test_credentials_in_an_address_are_never_shown(make_ollama, host, secret) -> None:
    srv = make_ollama()
    run = run_cli("check", "--host", host.format(port=srv.port))
    assert secret not in run.out + run.err
    assert "Traceback" not in run.err


@pytest.mark.parametrize("proxy", ["puser:ProxyPw9@127.0.0.1:1",  # no scheme: http, as curl
                                   "http://puser:ProxyPw9@127.0.0.1:badport",
                                   "socks5://puser:ProxyPw9@127.0.0.1:1"])
def test_proxy_passwords_are_never_shown(proxy) -> None:
    # A remote address goes through the proxy, which is on loopback (and closed): no
    # traffic leaves this machine.
    env = cli_env(HTTPS_PROXY=proxy, HTTP_PROXY=proxy)
    run = run_cli("check", "--host", "http://10.255.255.1:11434", env=env)
    assert "ProxyPw9" not in run.out + run.err
    assert "Traceback" not in run.err
    if "badport" in proxy:
        assert run.code == 2 and "invalid port in the proxy address" in run.err
    elif proxy.startswith("socks5"):
        assert run.code == 2 and "needs the Python package socksio" in run.err
    else:
        assert run.code == 3 and "went through the proxy http://***@127.0.0.1:1" in run.err


USER_CONFIG = '''model = "gpt-5"
PRIVATE_KEY = "-----BEGIN PRIVATE KEY----- s3cr3t-key"

[model_providers.corp]
name = "Corp"
base_url = "https://corp.example/v1"
http_headers = { "X-Auth" = "hdr-s3cr3t" }
query_params = { key = "qry-s3cr3t" }

[model_providers.ollama]
name = "Ollama"
base_url = "http://gpu1.lan:11434/v1"
http_headers = { "X-Moved" = "moved-s3cr3t" }
'''
SECRETS = ("s3cr3t-key", "hdr-s3cr3t", "qry-s3cr3t", "moved-s3cr3t")


@pytest.mark.parametrize("how", [["--dry-run"], ["--dry-run", "--json"], ["--json"]])
def test_diffs_and_json_show_only_what_the_tool_writes(make_ollama, tmp_path, how) -> None:
    srv = make_ollama()
    home = tmp_path / "codex"
    home.mkdir()
    (home / "config.toml").write_text(USER_CONFIG)
    run = run_cli("config", "--host", srv.url, "--codex-home", str(home), "--no-validate",
                  *how, "m", env=cli_env(HOME=str(tmp_path)))
    assert run.code == 0, run.err
    shown = run.out + run.err
    assert not [s for s in SECRETS if s in shown]
    if "--dry-run" in how and "--json" not in how:
        # The moved table is shown, its values hidden; what the tool writes is shown.
        assert '+[model_providers.ollama-gpu1-lan]' in shown
        assert 'http_headers = { "X-Moved" = "***" }' in shown
        assert f'+base_url = "{srv.url}/v1"' in shown
    for secret in SECRETS:  # and nothing of the user's was lost
        assert secret in (home / "config.toml").read_text() or "--dry-run" in how


def test_apply_dry_run_json_hides_the_users_values(make_ollama, tmp_path) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    home = tmp_path / "codex"
    home.mkdir()
    (home / "config.toml").write_text(USER_CONFIG)
    manifest = tmp_path / "m.toml"
    manifest.write_text(f'[[models]]\nname = "llama3.2:1b"\n[codex]\ncodex_home = "{home}"\n')
    run = run_cli("apply", "-f", str(manifest), "--host", srv.url, "--dry-run", "--json",
                  "--assume", "ram=64G", env=cli_env(HOME=str(tmp_path), PATH="/usr/bin:/bin",
                                                     OLLAMA_PROVISION_REGISTRY=srv.url))
    assert run.code == 0, run.err
    assert json.loads(run.out)["dry_run"] is True
    assert not [s for s in SECRETS if s in run.out + run.err]


FAKE_OLLAMA = """#!/bin/sh
# `ollama serve` for the test: the Ollama double, on the port OLLAMA_HOST names.
echo "server config env=HTTPS_PROXY:http://u:proxy-s3cret@proxy:3128"
cd {root} && exec {python} -m tests.double --port "${{OLLAMA_HOST##*:}}"
"""


def test_the_log_of_a_started_server_is_private(tmp_path) -> None:
    from tests.double import free_port

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ollama"
    fake.write_text(FAKE_OLLAMA.format(root=ROOT, python=sys.executable))
    fake.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    manifest = tmp_path / "m.toml"
    manifest.write_text("[codex]\nenabled = false\n[verify]\nenabled = false\n")
    port = free_port()
    env = cli_env(HOME=str(tmp_path), PATH=f"{bin_dir}:/usr/bin:/bin",
                  XDG_STATE_HOME=str(state), OLLAMA_MODELS=str(tmp_path / "models"),
                  OLLAMA_PROVISION_REGISTRY=f"http://127.0.0.1:{port}")
    run = run_cli("apply", "-f", str(manifest), "--json", "--start",
                  "--host", f"127.0.0.1:{port}", "--assume", "ram=64G", env=env)
    pid = None
    try:
        doc = json.loads(run.out)
        started = doc["steps"][0]["data"].get("started") or {}
        pid = started.get("pid")
    finally:
        if pid:
            os.kill(pid, 15)
    assert run.code == 0, run.err
    assert started, run.err
    log = state / "ollama-provision" / "ollama-serve.log"
    assert "proxy-s3cret" in log.read_text()  # what Ollama logs: why the log is private
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
