"""The screen harness itself (tests/screen.py): what it renders and what its rules catch.

Synthetic byte streams check the replay (scrollback, erasing, wrapping, movement); a few
runs of the real entry point check that the tool really gets a terminal of the size asked
(and a pipe where asked), that Ctrl-C typed there reaches it, and that log lines are timed
when they are written.
"""

from __future__ import annotations

import pytest

from tests.screen import (
    PREEMPTED_PRINTS,
    SIZES,
    Chunk,
    PlainRun,
    ScreenRun,
    assert_fits,
    assert_log_kept,
    assert_marked_lines_kept,
    assert_moves,
    assert_no_escapes,
    assert_nothing_twice,
    assert_start_and_end,
    run_in_terminal,
    run_plain,
)

# A preload that reports what the process was given, then exits before the tool runs.
SEE_TERMINAL = """
import os, sys
size = os.get_terminal_size(2)
print(f"{size.columns}x{size.lines}", *(os.isatty(fd) for fd in (0, 1, 2)), flush=True)
raise SystemExit(0)
"""


def synthetic(*parts: tuple[float, bytes], columns: int = 80, rows: int = 24) -> ScreenRun:
    chunks = tuple(Chunk(t, data) for t, data in parts)
    return ScreenRun(("demo",), 0, columns, rows, chunks, seconds=chunks[-1].t + 0.01)


@pytest.mark.parametrize(("columns", "rows"), SIZES)
def test_the_tool_gets_a_terminal_of_the_size_asked(columns: int, rows: int) -> None:
    run = run_in_terminal("--version", columns=columns, rows=rows, preload=SEE_TERMINAL)
    assert run.code == 0, run.describe()
    assert f"{columns}x{rows} True True True" in run.output, run.describe()


def test_stdout_can_go_to_a_pipe_while_stderr_is_the_terminal() -> None:
    run = run_in_terminal("--version", stdout="pipe", preload=SEE_TERMINAL)
    assert run.stdout.strip() == "80x24 True False True"
    assert run.output == []


def test_ctrl_c_typed_on_the_terminal_reaches_the_tool() -> None:
    run = run_in_terminal("--version", keys=[(0.5, b"\x03")], timeout=20,
                          preload="import time\ntime.sleep(15)")
    assert run.code in (-2, 130, 1), run.describe()  # SIGINT, however Python reports it
    assert run.seconds < 10
    assert "^C" in run.text  # the terminal echoed it, as a user's does


def test_the_real_tool_runs_under_the_terminal() -> None:
    run = run_in_terminal("--version")
    assert run.code == 0
    assert_log_kept(run, "ollama-provision ")
    assert_fits(run)


def test_the_preempted_prints_hook_loads_into_the_tool() -> None:
    run = run_in_terminal("--version", preload=PREEMPTED_PRINTS)
    assert run.code == 0, run.describe()


# --- replay -------------------------------------------------------------------------------


def test_scrollback_keeps_what_scrolled_off_the_screen() -> None:
    text = b"".join(b"line %d\r\n" % i for i in range(60))
    run = synthetic((0.1, text))
    assert run.prompt_kept
    assert run.output == [f"line {i}" for i in range(60)]
    assert_log_kept(run, "line 0", "line 30", "line 59")


def test_lines_erased_by_a_live_area_are_caught() -> None:
    # Three log lines, a two-line live area, then the area cleared twice (the bug of
    # issue 13 item 1): the second clear takes two log lines with it.
    clear = b"\r\x1b[2K\x1b[1A\x1b[2K"
    run = synthetic((0.1, b"==> one\r\n==> two\r\n==> three\r\n"),
                    (0.2, b"bar 10%\r\nbar 20%"), (0.3, clear + clear + b"done\r\n"))
    assert run.output[-1] == "done"
    with pytest.raises(AssertionError, match="erased"):
        assert_log_kept(run, "==> one", "==> two", "==> three", "done")


