"""`config` edits someone's file: idempotent, atomic, locked, backed up, never half-done."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.config_support import ROOT, config_json, corpus_text, home_with, load, run_config

NEW_ID = "ollama-127-0-0-1-{port}"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("OLLAMA_HOST", "CODEX_HOME", "OLLAMA_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))


def _args(srv, home: Path, *more: str) -> list[str]:
    return ["--host", srv.url, "--codex-home", str(home), "--no-validate", *more]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


# --- idempotent, dry run ------------------------------------------------------------------


def test_second_identical_run_writes_nothing(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path, "comments_everywhere.toml")
    code, first = config_json(capsys, *_args(srv, home, "llama3.2:1b"))
    assert code == 0 and [f["status"] for f in first["files"]] == ["changed", "created"]
    before = _snapshot(home)
    code, out, err = run_config(capsys, *_args(srv, home, "llama3.2:1b"))
    assert code == 0
    assert f"unchanged: {home / 'config.toml'}" in out
    assert f"unchanged: {home / 'ollama.config.toml'}" in out
    assert _snapshot(home) == before  # same bytes, same mtimes, no new backup


def test_dry_run_prints_the_diff_and_touches_nothing(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path, "old_ollama_provider.toml")
    before = _snapshot(home)
    code, out, err = run_config(capsys, *_args(srv, home, "--dry-run", "llama3.2:1b"))
    assert code == 0
    assert "-[model_providers.ollama]\n+[model_providers.ollama-gpu1-lan]" in out
    assert f'+base_url = "{srv.url}/v1"' in out
    assert "+++ " + str(home / "ollama.config.toml") + " (after)" in out
    assert _snapshot(home) == before


def test_dry_run_creates_no_directory(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = tmp_path / "not-yet"
    code, doc = config_json(capsys, *_args(srv, home, "--dry-run", "m"))
    assert code == 0 and [f["status"] for f in doc["files"]] == ["would-create"] * 2
    assert doc["changed"] is False and not home.exists()


# --- modes, symlinks, read-only, invalid ---------------------------------------------------


def test_new_directory_0700_and_new_files_0600(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = tmp_path / "deep" / "codex"
    code, _ = config_json(capsys, *_args(srv, home, "m"))
    assert code == 0
    for folder in (home, home.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("config.toml", "ollama.config.toml"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in home.iterdir()) == ["config.toml", "ollama.config.toml"]


def test_existing_mode_is_kept_and_backup_is_private(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path, "other_providers.toml")
    (home / "config.toml").chmod(0o640)
    code, doc = config_json(capsys, *_args(srv, home, "m"))
    assert stat.S_IMODE((home / "config.toml").stat().st_mode) == 0o640
    backup = Path(doc["files"][0]["backup"])
    assert backup.parent == home and backup.name.startswith("config.toml.bak-")
    assert backup.read_bytes() == corpus_text("other_providers.toml")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600


def test_symlinked_config_is_followed_and_stays_a_link(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "codex.toml"
    real.write_bytes(corpus_text("comments_everywhere.toml"))
    home = home_with(tmp_path)
    (home / "config.toml").symlink_to(real)
    code, doc = config_json(capsys, *_args(srv, home, "m"))
    assert code == 0 and (home / "config.toml").is_symlink()
    assert (home / "config.toml").resolve() == real.resolve()
    assert NEW_ID.format(port=srv.port) in load(real)["model_providers"]
    assert real.read_bytes().startswith(corpus_text("comments_everywhere.toml"))
    assert Path(doc["files"][0]["backup"]).parent == home  # beside the link, not in dotfiles
    assert sorted(p.name for p in dotfiles.iterdir()) == ["codex.toml"]


def test_read_only_config_is_refused_and_untouched(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path, "profiles.toml")
    (home / "config.toml").chmod(0o444)
    before = _snapshot(home)
    code, out, err = run_config(capsys, *_args(srv, home, "m"))
    assert code == 2
    assert err.startswith(f"error: {home / 'config.toml'} is read-only: not changing it\n")
    assert "Traceback" not in err and _snapshot(home) == before


def test_invalid_config_stops_with_line_and_column(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path, "invalid.toml")
    before = _snapshot(home)
    code, out, err = run_config(capsys, *_args(srv, home, "m"))
    assert code == 2 and out == ""
    first = err.splitlines()[0]
    assert first == (f"error: {home / 'config.toml'}: invalid TOML at line 5, column 29: "
                     "Illegal character '\\n'; nothing was changed")
    assert "Traceback" not in err and _snapshot(home) == before


def test_non_utf8_config_is_refused(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    (home / "config.toml").write_bytes(b'model = "caf\xe9"\n')
    code, out, err = run_config(capsys, *_args(srv, home, "m"))
    assert code == 2 and "not UTF-8" in err


# --- secrets -------------------------------------------------------------------------------


def test_env_key_and_headers_name_variables(capsys, make_ollama, tmp_path,
                                            monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-live-do-not-write")
    srv = make_ollama()
    home = home_with(tmp_path)
    code, doc = config_json(capsys, *_args(srv, home, "--env-key", "OLLAMA_API_KEY",
                                           "--env-header", "X-Team=TEAM_ID", "m"))
    table = load(home / "config.toml")["model_providers"][NEW_ID.format(port=srv.port)]
    assert table["env_key"] == "OLLAMA_API_KEY"
    assert table["env_http_headers"] == {"X-Team": "TEAM_ID"}
    assert any("TEAM_ID is not set" in w for w in doc["warnings"])
    assert b"sk-live" not in b"".join(p.read_bytes() for p in home.iterdir())


@pytest.mark.parametrize("args", [
    ("--env-key", "sk-proj-abcdefghijklmnop0123456789"),
    ("--env-key", "ab12cd34ef56ab12cd34ef56ab12cd34"),
    ("--env-header", "Authorization=Bearer sk-abcdef"),
])
def test_a_secret_given_inline_is_refused_and_never_shown(capsys, make_ollama, tmp_path,
                                                          args) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    code, out, err = run_config(capsys, *_args(srv, home, *args))
    assert code == 2 and "NAME of an environment variable" in err
    secret = args[1].split("=", 1)[-1].split()[-1]
    assert secret not in out + err and list(home.iterdir()) == []


def test_credentials_in_the_server_address_are_never_written_or_shown(capsys, make_ollama,
                                                                      tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    host = srv.url.replace("http://", "http://bob:hunter2@")
    code, out, err = run_config(capsys, "--host", host, "--codex-home", str(home),
                                "--no-validate", "--json", "m")
    assert code == 0 and "hunter2" not in out + err
    assert "left out of the config" in err
    assert b"hunter2" not in (home / "config.toml").read_bytes()
    assert json.loads(out)["base_url"] == f"{srv.url}/v1"


def test_existing_secrets_in_the_file_are_kept_but_not_shown(capsys, make_ollama,
                                                             tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    old = (f'[model_providers.{NEW_ID.format(port=srv.port)}]\nname = "mine"\n'
           'http_headers = { Authorization = "Bearer sk-or-v1-secret" }\n')
    (home / "config.toml").write_text(old)
    code, out, err = run_config(capsys, *_args(srv, home, "--dry-run", "m"))
    assert "sk-or-v1-secret" not in out + err and 'Authorization = "***"' in out
    run_config(capsys, *_args(srv, home, "m"))
    assert 'Authorization = "Bearer sk-or-v1-secret"' in (home / "config.toml").read_text()


# --- backups ------------------------------------------------------------------------------


def test_backups_keep_the_newest_five(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path)
    models = [f"model{i}" for i in range(8)]
    for model in models:
        code, _ = config_json(capsys, *_args(srv, home, model))
        assert code == 0
    backups = sorted(home.glob("ollama.config.toml.bak-*"))
    assert len(backups) == 5
    held = {load(p)["model"] for p in backups}
    assert held == set(models[2:7])  # the last 5 previous versions


# --- concurrency and kills -----------------------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "provision", "config", *args]


def test_concurrent_runs_never_lose_an_edit(make_ollama, tmp_path) -> None:
    servers = [make_ollama() for _ in range(6)]
    home = home_with(tmp_path, "comments_everywhere.toml")
    env = {**os.environ, "HOME": str(tmp_path / "user")}
    env.pop("OLLAMA_HOST", None)
    runs = [subprocess.Popen(_cli(*_args(srv, home, "--profile", f"p{i}", f"m{i}")),
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
            for i, srv in enumerate(servers)]
    for run in runs:
        assert run.wait(timeout=60) == 0, run.stderr.read() if run.stderr else ""
        if run.stderr:
            run.stderr.close()
    providers = load(home / "config.toml")["model_providers"]
    assert set(providers) == {NEW_ID.format(port=srv.port) for srv in servers}
    for i, srv in enumerate(servers):
        assert load(home / f"p{i}.config.toml") == {
            "model": f"m{i}", "model_provider": NEW_ID.format(port=srv.port)}
    assert not list(home.glob("*.lock")) and not list(home.glob(".*tmp"))


_KILLER = textwrap.dedent("""
    import os, signal, sys
    fn, nth, after = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "after"
    real = getattr(os, fn)
    calls = 0

    def hooked(*args):
        global calls
        calls += 1
        if calls == nth:
            if fn == "write":  # half the bytes reach the disk, then the process dies
                data = bytes(args[1])
                real(args[0], data[: max(1, len(data) // 2)])
            elif after:
                real(*args)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args)

    setattr(os, fn, hooked)
    from provision.cli import main
    sys.exit(main(["config", *sys.argv[4:]]))
""")


@pytest.mark.parametrize(("fn", "nth", "when"), [
    (fn, nth, when) for fn in ("write", "fsync", "replace") for nth in (1, 2, 3)
    for when in (("before", "after") if fn != "write" else ("before",))
])
def test_kill_at_any_step_leaves_the_old_or_the_new_file(make_ollama, tmp_path, fn, nth,
                                                         when) -> None:
    srv = make_ollama()
    old = corpus_text("old_ollama_provider.toml")
    reference = home_with(tmp_path, "old_ollama_provider.toml", name="reference")
    env = {**os.environ, "HOME": str(tmp_path / "user")}
    env.pop("OLLAMA_HOST", None)
    args = _args(srv, reference, "llama3.2:1b")
    subprocess.run(_cli(*args), cwd=ROOT, env=env, check=True, capture_output=True)
    new = (reference / "config.toml").read_bytes()
    new_profile = (reference / "ollama.config.toml").read_bytes()

    home = home_with(tmp_path, "old_ollama_provider.toml")
    killed = subprocess.run([sys.executable, "-c", _KILLER, fn, str(nth), when,
                             *_args(srv, home, "llama3.2:1b")],
                            cwd=ROOT, env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert (home / "config.toml").read_bytes() in (old, new)
    profile = home / "ollama.config.toml"
    # Absent, final, or the first of its two writes: the final content plus a copy of the
    # provider table it names (which config.toml may not have yet).
    if profile.exists() and profile.read_bytes() != new_profile:
        staged = load(profile)
        copy = staged.pop("model_providers")
        assert staged == load(reference / "ollama.config.toml")
        assert copy == {k: v for k, v in load(reference / "config.toml")["model_providers"]
                        .items() if k in copy}
    # The next run finishes the job and clears what the killed one left behind.
    subprocess.run(_cli(*_args(srv, home, "llama3.2:1b")), cwd=ROOT, env=env, check=True,
                   capture_output=True)
    assert (home / "config.toml").read_bytes() == new and profile.read_bytes() == new_profile
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp") or
                p.name.endswith(".lock")]


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from provision import safe_file
    path = Path(sys.argv[1])
    contents = [Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]).read_bytes()]
    n = 0
    while True:
        safe_file.write_atomic(safe_file.read_state(path), contents[n % 2])
        n += 1
        print(n, flush=True)
""")


def test_killing_a_writer_at_random_moments_never_breaks_the_file(tmp_path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_bytes(corpus_text("comments_everywhere.toml") * 40)
    b.write_bytes(corpus_text("other_providers.toml") * 40)
    target = tmp_path / "config.toml"
    target.write_bytes(a.read_bytes())
    rng = random.Random(4)
    for _ in range(12):
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), str(a), str(b)],
                                  cwd=ROOT, stdout=subprocess.PIPE)
        assert writer.stdout is not None
        for _ in range(rng.randint(1, 30)):
            writer.stdout.readline()
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        assert target.read_bytes() in (a.read_bytes(), b.read_bytes())


