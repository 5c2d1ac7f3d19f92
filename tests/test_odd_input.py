"""Odd input is one line and its documented exit code, never a traceback; and the verdicts
that were wrong. The tool runs as its own process (`run_cli`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.double.hostile import answer
from tests.tool import Run, cli_env, run_cli

DIGITS = "9" * 30_000


def one_line(run: Run, code: int, text: str) -> None:
    assert run.code == code, run.err
    assert "Traceback" not in run.err
    errors = [line for line in run.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and text in errors[0], run.err
    assert len(errors[0]) < 300


@pytest.mark.parametrize(("spec", "text"), [
    (f"ram=16G,ollama={DIGITS}", "is not a version like 0.13.5"),
    (f"ollama={DIGITS}", "is not a version like 0.13.5"),
    (f"ram={DIGITS}G", "is not a RAM like 16G"),
    ("ram=16G,gpu=99999999x24G", "a GPU count of 99999999 is not 1 to 64"),
    ("ram=16G,gpu=24G:1.2.3GB/s", "is not a number"),
    (f"ram=16G,cpu={DIGITS[:400]}", "is out of range"),
])
def test_huge_or_odd_assume_values(spec, text) -> None:
    one_line(run_cli("hardware", "--assume", spec, "llama3.2:1b"), 2, text)


def test_a_fleet_timeout_of_thousands_of_digits(tmp_path) -> None:
    inventory = tmp_path / "fleet.toml"
    inventory.write_text(f"[fleet]\nhost_timeout = {'9' * 4000}\n[[hosts]]\n"
                         'url = "http://127.0.0.1:9"\n[groups.all]\n'
                         '[[groups.all.models]]\nname = "llama3.2:1b"\n')
    one_line(run_cli("fleet", "-i", str(inventory)), 2,
             "fleet.host_timeout: expected seconds for the host's whole run")


@pytest.mark.parametrize("flag", [["check", "--wait", "1e300"], ["pull", "--retries", DIGITS],
                                  ["hardware", "--num-ctx", DIGITS]])
def test_huge_numbers_in_flags(flag) -> None:
    run = run_cli(*flag, "llama3.2:1b")
    assert run.code == 2 and "Traceback" not in run.err
    assert len(run.err) < 1000


def test_a_host_label_longer_than_dns_allows() -> None:
    label = "a" * 64
    one_line(run_cli("check", "--host", f"http://{label}.example:11434"), 2,
             "a part between dots is longer than 63 characters")


def test_a_registry_host_label_longer_than_dns_allows(make_ollama, tmp_path) -> None:
    # Nothing is sent: the name cannot be encoded for DNS (IDNA), which says so.
    name = f"{'r' * 64}.example/library/m:1b"
    run = run_cli("pull", "--dry-run", "--host", make_ollama().url, name)
    one_line(run, 1, "invalid host name")
    run = run_cli("hardware", "--assume", "ram=16G", name, env=cli_env(HOME=str(tmp_path)))
    assert "Traceback" not in run.err and "rough (registry unreachable)" in run.out


def test_an_invalid_codex_version_is_an_input_error_for_apply(make_ollama, tmp_path) -> None:
    srv = make_ollama()
    run = run_cli("apply", "--host", srv.url, "--codex-version", "banana",
                  env=cli_env(HOME=str(tmp_path)))
    one_line(run, 2, "--codex-version 'banana' is not a Codex release like 0.169.0")
    assert "==> check" not in run.err  # refused before any step


@pytest.mark.parametrize(("models", "text"), [
    ('[[models]]\nname = "reviewer"\nfrom = "reviewer:latest"\n',
     "the custom model 'reviewer' is built from itself"),
    ('[[models]]\nname = "a"\nfrom = "b"\n[[models]]\nname = "b"\nfrom = "a"\n',
     "custom models built from each other in a circle: a -> b -> a"),
])
def test_custom_model_cycles_are_named(tmp_path, models, text) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_text(models)
    one_line(run_cli("apply", "-f", str(manifest), "--host", "http://127.0.0.1:9"), 2, text)


def test_codex_pointed_at_a_model_nobody_has_is_not_ready(make_ollama, tmp_path) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    manifest = tmp_path / "m.toml"
    manifest.write_text('[[models]]\nname = "llama3.2:1b"\n'
                        f'[codex]\nmodel = "nothere:1b"\ncodex_home = "{tmp_path / "codex"}"\n'
                        "[verify]\nenabled = false\n")
    run = run_cli("apply", "-f", str(manifest), "--host", srv.url, "--assume", "ram=64G",
                  env=cli_env(HOME=str(tmp_path), PATH="/usr/bin:/bin",
                              OLLAMA_PROVISION_REGISTRY=srv.url))
    assert run.code == 1, run.err
    assert '[codex] model = "nothere:1b" is neither declared in [[models]] nor on the server' \
        in run.err
    assert not (tmp_path / "codex").exists()  # Codex is not pointed at it


def test_config_says_when_the_version_is_unknown(make_ollama, make_hostile, tmp_path) -> None:
    srv = make_hostile(make_ollama().url).on("/api/version", answer(500, "oops", "text/plain"))
    run = run_cli("config", "--host", srv.url, "--codex-home", str(tmp_path / "codex"),
                  "--no-validate", "m", env=cli_env(HOME=str(tmp_path)))
    assert run.code == 0, run.err
    assert "Ollama (version unknown)" in run.err and "None" not in run.err


def test_a_config_with_a_bom_is_accepted_and_keeps_it(make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = tmp_path / "codex"
    home.mkdir()
    original = b'\xef\xbb\xbfmodel = "gpt-5"\n'
    (home / "config.toml").write_bytes(original)
    run = run_cli("config", "--host", srv.url, "--codex-home", str(home), "--no-validate",
                  "--provider-id", "ollama-x", "m", env=cli_env(HOME=str(tmp_path)))
    assert run.code == 0, run.err
    written = (home / "config.toml").read_bytes()
    assert written.startswith(original) and b"[model_providers.ollama-x]" in written
    assert written.count(b"\xef\xbb\xbf") == 1


def test_hardware_reads_a_plain_http_registry_with_insecure(make_ollama, tmp_path) -> None:
    registry = make_ollama()
    name = f"127.0.0.1:{registry.port}/library/llama3.2:1b"
    env = cli_env(HOME=str(tmp_path))
    run = run_cli("hardware", "--json", "--insecure", "--assume", "ram=16G", name, env=env)
    assert run.code == 0, run.err
    assert json.loads(run.out)["models"][0]["source"] == "registry"


def test_a_host_name_cannot_forge_a_line(make_ollama, tmp_path) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    inventory = tmp_path / "fleet.toml"
    inventory.write_text('[[hosts]]\nname = "h1\\nFAKE: ready"\n'
                         f'url = "{srv.url}"\n[groups.all]\n'
                         '[[groups.all.models]]\nname = "llama3.2:1b"\n')
    run = run_cli("fleet", "-i", str(inventory), "--no-verify",
                  env=cli_env(HOME=str(tmp_path), OLLAMA_PROVISION_REGISTRY=srv.url))
    lines = (run.out + run.err).splitlines()
    assert not [line for line in lines if line.startswith("FAKE")]
    assert any("h1\\nFAKE: ready" in line for line in lines)


def test_manifest_paths_stay_one_line(tmp_path: Path) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_text("[server]\nwait = 1e999\n")
    one_line(run_cli("apply", "-f", str(manifest)), 2, "server.wait: expected seconds")
