"""`apply` as a new user sees it (issue 13): on a terminal of 80x24 and 120x40, and in a
CI log, against the test double.

Each test states one thing a user notices, grouped by the item of issue 13 it holds.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.double import Fault, OllamaTestServer, free_port
from tests.screen import (
    PREEMPTED_PRINTS,
    SIZES,
    PlainRun,
    ScreenRun,
    assert_fits,
    assert_log_kept,
    assert_marked_lines_kept,
    assert_moves,
    assert_no_escapes,
    assert_start_and_end,
    run_in_terminal,
    run_plain,
)
from tests.ux_support import (
    SIZE_IDS,
    SLOW_CPU,
    SMALL,
    add_coders,
    home_fixture,  # noqa: F401 (the `home` fixture)
    homes_fixture,  # noqa: F401 (the `homes` fixture)
    installed_here,
    manifest,
    stopped_ollama,
    user_env,
)

CPU = "ram=16G,gpu=none"
STEP_END = re.compile(r"^    (ok|changed|failed|skipped): (.*) \(\d+\.\d s\)$")
# The step log of a first run, in order: what must still be there at the end.
STEP_LOG = ("==> check:", "    ok: Ollama 0.13.5", "==> hardware:", "    ok: llama3.2:1b",
            "==> plan:", "pull llama3.2:1b (1.3 GB)", "==> pull:",
            re.compile(r"llama3\.2:1b.*1\.3/1\.3 GB|pulled llama3\.2:1b"), "==> verify:",
            "==> configure:")


@pytest.fixture(scope="module")
def first_run(homes: Callable[[], Path]) -> Callable[[int, int], ScreenRun]:
    """`apply` of one small model on a fresh machine (a 1.3 GB download in about 1.5 s,
    Codex's config in ~/.codex), once per terminal size."""
    runs: dict[tuple[int, int], ScreenRun] = {}

    def run(columns: int, rows: int) -> ScreenRun:
        if (columns, rows) not in runs:
            home = homes()
            with OllamaTestServer(download_rate=1e9, vram=[]) as srv:
                runs[columns, rows] = run_in_terminal(
                    "apply", "-f", manifest(home, SMALL), "--assume", CPU,
                    env=user_env(home, srv), columns=columns, rows=rows)
        return runs[columns, rows]

    return run


# --- item 1: output that never erases itself ---------------------------------------------------


@pytest.mark.parametrize(("columns", "rows"), SIZES, ids=SIZE_IDS)
def test_first_run_keeps_the_whole_step_log(first_run, columns: int, rows: int) -> None:
    run = first_run(columns, rows)
    assert run.code == 0, run.describe()
    assert_log_kept(run, *STEP_LOG)
    assert_marked_lines_kept(run)


@pytest.mark.parametrize(("columns", "rows"), SIZES, ids=SIZE_IDS)
def test_step_log_survives_a_busy_machine(home: Path, columns: int, rows: int) -> None:
    """The same run with the printing thread preempted at its worst moment (as a loaded
    2-core machine does now and then, in 4 of 8 long downloads)."""
    with OllamaTestServer(download_rate=2e9, vram=[]) as srv:
        run = run_in_terminal("apply", "-f", manifest(home, SMALL), "--assume", CPU,
                              env=user_env(home, srv), columns=columns, rows=rows,
                              preload=PREEMPTED_PRINTS)
    assert run.code == 0, run.describe()
    assert_marked_lines_kept(run)
    assert_log_kept(run, *STEP_LOG)


# --- the rules for every run: fits, one message per fact --------------------------------------


@pytest.mark.parametrize(("columns", "rows"), [
    (80, 24),
    (120, 40)], ids=SIZE_IDS)
def test_first_run_fits_the_terminal(first_run, columns: int, rows: int) -> None:
    assert_fits(first_run(columns, rows))


@pytest.mark.parametrize(("columns", "rows"), SIZES, ids=SIZE_IDS)
def test_first_run_says_each_step_result_once(first_run, columns: int, rows: int) -> None:
    run = first_run(columns, rows)
    said = [m[2] for line in run.output if (m := STEP_END.match(line))]
    assert said, run.describe()
    for summary in said:
        head = summary[:30]
        rows_saying = [line for line in run.output if head in line]
        assert len(rows_saying) == 1, f"{head!r} said {len(rows_saying)} times\n" \
                                      f"{run.describe()}"


# --- item 2: waiting for a server that is installed but not running ---------------------------


@pytest.fixture(scope="module")
def stopped(homes: Callable[[], Path]) -> dict[str, str]:
    """A user whose Ollama is installed but not running: nothing listens on its port."""
    home = homes()
    return user_env(home, f"127.0.0.1:{free_port()}", PATH=stopped_ollama(home))


def test_waiting_for_a_stopped_server_moves(stopped, home: Path) -> None:
    run = run_in_terminal("apply", "-f", manifest(home, SMALL), "--wait", "3", env=stopped)
    assert run.code == 3, run.describe()
    assert_moves(run, start="waiting", end="fix:")


def test_waiting_for_a_stopped_server_mentions_start(stopped, home: Path) -> None:
    run = run_plain("apply", "-f", manifest(home, SMALL), "--wait", "0", env=stopped)
    assert run.code == 3
    assert "--start" in run.err, run.describe()


def test_waiting_for_a_stopped_server_logs_its_start_and_end(stopped, home: Path) -> None:
    run = run_plain("apply", "-f", manifest(home, SMALL), "--wait", "1.2", env=stopped)
    assert run.code == 3
    assert_start_and_end(run, "waiting up to 1.2 s", "failed:", apart=1.0)


@pytest.fixture
def nothing_installed(home: Path) -> dict[str, str]:
    if installed_here():
        pytest.skip("Ollama is installed on this machine: `not installed` cannot be shown")
    return user_env(home, f"127.0.0.1:{free_port()}")


def test_nothing_installed_gets_the_install_steps_at_once(nothing_installed) -> None:
    # Stopped as soon as it starts waiting: the test costs no 30 s today.
    run = run_in_terminal("apply", "--assume", CPU, env=nothing_installed, timeout=20,
                          signal_when=(lambda raw: b"waiting" in raw, signal.SIGKILL))
    assert run.code == 3, run.describe()
    assert "curl -fsSL https://ollama.com/install.sh | sh" in run.text, run.describe()


@pytest.mark.parametrize("asked", ["flag", "manifest"])
def test_nothing_installed_is_waited_for_when_asked(nothing_installed, home: Path,
                                                    asked: str) -> None:
    """A server in a container starts late and is not installed here: waiting for it is
    what `--wait` or a manifest's `wait` ask for."""
    if asked == "flag":
        args = ("-f", manifest(home, SMALL), "--wait", "1")
    else:
        args = ("-f", manifest(home, "[server]\nwait = 1\n\n" + SMALL))
    run = run_plain("apply", *args, env=nothing_installed)
    assert run.code == 3
    assert_start_and_end(run, "waiting up to 1 s", "failed:", apart=0.9)


def test_the_default_waits_for_an_installed_server_that_is_starting(home: Path) -> None:
    """Installed but not running yet (a service starting): the built-in default waits for
    it, and goes on when it answers."""
    port = free_port()
    env = user_env(home, f"127.0.0.1:{port}", PATH=stopped_ollama(home))
    srv = OllamaTestServer(port=port, vram=[])
    add_coders(srv)
    later = threading.Timer(1.5, srv.start)
    later.start()
    try:
        run = run_plain("apply", "--dry-run", "--assume", CPU, env=env)
    finally:
        later.cancel()
        later.join()
        srv.stop()
    assert run.code == 0, run.describe()
    assert_start_and_end(run, "waiting", "ok: Ollama 0.13.5", apart=1.0)


# --- item 3: loading a model -------------------------------------------------------------------


@pytest.fixture
def slow_load() -> Iterator[OllamaTestServer]:
    """A model that takes 3 s to load (a real 9 GB model on a CPU takes minutes)."""
    with OllamaTestServer(installed=["llama3.2:1b"], load_delay=3.0, vram=[]) as srv:
        yield srv


VERIFY_ONLY = SMALL + "\n[codex]\nenabled = false\n"
VERIFIED = re.compile(r"^    ok: llama3\.2:1b: .*tok/s")


def test_verify_moves_while_a_model_loads(slow_load, home: Path) -> None:
    run = run_in_terminal("apply", "-f", manifest(home, VERIFY_ONLY), "--assume", CPU,
                          env=user_env(home, slow_load))
    assert run.code == 0, run.describe()
    assert_moves(run, start="==> verify:", end=VERIFIED)


def test_verify_logs_each_model_before_it_loads(slow_load, home: Path) -> None:
    run = run_plain("apply", "-f", manifest(home, VERIFY_ONLY), "--assume", CPU,
                    env=user_env(home, slow_load))
    assert run.code == 0, run.describe()
    assert_start_and_end(run, re.compile(r"llama3\.2:1b.*load|load\w*.*llama3\.2:1b"),
                         VERIFIED, apart=2.5)


# --- item 5: the default picks a model fast enough to use --------------------------------------


@pytest.fixture(scope="module")
def coders() -> Iterator[OllamaTestServer]:
    with OllamaTestServer(vram=[]) as srv:
        add_coders(srv)
        yield srv


def test_default_chooses_the_best_model_fast_enough_to_use(coders, home: Path) -> None:
    run = run_plain("apply", "--dry-run", "--assume", SLOW_CPU, env=user_env(home, coders))
    assert run.code == 0, run.describe()
    assert "pull qwen2.5-coder:7b (" in run.err, run.describe()


def test_chose_line_shows_each_candidates_speed(coders, home: Path) -> None:
    run = run_plain("apply", "--dry-run", "--assume", SLOW_CPU, env=user_env(home, coders))
    (chose,) = [line for line in run.lines if "chose " in line]
    for name in ("qwen2.5-coder:14b", "qwen2.5-coder:7b"):
        assert re.search(re.escape(name) + r"\b[^,]*\d+(\.\d+)?-\d+(\.\d+)? tok/s", chose), chose


@pytest.mark.parametrize("minimum", ["2", "0"])
def test_minimum_speed_of_a_choice_is_configurable(coders, home: Path,
                                                   minimum: str) -> None:
    text = ('[[models]]\nchoose = ["qwen2.5-coder:14b", "qwen2.5-coder:7b"]\n'
            f"min_tokens_per_second = {minimum}\n")
    run = run_plain("apply", "--dry-run", "-f", manifest(home, text), "--assume", SLOW_CPU,
                    env=user_env(home, coders))
    assert run.code == 0, run.describe()
    assert "pull qwen2.5-coder:14b (" in run.err, run.describe()


@pytest.mark.parametrize(("columns", "rows"), SIZES, ids=SIZE_IDS)
def test_chose_line_fits(coders, home: Path, columns: int, rows: int) -> None:
    run = run_in_terminal("apply", "--dry-run", "--assume", SLOW_CPU,
                          env=user_env(home, coders), columns=columns, rows=rows)
    assert run.code == 0, run.describe()
    assert_fits(run)


# --- item 8: the registry is unreachable -------------------------------------------------------


@pytest.fixture(scope="module")
def no_registry(homes: Callable[[], Path]) -> PlainRun:
    """apply where neither the tool nor the server can reach the registry."""
    home = homes()
    with OllamaTestServer(vram=[]) as srv:
        srv.faults.append(Fault("registry_unreachable", times=None))
        env = user_env(home, srv, OLLAMA_PROVISION_REGISTRY=f"http://127.0.0.1:{free_port()}")
        return run_plain("apply", "-f", manifest(home, SMALL), "--assume", CPU, env=env)


def test_offline_hardware_says_its_estimate_is_rough(no_registry) -> None:
    lines = no_registry.lines
    start = lines.index("==> hardware: can this machine run the models?")
    end = next(i for i, line in enumerate(lines) if i > start and STEP_END.match(line))
    assert "rough" in " ".join(lines[start:end + 1]), no_registry.describe()


def test_offline_plan_does_not_claim_a_size(no_registry) -> None:
    assert "size unknown" in no_registry.err
    assert "(0 B)" not in no_registry.err, no_registry.describe()


def test_offline_pull_failure_says_why(no_registry) -> None:
    failed = [x for x in no_registry.lines if x.startswith("    failed:")]
    assert failed, no_registry.describe()
    assert "nothing to download" not in failed[0] and "registry" in failed[0], \
        no_registry.describe()


def test_offline_verify_is_not_ok(no_registry) -> None:
    assert no_registry.code == 1
    assert "ok: nothing to verify" not in no_registry.err, no_registry.describe()


# --- item 12: apply's flags mean what they mean elsewhere -------------------------------------


def test_apply_ignore_hardware(coders, home: Path) -> None:
    big = manifest(home, '[[models]]\nname = "qwen2.5-coder:32b"\n')
    refused = run_plain("apply", "--dry-run", "-f", big, "--assume", "ram=8G,gpu=none",
                        env=user_env(home, coders))
    assert refused.code == 1
    run = run_plain("apply", "--dry-run", "-f", big, "--assume", "ram=8G,gpu=none",
                    "--ignore-hardware", env=user_env(home, coders))
    assert run.code == 0, run.describe()
    assert "pull qwen2.5-coder:32b (" in run.err


@pytest.mark.parametrize("how", ["manifest", "flag"])
def test_apply_require_gpu(coders, home: Path, how: str) -> None:
    text = SMALL + ('\n[hardware]\nrequire = "gpu"\n' if how == "manifest" else "")
    extra = ("--require", "gpu") if how == "flag" else ()
    run = run_plain("apply", "--dry-run", "-f", manifest(home, text), "--assume", CPU,
                    *extra, env=user_env(home, coders))
    assert run.code == 1, run.describe()
    assert "gpu" in run.err.lower()


def test_apply_takes_the_pull_settings_from_the_command_line(home: Path) -> None:
    with OllamaTestServer(download_rate=2e9, vram=[]) as srv:
        srv.faults.append(Fault("drop", after_bytes=300_000_000))
        run = run_plain("apply", "-f", manifest(home, SMALL), "--assume", CPU,
                        "--retries", "0", "--parallel", "2", "--stall-timeout", "30",
                        "--insecure", env=user_env(home, srv))
    assert run.code == 1, run.describe()
    assert "gave up after 0 retries" in run.err, run.describe()


# --- item 13: polish ---------------------------------------------------------------------------


def test_apply_says_a_failure_once(home: Path) -> None:
    with OllamaTestServer(vram=[]) as srv:
        run = run_in_terminal("apply", "-f", manifest(home, '[[models]]\nname = "nosuch"\n'),
                              "--assume", CPU, env=user_env(home, srv), columns=120,
                              rows=40)
    assert run.code == 1, run.describe()
    said = [line for line in run.output if "is not in the registry" in line]
    assert len(said) == 1, run.describe()


def test_apply_gives_the_reason_before_the_fix(stopped, home: Path) -> None:
    run = run_plain("apply", "-f", manifest(home, SMALL), "--wait", "0", env=stopped)
    reason = next(i for i, line in enumerate(run.lines) if "not running" in line)
    fix = next(i for i, line in enumerate(run.lines) if "fix:" in line)
    assert reason < fix, run.describe()


def test_dry_run_and_real_run_agree_on_the_plan_step(home: Path) -> None:
    with OllamaTestServer(download_rate=None, vram=[]) as srv:
        env = user_env(home, srv)
        file = manifest(home, SMALL)
        dry = run_plain("apply", "--dry-run", "-f", file, "--assume", CPU, env=env)
        real = run_plain("apply", "-f", file, "--assume", CPU, env=env)

    def plan(run: PlainRun) -> str:
        lines = run.lines
        start = lines.index("==> plan: what needs doing")
        return next(m[1] for line in lines[start:] if (m := STEP_END.match(line)))

    assert plan(real) == "ok"
    assert plan(dry) == "ok", dry.describe()


def test_interrupted_apply_says_how_to_resume(home: Path) -> None:
    with OllamaTestServer(download_rate=300e6, vram=[]) as srv:
        run = run_in_terminal("apply", "-f", manifest(home, SMALL), "--assume", CPU,
                              env=user_env(home, srv), columns=120, rows=40,
                              signal_when=(lambda raw: b"pulling " in raw, signal.SIGINT))
    assert run.code == 130, run.describe()
    assert "run the same command again" in run.text, run.describe()


def test_interrupted_apply_says_it_once(home: Path) -> None:
    with OllamaTestServer(download_rate=300e6, vram=[]) as srv:
        run = run_in_terminal("apply", "-f", manifest(home, SMALL), "--assume", CPU,
                              env=user_env(home, srv), columns=120, rows=40,
                              signal_when=(lambda raw: b"pulling " in raw, signal.SIGINT))
    assert run.code == 130
    assert len(run.rows_with("run the same command again")) == 1, run.describe()


def test_github_step_summary_has_the_fixes(stopped, home: Path) -> None:
    summary = home / "summary.md"
    env = {**stopped, "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    run = run_plain("apply", "-f", manifest(home, SMALL), "--wait", "0", env=env)
    assert run.code == 3
    assert "ollama serve" in summary.read_text(), summary.read_text()


def test_a_redirected_log_gets_no_cursor_codes(home: Path) -> None:
    with OllamaTestServer(download_rate=2e9, vram=[]) as srv:
        run = run_in_terminal("apply", "-f", manifest(home, SMALL), "--assume", CPU,
                              env=user_env(home, srv, FORCE_COLOR="1"), stderr="pipe")
    assert run.code == 0, run.describe()
    assert_no_escapes(run.stderr, "stderr redirected", colour=True)


def test_a_log_gets_no_escape_codes(home: Path) -> None:
    with OllamaTestServer(download_rate=2e9, vram=[]) as srv:
        run = run_plain("apply", "-f", manifest(home, SMALL), "--assume", CPU,
                        env=user_env(home, srv))
    assert run.code == 0, run.describe()
    assert_no_escapes(run.out + run.err)
    assert_start_and_end(run, "pulling llama3.2:1b", "changed: pulled llama3.2:1b")


def test_quiet_apply_says_only_the_failure_reason_first(stopped, home: Path) -> None:
    """-q: only errors; still the reason, then what to do."""
    run = run_plain("apply", "-q", "-f", manifest(home, SMALL), "--wait", "0", env=stopped)
    assert run.code == 3, run.describe()
    assert run.out == "", run.describe()
    lines = run.err.splitlines()
    assert lines[0].startswith("error: check: Ollama is installed"), run.describe()
    assert lines[1].startswith("  fix: add --start"), run.describe()
    assert not [line for line in lines if line.startswith(("==>", "    ok:"))]


def test_dry_run_does_not_send_the_user_to_pull_what_apply_pulls(coders, home: Path) -> None:
    """The Codex step of a dry run: the model is not on the server yet, but apply pulls
    it: no `pull it (ollama-provision pull ...)` (one story)."""
    run = run_plain("apply", "--dry-run", "--assume", SLOW_CPU, env=user_env(home, coders))
    assert run.code == 0, run.describe()
    assert "ollama-provision pull" not in run.err, run.describe()