# --- asking Codex, and putting things back --------------------------------------------------


def _fake_codex(tmp_path: Path, *, refuse: str) -> str:
    """A stand-in `codex` 0.169.0 whose doctor refuses configs containing `refuse`."""
    folder = tmp_path / "fakebin"
    folder.mkdir()
    exe = folder / "codex"
    fail = json.dumps({"checks": {"config.load": {
        "status": "fail", "summary": "config could not be loaded",
        "details": {"error": "fake codex: this config is refused"}}}})
    ok = json.dumps({"checks": {"config.load": {"status": "ok", "summary": "config loaded"}}})
    exe.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$1" in
          --version) echo "codex-cli 0.169.0" ;;
          doctor) if grep -q '{refuse}' "$CODEX_HOME/config.toml" 2>/dev/null; then
                    echo '{fail}'; else echo '{ok}'; fi ;;
          *) exit 0 ;;
        esac
        """))
    exe.chmod(0o755)
    return str(folder)


def test_a_config_codex_refuses_is_rolled_back(capsys, make_ollama, tmp_path,
                                               monkeypatch) -> None:
    srv = make_ollama()
    monkeypatch.setenv("PATH", _fake_codex(tmp_path, refuse="ollama-127") + os.pathsep
                       + os.environ["PATH"])
    home = home_with(tmp_path, "other_providers.toml")
    code, out, err = run_config(capsys, "--host", srv.url, "--codex-home", str(home), "m")
    assert code == 1
    assert "Codex does not load the config" in err and "fake codex" in err
    assert (home / "config.toml").read_bytes() == corpus_text("other_providers.toml")
    assert not (home / "ollama.config.toml").exists()


def test_a_config_that_was_already_broken_is_reported_not_rolled_back(
        capsys, make_ollama, tmp_path, monkeypatch) -> None:
    srv = make_ollama()
    monkeypatch.setenv("PATH", _fake_codex(tmp_path, refuse="azure") + os.pathsep
                       + os.environ["PATH"])
    home = home_with(tmp_path, "other_providers.toml")
    code, doc = config_json(capsys, "--host", srv.url, "--codex-home", str(home), "m")
    assert code == 1 and doc["validation"]["status"] == "fail"
    assert "did not load before this change either" in doc["validation"]["message"]
    assert NEW_ID.format(port=srv.port) in load(home / "config.toml")["model_providers"]


def test_codex_validation_is_reported(capsys, make_ollama, tmp_path, monkeypatch) -> None:
    srv = make_ollama()
    monkeypatch.setenv("PATH", _fake_codex(tmp_path, refuse="nothing-refused")
                       + os.pathsep + os.environ["PATH"])
    home = home_with(tmp_path)
    code, doc = config_json(capsys, "--host", srv.url, "--codex-home", str(home), "m")
    assert code == 0 and doc["codex"]["source"] == "detected"
    assert doc["codex"]["version"] == "0.169.0"
    assert doc["validation"]["status"] == "ok"
    assert [c["check"] for c in doc["validation"]["checks"]] == [
        "codex doctor --json", "codex --profile ollama mcp list"]
