"""What a user sees against the real Ollama 0.32.15 and the real registry (issue 13): `pull`
and `apply` on a pseudo-terminal of 80x24 and 120x40 rendered by pyte (tests/screen.py),
and `fleet` over two real servers in a CI log. The registry is reached through a
throttling front, so that `tiny` (255 KB) downloads for about a second and the progress
display really runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import watched_servers
from tests.integration.throttle import ThrottledFront
from tests.integration.wiring import inventory
from tests.real import RealOllama, Registry
from tests.screen import (
    PREEMPTED_PRINTS,
    SIZES,
    ScreenRun,
    assert_fits,
    assert_log_kept,
    assert_marked_lines_kept,
    assert_moves,
    assert_nothing_twice,
    run_in_terminal,
    run_plain,
    terminal_env,
)
from tests.ux_support import SIZE_IDS

RATE = 200e3  # bytes per second through the front: tiny takes about 1.3 s


@pytest.fixture(scope="module")
def slow_tiny(real_server: RealOllama, registry: Registry) -> Iterator[str]:
    """`tiny` in the real registry, reached through a throttled front: its name there."""
    real_server.publish("tiny", registry, "library/tiny:latest")
    with ThrottledFront(registry.port, RATE) as front:
        yield f"{front.host}/library/tiny:latest"


@pytest.fixture(scope="module")
def real_pull(empty_server: RealOllama, slow_tiny: str,
              tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ScreenRun]:
    """`pull --insecure <tiny>` on a terminal of each size (the model deleted first)."""
    runs: dict[tuple[int, int, str], ScreenRun] = {}
    home = tmp_path_factory.mktemp("home")

    def run(columns: int, rows: int, preload: str = "") -> ScreenRun:
        if (columns, rows, preload) not in runs:
            if slow_tiny in empty_server.names():
                empty_server.delete(slow_tiny)
            env = terminal_env(HOME=str(home), OLLAMA_HOST=empty_server.host,
                               OLLAMA_PROVISION_RETRY_BASE="0.05")
            runs[columns, rows, preload] = run_in_terminal(
                "pull", "--insecure", slow_tiny, env=env, columns=columns, rows=rows,
                timeout=120, preload=preload)
        return runs[columns, rows, preload]

    return run


@pytest.mark.parametrize(("columns", "rows"), SIZES, ids=SIZE_IDS)
def test_real_pull_on_a_terminal(real_pull, slow_tiny: str, columns: int, rows: int) -> None:
    run = real_pull(columns, rows)
    assert run.code == 0, run.describe()
    assert_log_kept(run, slow_tiny)
    assert_marked_lines_kept(run)
    assert_fits(run)
    assert_moves(run)


@pytest.mark.parametrize(("columns", "rows"), SIZES, ids=SIZE_IDS)
def test_real_pull_says_the_outcome_once(real_pull, slow_tiny: str, columns: int,
                                         rows: int) -> None:
    run = real_pull(columns, rows)
    # the shell's line above names the model too: the tool's own lines count
    assert len([row for row in run.output if slow_tiny in row]) == 1, run.describe()


@pytest.mark.parametrize(("columns", "rows"), SIZES, ids=SIZE_IDS)
def test_real_fresh_pull_claims_no_resume(real_pull, columns: int, rows: int) -> None:
    run = real_pull(columns, rows)
    assert run.code == 0
    assert "resumed" not in run.text, run.describe()


@pytest.mark.parametrize(("columns", "rows"), SIZES, ids=SIZE_IDS)
def test_real_pull_lines_do_not_wrap(real_pull, columns: int, rows: int) -> None:
    run = real_pull(columns, rows)
    loose = [row for row in run.output if row and not row.startswith(("✓ ", "↻ ", "! ", "✗ "))]
    assert not loose, run.describe()


def test_real_pull_keeps_the_lines_above_on_a_busy_machine(real_pull, slow_tiny: str) -> None:
    run = real_pull(120, 40, PREEMPTED_PRINTS)
    assert run.code == 0, run.describe()
    assert_marked_lines_kept(run)
    assert_log_kept(run, slow_tiny)


@pytest.fixture(scope="module")
def fleet_hosts(ollama_dist: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RealOllama]]:
    with watched_servers(ollama_dist, tmp_path_factory.mktemp("screen-fleet"), 2,
                         with_tiny=False) as found:
        yield found


def test_real_fleet_log_says_each_host_once(fleet_hosts: list[RealOllama], slow_tiny: str,
                                            user_env: dict[str, str], tmp_path: Path) -> None:
    path = inventory(tmp_path / "fleet.toml",
                     ((f"host-{i}", srv.url) for i, srv in enumerate(fleet_hosts)),
                     (slow_tiny,), "[pull]\ninsecure = true\n\n[verify]\nnum_predict = 4\n")
    run = run_plain("fleet", "-i", str(path), env=user_env, timeout=120)
    assert run.code == 0, run.describe()
    assert_nothing_twice(run.lines, context=run.describe())
