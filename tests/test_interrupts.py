"""Stopped runs leave a state that works and resumes: SIGTERM and SIGHUP are Ctrl-C, a run
killed between Codex's two files leaves a config Codex loads, leftovers of a killed run
are cleaned up, a full disk changes nothing. The tool runs as its own process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.config_support import load, need_codex
from tests.double import OllamaTestServer
from tests.tool import ROOT, cli_env, run_cli

SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]


def _stalled_server() -> OllamaTestServer:
    srv = OllamaTestServer().start()
    srv.add_fault("stall", after_bytes=700_000_000)  # holds the pull until the signal
    return srv


def _held(srv: OllamaTestServer) -> Callable[[], bool]:
    """The pull has reached the stall (the signal lands mid-download)."""
    weights = next(x["digest"] for x in srv.manifest("llama3.2:1b")["layers"]
                   if x["mediaType"] == "application/vnd.ollama.image.model")
    return lambda: srv.partial.get(weights) == 700_000_000


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_pull_is_an_interruption_that_resumes(tmp_path, signum) -> None:
    srv = _stalled_server()
    try:
        env = cli_env(HOME=str(tmp_path), OLLAMA_PROVISION_REGISTRY=srv.url,
                      OLLAMA_MODELS=str(tmp_path / "models"))
        run = run_cli("pull", "--json", "--host", srv.url, "llama3.2:1b", env=env,
                      signal_when=(_held(srv), signum), timeout=30)
        assert run.code == 130, run.err
        assert "error: interrupted:" in run.err and "run the same command again" in run.err
        assert "Traceback" not in run.err
        doc = json.loads(run.out)
        assert doc["exit_code"] == 130 and doc["models"][0]["status"] == "interrupted"
        again = run_cli("pull", "--host", srv.url, "llama3.2:1b", env=env, timeout=30)
        assert again.code == 0 and "resumed at 700.0 MB/1.3 GB" in again.err
    finally:
        srv.stop()


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_apply_still_prints_its_document(tmp_path, signum) -> None:
    srv = _stalled_server()
    try:
        manifest = tmp_path / "m.toml"
        manifest.write_text('[[models]]\nname = "llama3.2:1b"\n[codex]\nenabled = false\n')
        env = cli_env(HOME=str(tmp_path), OLLAMA_PROVISION_REGISTRY=srv.url,
                      PATH="/usr/bin:/bin", OLLAMA_MODELS=str(tmp_path / "models"))
        run = run_cli("apply", "-f", str(manifest), "--json", "--host", srv.url, "--assume",
                      "ram=64G", env=env, signal_when=(_held(srv), signum), timeout=30)
    finally:
        srv.stop()
    assert run.code == 130, run.err
    assert "Traceback" not in run.err
    assert "interrupted: run the same command again to resume" in run.err
    doc = json.loads(run.out)
    assert doc["exit_code"] == 130 and doc["ready"] is False
    pull = next(s for s in doc["steps"] if s["name"] == "pull")
    assert pull["status"] == "failed" and "interrupted" in pull["summary"]
    assert doc["models"][0]["pull"] == "interrupted"


# --- Codex's two files ----------------------------------------------------------------------

# Dies (SIGKILL) right after the Nth os.replace: the Nth file write of the run is complete.
_KILL_AFTER_REPLACE = textwrap.dedent("""
    import os, signal, sys
    nth, calls, real = int(sys.argv[1]), [], os.replace

    def replace(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(args)
        if len(calls) == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    from provision.cli import main
    sys.exit(main(["config", *sys.argv[2:]]))
""")


def _codex_loads(codex: Path, home: Path, *profile: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(CODEX_HOME=str(home), HOME=str(home.parent), HTTPS_PROXY="http://127.0.0.1:9",
                  HTTP_PROXY="http://127.0.0.1:9", RUST_BACKTRACE="0")
    return subprocess.run([str(codex), *profile, "mcp", "list"], env=env, cwd=home,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kill_after", [1, 2, 3])
def test_every_state_between_codexs_two_files_loads(make_ollama, tmp_path, kill_after) -> None:
    """The profile file first, carrying the provider table it names; then config.toml with
    that table; then the profile without its copy. Killed after any of the three writes,
    `codex` and `codex --profile ollama` load, with the profile's model and provider
    (a profile naming a table config.toml lacks fails: "Model provider not found"; no
    profile file silently means OpenAI). Checked with the real Codex."""
    codex = need_codex()
    srv = make_ollama()
    home = tmp_path / "codex"
    args = ["--host", srv.url, "--codex-home", str(home), "--no-validate", "llama3.2:1b"]
    killed = subprocess.run([sys.executable, "-c", _KILL_AFTER_REPLACE, str(kill_after), *args],
                            cwd=ROOT, env=cli_env(HOME=str(tmp_path)), capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    written = sorted(p.name for p in home.glob("*.toml"))
    assert written == (["ollama.config.toml"] if kill_after == 1
                       else ["config.toml", "ollama.config.toml"])
    assert _codex_loads(codex, home).returncode == 0
    profile = _codex_loads(codex, home, "--profile", "ollama")
    assert profile.returncode == 0, profile.stderr[-500:]
    provider = load(home / "ollama.config.toml")["model_provider"]
    tables = {**load(home / "ollama.config.toml").get("model_providers", {}),
              **(load(home / "config.toml").get("model_providers", {})
                 if (home / "config.toml").exists() else {})}
    assert tables[provider]["base_url"] == f"{srv.url}/v1"  # the profile's provider exists


def test_leftovers_of_a_killed_run_are_cleaned_by_the_next(make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = tmp_path / "codex"
    args = ("config", "--host", srv.url, "--codex-home", str(home), "--no-validate", "m")
    assert run_cli(*args, env=cli_env(HOME=str(tmp_path))).code == 0
    # What a run killed mid-write leaves: a temporary file and the lock file.
    (home / ".config.toml.x1y2.ollama-provision.tmp").write_text("half")
    (home / ".ollama.config.toml.a9.ollama-provision.tmp").write_text("half")
    (home / "config.toml.lock").write_text("")
    run = run_cli(*args, env=cli_env(HOME=str(tmp_path)))
    assert run.code == 0 and "unchanged" in run.out
    assert sorted(p.name for p in home.iterdir() if ".bak-" not in p.name) == \
        ["config.toml", "ollama.config.toml"]


_DISK_FULL = textwrap.dedent("""
    import errno, os, sys
    real = os.write

    def write(fd, data):
        if len(data) > 20:  # the files' contents (not a pipe's few bytes)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    os.write = write
    from provision.cli import main
    sys.exit(main(["config", *sys.argv[1:]]))
""")


def test_a_full_disk_is_an_environment_failure_and_changes_nothing(make_ollama,
                                                                  tmp_path) -> None:
    srv = make_ollama()
    home = tmp_path / "codex"
    home.mkdir()
    (home / "config.toml").write_text('model = "gpt-5"\n')
    full = subprocess.run([sys.executable, "-c", _DISK_FULL, "--host", srv.url,
                           "--codex-home", str(home), "--no-validate", "m"],
                          cwd=ROOT, env=cli_env(HOME=str(tmp_path)), capture_output=True,
                          text=True, timeout=60)
    assert full.returncode == 1, full.stderr
    assert f"the disk is full in {home} (needs " in full.stderr and "free)" in full.stderr
    assert "Traceback" not in full.stderr
    assert sorted(p.name for p in home.iterdir()) == ["config.toml"]
    assert (home / "config.toml").read_text() == 'model = "gpt-5"\n'
