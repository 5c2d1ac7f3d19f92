"""`hardware` and `check --hardware` as a new user sees them (issue 13): the table at 80
and 120 columns, the README's examples pasted as written, and errors that name the
registry the tool really asked; movement and a start line while a slow registry is read.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.double import Fault, OllamaTestServer
from tests.screen import (
    assert_fits,
    assert_moves,
    assert_start_and_end,
    run_in_terminal,
    run_plain,
)
from tests.tool import ROOT
from tests.ux_support import (
    SIZE_IDS,
    SLOW_CPU,
    add_coders,
    home_fixture,  # noqa: F401 (the `home` fixture)
    user_env,
)

# name, size, tokens/s as `hardware` estimates them on SLOW_CPU
EXPECTED = (("qwen2.5-coder:14b", "9.0 GB", "3.2-5.0"), ("qwen2.5-coder:7b", "4.7 GB", "6.3-9.7"),
            ("llama3.2:3b", "2.0 GB", "15-24"))


@pytest.fixture(scope="module")
def coders() -> Iterator[OllamaTestServer]:
    with OllamaTestServer(vram=[], installed=["llama3.2:1b"]) as srv:
        add_coders(srv)
        yield srv


# --- item 4: the table at 80 columns ---------------------------------------------------------


@pytest.mark.parametrize(("columns", "rows"), [
    (80, 24),
    (120, 40)], ids=SIZE_IDS)
def test_hardware_table_is_readable(coders, home: Path, columns: int, rows: int) -> None:
    run = run_in_terminal("hardware", "--assume", SLOW_CPU, *(m for m, _, _ in EXPECTED),
                          env=user_env(home, coders), columns=columns, rows=rows)
    assert run.code == 0, run.describe()
    assert "…" not in run.text, run.describe()
    for name, size, rate in EXPECTED:
        assert any(name in row and size in row and rate in row for row in run.output), \
            f"{name}: not on one row with {size} and {rate}\n{run.describe()}"
    assert_fits(run)


# --- item 7: the README's examples, pasted as written ----------------------------------------


def readme_examples(command: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [line.strip() for line in text.splitlines()
            if line.strip().startswith(f"ollama-provision {command} ")]


def test_readme_has_assume_examples() -> None:
    assert len([e for e in readme_examples("hardware") if "--assume" in e]) >= 2


def test_readme_hardware_examples_work_as_written(coders, home: Path) -> None:
    for example in readme_examples("hardware"):
        run = run_plain(*shlex.split(example)[1:], env=user_env(home, coders))
        assert run.code in (0, 1), run.describe()  # a verdict, not a usage error


def test_no_context_note_when_no_context_was_given(coders, home: Path) -> None:
    run = run_plain("hardware", "--assume", "ram=32G,gpu=2x24G:RTX 4090,disk=500G,"
                    "ollama=0.15.5", "llama3.1:70b", env=user_env(home, coders))
    assert run.code == 1, run.describe()
    assert "trained for" not in run.out + run.err, run.describe()


# --- item 13: check --hardware, the registry named -------------------------------------------


def test_check_hardware_shows_tokens_per_second(coders, home: Path) -> None:
    run = run_plain("check", "--hardware", "llama3.2:1b", env=user_env(home, coders))
    assert run.code == 0, run.describe()
    assert re.search(r"llama3\.2:1b.*\d+(\.\d+)?-\d+(\.\d+)? tok(ens)?/s", run.out), run.describe()


@pytest.mark.parametrize("command", [("hardware",), ("pull", "--dry-run")],
                         ids=["hardware", "pull-dry-run"])
def test_errors_name_the_registry_asked(coders, home: Path, command: tuple[str, ...]) -> None:
    run = run_plain(*command, "nosuch", env=user_env(home, coders))
    assert run.code == 1, run.describe()
    mirror = coders.url.split("//", 1)[1]
    assert mirror in run.err and "registry.ollama.ai" not in run.err, run.describe()


# --- the rules for every command: a slow registry --------------------------------------------


@pytest.fixture
def slow_registry() -> Iterator[OllamaTestServer]:
    """A registry whose every manifest takes 3 s to answer (a slow link, a far mirror)."""
    with OllamaTestServer(vram=[]) as srv:
        srv.faults.append(Fault("slow_headers", endpoint="/v2/*/manifests/*", seconds=3.0,
                                times=None))
        yield srv


def test_hardware_moves_while_it_reads_the_registry(slow_registry, home: Path) -> None:
    run = run_in_terminal("hardware", "--assume", SLOW_CPU, "llama3.2:1b",
                          env=user_env(home, slow_registry))
    assert run.code == 0, run.describe()
    assert_moves(run, end="machine:")
    assert_fits(run)


@pytest.mark.parametrize("command", [("hardware", "--assume", SLOW_CPU),
                                     ("pull", "--dry-run")], ids=["hardware", "pull-dry-run"])
def test_a_log_says_when_reading_the_registry_starts(slow_registry, home: Path,
                                                     command: tuple[str, ...]) -> None:
    run = run_plain(*command, "llama3.2:1b", env=user_env(home, slow_registry))
    assert run.code == 0, run.describe()
    assert_start_and_end(run, re.compile("judging|reading the registry"),
                         re.compile(r"^(machine:|dry run:)"), apart=2.5)
