"""End to end with the real consumer: pinned Codex releases from npm (.ci/install-codex).

(1) Every config the tool writes loads in that release (`codex doctor --json`, or
`codex mcp list` before doctor existed), and (2) `codex exec` sends its first model
request to the test server, at the configured host and path; Codex is stopped right
after it. Codex gets a throwaway CODEX_HOME, no credentials, and no network beyond
loopback. Skipped without the binaries; OLLAMA_PROVISION_REQUIRE_CODEX=1 (CI) makes
that a failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.config_support import (
    CORPUS,
    config_json,
    home_with,
    load,
    need_codex,
)
from tests.double import OllamaTestServer, RecordedRequest

FIRST_REQUEST_WITHIN_S = 25.0  # a bound on waiting, not a timing assertion
MODEL = "llama3.2:1b"
_RANK = {"ok": 0, "warning": 1, "fail": 2}
VALID = sorted(p.name for p in CORPUS.glob("*.toml") if p.name != "invalid.toml")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("OLLAMA_HOST", "CODEX_HOME", "OPENAI_API_KEY", "CODEX_OSS_BASE_URL",
                "CODEX_OSS_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))


def _on_path(monkeypatch: pytest.MonkeyPatch, codex: Path) -> None:
    """The tool finds (and validates with) this codex, as a user's PATH would give it."""
    monkeypatch.setenv("PATH", f"{codex.parent}{os.pathsep}{os.environ['PATH']}")


def _codex_env(home: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "OPENAI_API_KEY")}
    env.update(CODEX_HOME=str(home), HOME=str(tmp_path / "user"), NO_PROXY="*",
               RUST_LOG="error", NO_COLOR="1", **extra)
    return env