def test_erasing_the_line_above_the_output_is_caught() -> None:
    run = synthetic((0.1, b"x\r\n"), (0.2, b"\x1b[2A\x1b[2Kx\r\n"))
    assert not run.prompt_kept
    with pytest.raises(AssertionError, match="line above the output"):
        assert_log_kept(run)


def test_a_line_wider_than_the_screen_is_caught() -> None:
    exact = synthetic((0.1, b"a" * 80 + b"\r\nnext\r\n"))
    assert exact.wrapped == []
    assert_fits(exact)
    wide = synthetic((0.1, b"b" * 81 + b"\r\n"))
    assert wide.wrapped == ["b" * 80]
    with pytest.raises(AssertionError, match="wider than 80 columns"):
        assert_fits(wide)


def test_movement_is_a_change_of_the_screen_not_a_redraw() -> None:
    redraws = synthetic(*((t / 2, b"\rwaiting") for t in range(1, 8)), (4.0, b"\rdone   "))
    assert redraws.longest_still()[0] == pytest.approx(3.5, abs=0.02)
    with pytest.raises(AssertionError, match="stood still"):
        assert_moves(redraws)
    spinner = synthetic(*((t / 2, b"\rwaiting " + b"|/-\\"[t % 4:t % 4 + 1])
                          for t in range(1, 9)))
    assert_moves(spinner)
    assert_moves(redraws, start=0.1, end="waiting")  # a window that ends early


def test_nothing_twice() -> None:
    assert_nothing_twice(["a", "", "b", ""])
    assert_nothing_twice(["a", "-", "-"], ignore=lambda line: line == "-")
    with pytest.raises(AssertionError, match="printed twice"):
        assert_nothing_twice(["error: x", "  error: x  "])


# --- plain logs -----------------------------------------------------------------------------


def test_log_lines_are_timed_when_written() -> None:
    written = run_plain("--version", preload="import sys, time\nprint('start', flush=True)\n"
                        "time.sleep(1)\nprint('end', file=sys.stderr)\nraise SystemExit(0)")
    assert written.lines == ["start", "end"]
    assert_start_and_end(written, "start", "end", apart=0.8)
    held = PlainRun(("x",), 0, "", "", ((1.0, "err", "start"), (1.0, "err", "end")), 1.0)
    with pytest.raises(AssertionError, match="not written when it began"):
        assert_start_and_end(held, "start", "end", apart=0.8)


def test_escape_codes_in_a_log_are_caught() -> None:
    assert_no_escapes("plain\nlines\n")
    with pytest.raises(AssertionError, match="escape codes"):
        assert_no_escapes("\x1b[?25l\rbar\x1b[2K")
    assert_no_escapes("\x1b[32mgreen\x1b[0m", colour=True)
    with pytest.raises(AssertionError, match="escape codes"):
        assert_no_escapes("\x1b[32mgreen\x1b[0m\x1b[1A", colour=True)


def test_lines_printed_for_good_then_erased_are_caught() -> None:
    clear = b"\r\x1b[2K\x1b[1A\x1b[2K"
    run = synthetic((0.1, b"==> step\r\n\xe2\x86\xbb resumed\r\n"),
                    (0.2, b"bar 10%\r\nbar 20%"), (0.3, clear + b"\x1b[1A\x1b[2K" + b"done\r\n"))
    with pytest.raises(AssertionError, match="shown, then erased"):
        assert_marked_lines_kept(run)
    kept = synthetic((0.1, b"==> step\r\n\xe2\x86\xbb resumed\r\n"), (0.2, b"bar 10%\r\nbar 20%"),
                     (0.3, clear + b"done\r\n"))
    assert_marked_lines_kept(kept)


def test_a_line_printed_over_a_live_row_is_caught() -> None:
    # the live row is not cleared first: the line lands at its end and is later erased
    run = synthetic((0.1, b"bar 10%"), (0.2, b"\xe2\x86\xbb resumed\r\nbar 20%"),
                    (0.3, b"\r\x1b[2K\x1b[1A\x1b[2Kdone\r\n"))
    with pytest.raises(AssertionError, match="shown, then erased"):
        assert_marked_lines_kept(run)
