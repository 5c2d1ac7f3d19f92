"""`pull` as a new user sees it (issue 13): the progress display on a terminal of 80x24
and 120x40, the lines of a log, and what a redirected stream gets, against the test
double, grouped by the item of issue 13 each test holds.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.double import Fault, OllamaTestServer
from tests.screen import (
    PREEMPTED_PRINTS,
    SIZES,
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
    home_fixture,  # noqa: F401 (the `home` fixture)
    homes_fixture,  # noqa: F401 (the `homes` fixture)
    speeds,
    user_env,
)

MODEL = "llama3.2:1b"
LONG = "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"
BAR = re.compile(r"^\s*(pulling [0-9a-f]{12}|total)\s+\d+% ▕[^▏]*▏ (.*)$")


def bar_rows(run: ScreenRun) -> Iterator[tuple[str, str, list[str]]]:
    """(label, figures, other figures) of every progress row in every frame:
    `pulling 02c22f0b3928`, ["810.8 MB/1.3 GB", "13.8 GB/s", "0s"]."""
    for _, rows in run.frames:
        for row in rows:
            if m := BAR.match(row):
                figures = [f for f in m[2].rstrip().split("  ") if f]
                yield m[1], figures[0], figures[1:]


def preset_partial(srv: OllamaTestServer, name: str, fraction: float) -> None:
    """The server kept `fraction` of the model's weights from an earlier, interrupted
    pull (what Ctrl-C leaves; the next pull resumes from there)."""
    weights = max(srv.manifest(name)["layers"], key=lambda layer: layer["size"])
    srv.partial[weights["digest"]] = int(weights["size"] * fraction)


@pytest.fixture(scope="module")
def first_pull(homes: Callable[[], Path]) -> Callable[[int, int], ScreenRun]:
    """`pull llama3.2:1b` (1.3 GB at 1 GB/s: over a second of bars), once per size."""
    runs: dict[tuple[int, int], ScreenRun] = {}

    def run(columns: int, rows: int) -> ScreenRun:
        if (columns, rows) not in runs:
            with OllamaTestServer(download_rate=1e9) as srv:
                runs[columns, rows] = run_in_terminal(
                    "pull", MODEL, env=user_env(homes(), srv), columns=columns, rows=rows)
        return runs[columns, rows]

    return run


# --- item 1 and the rules -------------------------------------------------------------------


@pytest.mark.parametrize(("columns", "rows"), SIZES, ids=SIZE_IDS)
def test_pull_shows_moving_bars_that_fit_and_leaves_its_result(first_pull, columns: int,
                                                               rows: int) -> None:
    run = first_pull(columns, rows)
    assert run.code == 0, run.describe()
    assert_log_kept(run, MODEL)
    assert_marked_lines_kept(run)
    assert_fits(run)
    assert_moves(run)
    assert any(label == "total" for label, _, _ in bar_rows(run)), run.describe()


@pytest.mark.parametrize(("columns", "rows"), SIZES, ids=SIZE_IDS)
def test_pull_keeps_the_lines_above_it_on_a_busy_machine(home: Path, columns: int,
                                                         rows: int) -> None:
    with OllamaTestServer(download_rate=2e9) as srv:
        run = run_in_terminal("pull", MODEL, env=user_env(home, srv), columns=columns,
                              rows=rows, preload=PREEMPTED_PRINTS)
    assert run.code == 0, run.describe()
    assert_log_kept(run, MODEL)
    assert_marked_lines_kept(run)


@pytest.mark.parametrize(("columns", "rows"), SIZES, ids=SIZE_IDS)
def test_pull_says_the_outcome_once(first_pull, columns: int, rows: int) -> None:
    run = first_pull(columns, rows)
    # the shell's line above names the model too: the tool's own lines count
    assert len([row for row in run.output if MODEL in row]) == 1, run.describe()


# --- item 13: the bars themselves -----------------------------------------------------------


def test_rows_with_the_same_bytes_show_the_same_speed(first_pull) -> None:
    run = first_pull(120, 40)
    for _, rows in run.frames:
        shown = [m for row in rows if (m := BAR.match(row))]
        figures = {m[1].strip(): [f for f in m[2].rstrip().split("  ") if f] for m in shown}
        blob = [f for label, f in figures.items() if label.startswith("pulling")
                and f[1:] and figures.get("total", [None])[0] == f[0]]
        for f in blob:
            assert f[1] == figures["total"][1], "\n".join(rows)


def test_tiny_blobs_get_no_rows(home: Path) -> None:
    with OllamaTestServer(download_rate=2e9) as srv:
        # the smallest blob takes half a second (else it may pass between two redraws)
        smallest = min(srv.manifest(MODEL)["layers"], key=lambda layer: layer["size"])
        srv.faults.append(Fault("stuck", blob=smallest["digest"], after_bytes=0, seconds=0.5))
        run = run_in_terminal("pull", MODEL, env=user_env(home, srv), columns=120, rows=40)
    assert run.code == 0, run.describe()
    tiny = {f"{label} {figures}" for label, figures, _ in bar_rows(run)
            if label != "total" and re.search(r"/[\d.]+ (B|KB)$", figures)}
    assert not tiny, sorted(tiny)


def test_pull_summary_has_no_nested_parentheses(home: Path) -> None:
    with OllamaTestServer(download_rate=None) as srv:
        run = run_plain("pull", MODEL, env=user_env(home, srv))
    assert run.code == 0
    nested = [line for line in run.lines if re.search(r"\([^()]*\(", line)]
    assert not nested, run.describe()


# --- item 6: speed and time left after a resume ----------------------------------------------


RATE = 300e6


def test_resumed_download_shows_the_real_speed(home: Path) -> None:
    with OllamaTestServer(download_rate=RATE) as srv:
        preset_partial(srv, MODEL, 0.75)
        run = run_in_terminal("pull", MODEL, env=user_env(home, srv), columns=120, rows=40)
    assert run.code == 0, run.describe()
    assert "resumed" in run.text
    shown = [s for _, _, rest in bar_rows(run) for f in rest for s in speeds(f)]
    assert shown, run.describe()
    assert max(shown) <= 2 * RATE, f"{max(shown) / 1e6:.0f} MB/s shown\n{run.describe()}"


def test_resumed_download_logs_the_real_speed(home: Path) -> None:
    with OllamaTestServer(download_rate=RATE) as srv:
        preset_partial(srv, MODEL, 0.75)
        run = run_plain("pull", MODEL, env=user_env(home, srv))
    assert run.code == 0, run.describe()
    shown = [s for line in run.lines if "%" in line for s in speeds(line)]
    assert shown, run.describe()
    assert max(shown) <= 2 * RATE, run.describe()


def test_retried_download_shows_the_real_speed(home: Path) -> None:
    """Within one run a dropped connection is resumed and accounted for."""
    with OllamaTestServer(download_rate=1e9) as srv:
        srv.faults.append(Fault("drop", after_bytes=700_000_000))
        run = run_in_terminal("pull", MODEL, env=user_env(home, srv), columns=120, rows=40)
    assert run.code == 0, run.describe()
    assert "resumed at" in run.text
    shown = [s for _, _, rest in bar_rows(run) for f in rest for s in speeds(f)]
    assert shown and max(shown) <= 2e9, run.describe()


# --- item 13: messages ------------------------------------------------------------------------


def test_pull_says_a_failure_once(home: Path) -> None:
    with OllamaTestServer() as srv:
        run = run_in_terminal("pull", "nosuch", env=user_env(home, srv), columns=120, rows=40)
    assert run.code == 1
    assert len(run.rows_with("not found in the registry")) == 1, run.describe()


def test_pull_says_interrupted_once(home: Path) -> None:
    with OllamaTestServer(download_rate=RATE) as srv:
        run = run_in_terminal("pull", MODEL, env=user_env(home, srv), columns=120, rows=40,
                              signal_when=(lambda raw: b"% " in raw, signal.SIGINT))
    assert run.code == 130, run.describe()
    assert len([r for r in run.rows_with(MODEL) if "interrupted" in r]) == 1, run.describe()
    assert "run the same command again" in run.text


def test_a_long_name_fits_at_100_columns(home: Path) -> None:
    with OllamaTestServer(download_rate=RATE) as srv:
        preset_partial(srv, LONG, 0.5)
        run = run_in_terminal("pull", "--no-disk-check", LONG, env=user_env(home, srv),
                              columns=100, rows=30)
    assert run.code == 0, run.describe()
    assert_fits(run)
    # rich wraps what it prints itself: a continuation row starts with no mark
    loose = [row for row in run.output if row and not row.startswith(("✓ ", "↻ ", "! ", "✗ "))]
    assert not loose, run.describe()


# --- what a log or a redirected stream gets ---------------------------------------------------


def test_pull_log_has_start_and_end_lines_and_no_escape_codes(home: Path) -> None:
    with OllamaTestServer(download_rate=1e9) as srv:
        run = run_plain("pull", MODEL, env=user_env(home, srv))
    assert run.code == 0, run.describe()
    assert_no_escapes(run.out + run.err)
    assert_start_and_end(run, f"pulling {MODEL}", f"{MODEL}: pulled", apart=1.0)


def test_redirected_stderr_gets_no_cursor_codes(home: Path) -> None:
    with OllamaTestServer(download_rate=2e9) as srv:
        run = run_in_terminal("pull", MODEL, env=user_env(home, srv, FORCE_COLOR="1"),
                              stderr="pipe")
    assert run.code == 0, run.describe()
    assert_no_escapes(run.stderr, "stderr redirected to a file", colour=True)


def test_redirected_stdout_gets_plain_lines(home: Path) -> None:
    with OllamaTestServer(download_rate=2e9) as srv:
        run = run_in_terminal("pull", MODEL, env=user_env(home, srv), stdout="pipe")
    assert run.code == 0, run.describe()
    assert_no_escapes(run.stdout, "stdout redirected to a file")
    assert run.stdout.startswith(f"{MODEL}: pulled")


@pytest.mark.parametrize(("columns", "rows"), SIZES, ids=SIZE_IDS)
def test_ctrl_c_typed_leaves_no_stale_row(home: Path, columns: int, rows: int) -> None:
    """Ctrl-C typed at the keyboard: the terminal echoes it where the cursor is, the end of
    the bars' last row; that must not throw off the rows the display erases (a stale bar
    stayed above the log at 80 columns)."""
    with OllamaTestServer(download_rate=RATE) as srv:
        run = run_in_terminal("pull", MODEL, env=user_env(home, srv), columns=columns,
                              rows=rows, keys=[(1.5, b"\x03")])
    assert run.code == 130, run.describe()
    stale = [row for row in run.output if BAR.match(row) or row.startswith(f"{MODEL}  ")]
    assert not stale, run.describe()
    assert_log_kept(run, f"! {MODEL}: interrupted", "run the same command again")
    assert_fits(run)