def _doctor(codex: Path, home: Path, tmp_path: Path) -> dict:
    done = subprocess.run([str(codex), "doctor", "--json"], env=_codex_env(home, tmp_path),
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    return json.loads(done.stdout[done.stdout.index("{"):])["checks"]["config.load"]


def _first_request(codex: Path, home: Path, srv: OllamaTestServer, tmp_path: Path,
                   *args: str, **env: str) -> RecordedRequest:
    """Run `codex exec ARGS "hi"` until its first model request reaches `srv`, then stop it."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    log = tmp_path / "codex-exec.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(codex), "exec", "--skip-git-repo-check", "-c",
             "check_for_update_on_startup=false", *args, "hi"],
            cwd=work, env=_codex_env(home, tmp_path, **env), stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + FIRST_REQUEST_WITHIN_S
        try:
            while time.monotonic() < deadline:
                posts = [r for r in srv.requests if r.method == "POST"]
                if posts:
                    return posts[0]
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    pytest.fail(f"codex sent no model request to {srv.url}; it said:\n"
                + log.read_text(errors="replace")[-3000:])


def _configure(capsys, srv: OllamaTestServer, home: Path, *args: str) -> dict:
    code, doc = config_json(capsys, "--host", srv.url, "--codex-home", str(home), *args)
    assert doc["validation"]["status"] == "ok", doc["validation"]
    return doc


# --- the current release ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["profile", "set-default"])
@pytest.mark.parametrize("name", VALID)
def test_current_codex_loads_every_config_written(capsys, make_ollama, tmp_path, monkeypatch,
                                                  name, mode) -> None:
    codex = need_codex()
    _on_path(monkeypatch, codex)
    srv = make_ollama(installed=[MODEL])
    home = home_with(tmp_path, name)
    before = _doctor(codex, home, tmp_path)["status"]
    extra = ("--set-default",) if mode == "set-default" else ()
    doc = _configure(capsys, srv, home, *extra, MODEL)
    assert doc["codex"]["source"] == "detected"
    # Loaded, and never a worse verdict than before ("warning": the user's own unknown or
    # deprecated keys, e.g. profiles.toml's `profile_note` and legacy [profiles.*]).
    after = _doctor(codex, home, tmp_path)["status"]
    assert after in ("ok", "warning") and _RANK[after] <= _RANK[before]


def test_current_codex_profile_sends_its_first_request_to_the_server(
        capsys, make_ollama, tmp_path, monkeypatch) -> None:
    codex = need_codex()
    _on_path(monkeypatch, codex)
    srv = make_ollama(installed=[MODEL])
    home = home_with(tmp_path, "other_providers.toml")
    doc = _configure(capsys, srv, home, MODEL)
    assert doc["usage"] == "codex --profile ollama"
    request = _first_request(codex, home, srv, tmp_path, "--profile", "ollama")
    assert (request.method, request.path) == ("POST", "/v1/responses")
    assert request.json["model"] == MODEL


def test_current_codex_default_goes_to_the_server_with_set_default(
        capsys, make_ollama, tmp_path, monkeypatch) -> None:
    codex = need_codex()
    _on_path(monkeypatch, codex)
    srv = make_ollama(installed=[MODEL])
    home = home_with(tmp_path, "comments_everywhere.toml")
    _configure(capsys, srv, home, "--set-default", MODEL)
    request = _first_request(codex, home, srv, tmp_path)
    assert (request.path, request.json["model"]) == ("/v1/responses", MODEL)


@pytest.mark.parametrize("name", ["old_ollama_provider.toml", "profiles.toml"])
def test_old_setups_codex_refuses_are_migrated_and_then_work(capsys, make_ollama, tmp_path,
                                                             monkeypatch, name) -> None:
    codex = need_codex()
    _on_path(monkeypatch, codex)
    srv = make_ollama(installed=[MODEL])
    home = home_with(tmp_path, name)
    if name == "old_ollama_provider.toml":
        assert _doctor(codex, home, tmp_path)["status"] == "fail"  # the reserved `ollama` id
    doc = _configure(capsys, srv, home, MODEL)
    assert doc["migrations"]
    assert _doctor(codex, home, tmp_path)["status"] in ("ok", "warning")
    request = _first_request(codex, home, srv, tmp_path, "--profile", "ollama")
    assert (request.path, request.json["model"]) == ("/v1/responses", MODEL)


def test_current_codex_sends_the_key_from_the_named_variable(capsys, make_ollama, tmp_path,
                                                             monkeypatch) -> None:
    codex = need_codex()
    _on_path(monkeypatch, codex)
    srv = make_ollama(installed=[MODEL])
    home = home_with(tmp_path)
    _configure(capsys, srv, home, "--env-key", "OLLAMA_TEST_KEY", "--env-header",
               "X-Team=OLLAMA_TEST_TEAM", MODEL)
    request = _first_request(codex, home, srv, tmp_path, "--profile", "ollama",
                             OLLAMA_TEST_KEY="key-from-env-123", OLLAMA_TEST_TEAM="blue")
    assert request.headers["authorization"] == "Bearer key-from-env-123"
    assert request.headers["x-team"] == "blue"
    assert b"key-from-env-123" not in b"".join(p.read_bytes() for p in home.glob("*.toml"))


def test_current_codex_on_an_old_server_is_not_ready(capsys, make_ollama, tmp_path,
                                                     monkeypatch) -> None:
    codex = need_codex()
    _on_path(monkeypatch, codex)
    srv = make_ollama(version="0.12.9")
    home = home_with(tmp_path)
    code, doc = config_json(capsys, "--host", srv.url, "--codex-home", str(home), MODEL)
    assert code == 1 and any(">= 0.13.4" in w for w in doc["warnings"])
    assert doc["validation"]["status"] == "ok"  # the config loads; the server is too old


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_current_codex_builtin_provider_for_the_default_address(capsys, tmp_path,
                                                                monkeypatch) -> None:
    codex = need_codex()
    _on_path(monkeypatch, codex)
    if not _port_free(11434):
        pytest.skip("port 11434 is in use here (a real Ollama?): the built-in needs it")
    with OllamaTestServer(installed=[MODEL], port=11434) as srv:
        home = home_with(tmp_path)
        doc = _configure(capsys, srv, home, MODEL)
        assert doc["form"] == "builtin"
        # only the profile file: no empty config.toml (issue 13), and Codex runs with it
        assert not (home / "config.toml").exists()
        assert [f["path"] for f in doc["files"] if f["status"] == "created"] == [
            str(home / "ollama.config.toml")]
        request = _first_request(codex, home, srv, tmp_path, "--profile", "ollama")
        assert (request.path, request.json["model"]) == ("/v1/responses", MODEL)


# --- older releases --------------------------------------------------------------------------


@pytest.mark.parametrize(("server", "path"), [("0.13.5", "/v1/responses"),
                                              ("0.12.9", "/v1/chat/completions")])
def test_codex_0_58_honours_the_ollama_table(capsys, make_ollama, tmp_path, monkeypatch,
                                             server, path) -> None:
    codex = need_codex("0.58.0")
    _on_path(monkeypatch, codex)
    srv = make_ollama(version=server, installed=[MODEL])
    home = home_with(tmp_path, "comments_everywhere.toml")
    doc = _configure(capsys, srv, home, MODEL)
    assert (doc["codex"]["version"], doc["form"]) == ("0.58.0", "ollama-table")
    assert doc["validation"]["checks"][0]["check"] == "codex mcp list"
    request = _first_request(codex, home, srv, tmp_path, "--profile", "ollama")
    assert (request.path, request.json["model"]) == (path, MODEL)


def test_codex_0_58_reads_the_seed_file(capsys, make_ollama, tmp_path, monkeypatch) -> None:
    codex = need_codex("0.58.0")
    srv = make_ollama(installed=[MODEL])
    seed = tmp_path / "seed.toml"
    code, doc = config_json(capsys, "--host", srv.url, "--output", str(seed))
    assert code == 0 and doc["form"] == "seed"
    home = home_with(tmp_path)
    (home / "config.toml").write_bytes(seed.read_bytes())
    request = _first_request(codex, home, srv, tmp_path, "-c", 'model_provider="ollama"',
                             "-m", MODEL)
    assert (request.path, request.json["model"]) == ("/v1/responses", MODEL)


def test_codex_0_58_keeps_a_users_ollama_table_for_another_server(
        capsys, make_ollama, tmp_path, monkeypatch) -> None:
    codex = need_codex("0.58.0")
    _on_path(monkeypatch, codex)
    srv = make_ollama(installed=[MODEL])
    home = home_with(tmp_path, "old_ollama_provider.toml")
    doc = _configure(capsys, srv, home, MODEL)
    assert doc["form"] == "custom"
    assert load(home / "config.toml")["model_providers"]["ollama"]["base_url"] == (
        "http://gpu1.lan:11434/v1")
    request = _first_request(codex, home, srv, tmp_path, "--profile", "ollama")
    assert (request.path, request.json["model"]) == ("/v1/responses", MODEL)


@pytest.mark.parametrize(("server", "path"), [("0.13.5", "/v1/responses"),
                                              ("0.12.9", "/v1/chat/completions")])
def test_codex_0_94_uses_a_custom_id_with_chat_for_old_servers(capsys, make_ollama, tmp_path,
                                                               monkeypatch, server,
                                                               path) -> None:
    codex = need_codex("0.94.0")
    _on_path(monkeypatch, codex)
    srv = make_ollama(version=server, installed=[MODEL])
    home = home_with(tmp_path, "old_ollama_provider.toml")
    doc = _configure(capsys, srv, home, MODEL)
    assert (doc["codex"]["version"], doc["form"]) == ("0.94.0", "custom")
    request = _first_request(codex, home, srv, tmp_path, "--profile", "ollama")
    assert (request.path, request.json["model"]) == (path, MODEL)
    # The migrated old table (silently ignored by 0.94) still loads with its own keys.
    assert load(home / "config.toml")["model_providers"]["ollama-gpu1-lan"][
        "request_max_retries"] == 4

