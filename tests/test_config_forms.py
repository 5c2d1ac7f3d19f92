"""`config`: which form is written for which Codex release and which server.

Every run asks the test double (real HTTP on loopback) for its version; the Codex
release is given with --codex-version (tests/test_config_codex.py runs the real ones).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.clients.codex import CodexRelease, choose
from provision.server import ServerFacts, parse_host
from tests.config_support import config_json, home_with, load, run_config

OLD_OLLAMA = "0.12.9"  # no /v1/responses


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("OLLAMA_HOST", "CODEX_HOME", "OLLAMA_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))


def _run(capsys, srv, home: Path, *args: str) -> tuple[int, dict]:
    return config_json(capsys, "--host", srv.url, "--codex-home", str(home), "--no-validate",
                       *args)


def _id(srv) -> str:
    return f"ollama-127-0-0-1-{srv.port}"


def test_newest_codex_gets_a_provider_of_its_own_and_a_profile_file(capsys, make_ollama,
                                                                     tmp_path) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    home = home_with(tmp_path)
    code, doc = _run(capsys, srv, home, "llama3.2:1b")
    assert code == 0
    assert doc["form"] == "custom" and doc["codex"]["source"] == "newest"
    assert load(home / "config.toml") == {"model_providers": {_id(srv): {
        "name": f"Ollama (127.0.0.1:{srv.port})", "base_url": f"{srv.url}/v1",
        "wire_api": "responses"}}}
    assert load(home / "ollama.config.toml") == {"model": "llama3.2:1b",
                                                  "model_provider": _id(srv)}
    assert doc["usage"] == "codex --profile ollama"
    assert doc["warnings"] == []


@pytest.mark.parametrize("release", ["0.130.0", "0.133.0", "0.115.0", "0.59.0"])
def test_before_0_134_the_profile_is_a_table_in_config_toml(capsys, make_ollama, tmp_path,
                                                            release) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    code, doc = _run(capsys, srv, home, "--codex-version", release, "llama3.2:1b")
    assert code == 0 and doc["profile_style"] == "table"
    assert load(home / "config.toml")["profiles"] == {
        "ollama": {"model": "llama3.2:1b", "model_provider": _id(srv)}}
    assert not (home / "ollama.config.toml").exists()


@pytest.mark.parametrize(("server", "wire"), [("0.13.5", "responses"), (OLD_OLLAMA, "chat")])
def test_codex_0_58_reads_the_documented_ollama_table(capsys, make_ollama, tmp_path, server,
                                                      wire) -> None:
    srv = make_ollama(version=server)
    home = home_with(tmp_path)
    code, doc = _run(capsys, srv, home, "--codex-version", "0.58.0", "llama3.2:1b")
    assert code == 0 and doc["form"] == "ollama-table"
    assert load(home / "config.toml") == {
        "model_providers": {"ollama": {"name": "Ollama", "base_url": f"{srv.url}/v1",
                                       "wire_api": wire}},
        "profiles": {"ollama": {"model": "llama3.2:1b", "model_provider": "ollama"}},
    }


def test_old_server_with_a_chat_era_codex_gets_chat(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama(version=OLD_OLLAMA)
    home = home_with(tmp_path)
    code, doc = _run(capsys, srv, home, "--codex-version", "0.94.0", "llama3.2:1b")
    assert code == 0
    assert load(home / "config.toml")["model_providers"][_id(srv)]["wire_api"] == "chat"
    assert any("0.13.4" in w and "chat" in w for w in doc["warnings"])


def test_old_server_with_current_codex_is_not_ready_and_says_why(capsys, make_ollama,
                                                                 tmp_path) -> None:
    srv = make_ollama(version=OLD_OLLAMA)
    home = home_with(tmp_path)
    code, out, err = run_config(capsys, "--host", srv.url, "--codex-home", str(home),
                                "--no-validate", "--codex-version", "0.169.0", "llama3.2:1b")
    assert code == 1
    assert f"Ollama {OLD_OLLAMA}" in err and ">= 0.13.4" in err and "upgrade Ollama" in err
    # Written anyway: it is what this Codex needs once the server is upgraded.
    assert load(home / "config.toml")["model_providers"][_id(srv)]["wire_api"] == "responses"


@pytest.mark.parametrize(("release", "server", "form", "wire", "ready"), [
    ("0.58.0", "0.13.5", "ollama-table", "responses", True),
    ("0.58.0", OLD_OLLAMA, "ollama-table", "chat", True),
    ("0.59.0", "0.13.5", "builtin", None, True),
    ("0.80.0", OLD_OLLAMA, "builtin", None, True),  # the built-in still spoke chat
    ("0.87.0", OLD_OLLAMA, "custom", "chat", True),  # the built-in refuses old servers
    ("0.94.0", OLD_OLLAMA, "custom", "chat", True),
    ("0.95.0", OLD_OLLAMA, "builtin", None, False),  # nothing works: upgrade Ollama
    ("0.169.0", "0.13.5", "builtin", None, True),
    (None, "0.13.5", "builtin", None, True),
])
def test_default_local_address_uses_the_builtin_where_it_works(release, server, form, wire,
                                                              ready) -> None:
    address = parse_host("", source="default")
    choice = choose(CodexRelease.parse(release), ServerFacts(address, server),
                    fmt="codex")
    assert (choice.form, choice.wire_api, choice.ready) == (form, wire, ready)


def test_an_invalid_codex_version_is_an_input_error(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    code, out, err = run_config(capsys, "--host", srv.url, "--codex-home", str(home),
                                "--no-validate", "--codex-version", "banana", "m")
    assert code == 2 and out == ""
    assert "error: --codex-version 'banana' is not a Codex release like 0.169.0" in err
    assert not list(home.iterdir())  # nothing written


def test_releases_compare_numerically(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    # 0.100 > 0.58 numerically (as text it would sort before it).
    code, doc = _run(capsys, srv, home, "--codex-version", "0.100.0", "m")
    assert doc["form"] == "custom" and "ollama" not in load(home / "config.toml")[
        "model_providers"]


def test_output_writes_exactly_the_seed_table(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    target = tmp_path / "ollama.toml"
    code, doc = config_json(capsys, "--host", srv.url, "--output", str(target))
    assert code == 0 and doc["form"] == "seed" and doc["validation"]["status"] == "skipped"
    assert load(target) == {"model_providers": {"ollama": {
        "name": "Ollama", "base_url": f"{srv.url}/v1", "wire_api": "responses"}}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ollama.toml"]  # no lock left


def test_output_with_codex_format_treats_the_file_as_config_toml(capsys, make_ollama,
                                                                 tmp_path) -> None:
    srv = make_ollama()
    target = tmp_path / "elsewhere" / "config.toml"
    code, doc = config_json(capsys, "--host", srv.url, "--output", str(target),
                            "--format", "codex", "m")
    assert code == 0 and doc["form"] == "custom"
    assert _id(srv) in load(target)["model_providers"]
    assert load(target.parent / "ollama.config.toml")["model_provider"] == _id(srv)


def test_seed_format_into_a_current_codex_config_is_refused(capsys, make_ollama,
                                                            tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    code, out, err = run_config(capsys, "--host", srv.url, "--codex-home", str(home),
                                "--format", "seed", "--codex-version", "0.169.0")
    assert code == 2 and "load error since 0.115" in err and "--output" in err
    assert "Traceback" not in err and list(home.iterdir()) == []


def test_provider_id_is_used_and_checked(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    code, doc = _run(capsys, srv, home, "--provider-id", "gpu-box", "m")
    assert code == 0 and "gpu-box" in load(home / "config.toml")["model_providers"]
    code, out, err = run_config(capsys, "--host", srv.url, "--codex-home", str(home),
                                "--provider-id", "ollama", "--no-validate")
    assert code == 2 and "built-in provider" in err
    code, out, err = run_config(capsys, "--host", srv.url, "--codex-home", str(home),
                                "--provider-id", "../x", "--no-validate")
    assert code == 2 and "plain name" in err


def test_profile_name_cannot_escape_codex_home(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    code, out, err = run_config(capsys, "--host", srv.url, "--codex-home", str(home),
                                "--profile", "../../etc/x", "--no-validate")
    assert code == 2 and "plain name" in err and list(home.iterdir()) == []


def test_default_is_a_profile_and_never_the_users_default(capsys, make_ollama,
                                                          tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path, "other_providers.toml")
    code, doc = _run(capsys, srv, home, "m")
    data = load(home / "config.toml")
    assert (data["model"], data["model_provider"]) == ("gpt-5", "openai")


def test_set_default_writes_the_top_level_instead_of_a_profile(capsys, make_ollama,
                                                               tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path, "other_providers.toml")
    code, doc = _run(capsys, srv, home, "--set-default", "llama3.2:1b")
    data = load(home / "config.toml")
    assert (data["model"], data["model_provider"]) == ("llama3.2:1b", _id(srv))
    assert doc["profile"] is None and doc["usage"] == "codex"
    assert not (home / "ollama.config.toml").exists()


def test_without_model_the_profiles_model_is_kept(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    _run(capsys, srv, home, "qwen2.5:14b")
    code, doc = _run(capsys, srv, home)
    assert doc["model"] == "qwen2.5:14b" and doc["files"][1]["status"] == "unchanged"


def test_without_any_model_the_servers_own_is_used_or_asked_for(capsys, make_ollama,
                                                                tmp_path) -> None:
    """No MODEL and no profile naming one: the server's only chat model; with none or
    several, exit 2 saying what to name, nothing written (issue 13: Codex's own default
    `gpt-oss:20b` was written, a model the server did not have)."""
    home = home_with(tmp_path)
    code, out, err = run_config(capsys, "--host", make_ollama().url, "--codex-home",
                                str(home), "--no-validate")
    assert code == 2 and "has no model for Codex yet" in err and list(home.iterdir()) == []
    two = make_ollama(installed=["llama3.2:1b", "qwen2.5:0.5b"])
    code, out, err = run_config(capsys, "--host", two.url, "--codex-home", str(home),
                                "--no-validate")
    assert code == 2 and "llama3.2:1b, qwen2.5:0.5b" in err and list(home.iterdir()) == []
    code, doc = _run(capsys, make_ollama(installed=["llama3.2:1b"]), home)
    assert doc["model"] == "llama3.2:1b" and not doc["warnings"]


def test_a_model_missing_on_the_server_is_pointed_out(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    home = home_with(tmp_path)
    code, doc = _run(capsys, srv, home, "qwen2.5:14b")
    assert code == 0
    assert any("qwen2.5:14b is not on the server" in w for w in doc["warnings"])
    code, doc = _run(capsys, srv, home, "LLAMA3.2:1b")  # Ollama's name rules: same model
    assert not any("not on the server" in w for w in doc["warnings"])


def test_invalid_model_name_is_refused_before_anything(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    code, out, err = run_config(capsys, "--host", srv.url, "--codex-home", str(home),
                                "bad name!")
    assert code == 2 and "invalid model name" in err and srv.requests == []


def test_unreachable_server_still_writes_a_config_and_says_so(capsys, tmp_path) -> None:
    home = home_with(tmp_path)
    code, doc = config_json(capsys, "--host", "127.0.0.1:9", "--codex-home", str(home),
                            "--no-validate", "m")
    assert code == 0 and doc["server"]["reachable"] is False
    assert any("could not ask the server" in w for w in doc["warnings"])
    assert load(home / "config.toml")["model_providers"]["ollama-127-0-0-1-9"][
        "wire_api"] == "responses"


def test_codex_home_from_the_environment(capsys, make_ollama, tmp_path, monkeypatch) -> None:
    srv = make_ollama()
    home = tmp_path / "from-env"
    monkeypatch.setenv("CODEX_HOME", str(home))
    code, doc = config_json(capsys, "--host", srv.url, "--no-validate", "m")
    assert code == 0 and doc["files"][0]["path"] == str(home / "config.toml")


def test_json_document_schema(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    home = home_with(tmp_path)
    code, doc = _run(capsys, srv, home, "llama3.2:1b")
    assert doc["schema"] == "ollama-provision.config/1"
    assert set(doc) == {"schema", "exit_code", "ready", "changed", "dry_run", "form",
                        "provider_id", "wire_api", "base_url", "reason", "profile", "profile_style",
                        "set_default", "model", "usage", "codex", "server", "files",
                        "migrations", "validation", "warnings"}
    assert doc["server"] == {"url": srv.url, "reachable": True, "version": srv.version,
                             "responses_api": True}
    assert [f["status"] for f in doc["files"]] == ["created", "created"]
    assert set(doc["files"][0]) == {"path", "role", "status", "backup", "diff"}
    assert doc["validation"] == {"status": "skipped", "message": "not asked (--no-validate)",
                                 "checks": []}
