"""`fleet` as a new user sees it (issue 13, item 11): the dry run, the live table, the
final report and a CI log, over test doubles pulling from one registry double.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.double import OllamaTestServer
from tests.screen import (
    ScreenRun,
    assert_fits,
    assert_nothing_twice,
    run_in_terminal,
    run_plain,
)
from tests.tool import ROOT
from tests.ux_support import (
    home_fixture,  # noqa: F401 (the `home` fixture)
    manifest,
    user_env,
)

REVIEWER = ('[[groups.all.models]]\nname = "reviewer"\nfrom = "llama3.2:1b"\n'
            'system = "You review code."\n')


Fleet = Callable[..., tuple[str, dict[str, str]]]


@pytest.fixture
def fleet(home: Path) -> Iterator[Fleet]:
    """`fleet(names=, installed=, **host_kwargs)`: a registry and hosts pulling from it
    (`h2` also holds a model the inventory does not declare; an empty name: the host is
    named by its address); the inventory declares llama3.2:1b and the custom model
    `reviewer` built from it. Gives the inventory and the user's environment."""
    servers: list[OllamaTestServer] = []

    def make(names: tuple[str, ...] = ("h1", "h2"), installed: tuple[str, ...] = (),
             **kwargs: Any) -> tuple[str, dict[str, str]]:
        registry = OllamaTestServer().start()
        servers.append(registry)
        lines = []
        for name in names:
            held = [*installed, *(["qwen2.5:0.5b"] if name == "h2" else [])]
            host = OllamaTestServer(upstream=registry, installed=held, **kwargs).start()
            servers.append(host)
            lines += ["[[hosts]]", *([f'name = "{name}"'] if name else []),
                      f'url = "{host.url}"', ""]
        lines += ["[groups.all]", '[[groups.all.models]]', 'name = "llama3.2:1b"', REVIEWER]
        env = user_env(home, OLLAMA_PROVISION_REGISTRY=registry.url)
        return manifest(home, "\n".join(lines), "fleet.toml"), env

    yield make
    for srv in servers:
        srv.stop()


def test_dry_run_says_a_custom_model_is_created(fleet: Fleet) -> None:
    inventory, env = fleet()
    run = run_plain("fleet", "-i", inventory, "--dry-run", env=env)
    assert run.code == 1, run.describe()
    assert not [line for line in run.lines if re.search(r"would pull [^;]*reviewer", line)], \
        run.describe()
    assert "would create reviewer" in run.out, run.describe()


def test_sync_dry_run_says_what_would_be_removed(fleet: Fleet) -> None:
    inventory, env = fleet()
    refused = run_plain("fleet", "-i", inventory, "--sync", env=env)
    assert refused.code == 2 and "would be removed" in refused.err
    run = run_plain("fleet", "-i", inventory, "--sync", "--dry-run", env=env)
    (h2,) = [line for line in run.out.splitlines() if line.startswith("h2:")]
    assert "would remove qwen2.5:0.5b" in h2, run.describe()


def cell(frame: tuple[str, ...], host: str, column: str) -> str | None:
    """A cell of the live table (columns found from the header's words)."""
    header = next((row for row in frame if re.match(r"\s*host\s+state\s", row)), None)
    row = next((r for r in frame if r.strip().startswith(host + " ")), None)
    if header is None or row is None:
        return None
    names = [(m.start(), m.group()) for m in re.finditer(r"\S+", header)]
    for i, (start, name) in enumerate(names):
        if name == column:
            end = names[i + 1][0] if i + 1 < len(names) else len(row)
            return row[start:end].strip()
    return None


def test_live_table_counts_missing_models_while_they_download(fleet: Fleet) -> None:
    inventory, env = fleet(download_rate=600e6)
    run = run_in_terminal("fleet", "-i", inventory, "--no-verify", env=env, columns=120,
                          rows=40)
    assert run.code == 0, run.describe()
    pulling = [frame for _, frame in run.frames if cell(frame, "h1", "state") == "pulling"]
    assert pulling, run.describe()
    assert all(cell(frame, "h1", "missing") for frame in pulling), "\n".join(pulling[-1])


def test_a_current_fleet_says_there_is_no_drift(fleet: Fleet) -> None:
    inventory, env = fleet(installed=("llama3.2:1b",))
    run = run_plain("fleet", "-i", inventory, "--no-verify", env=env)
    assert run.code == 0, run.describe()
    assert any(line.startswith("drift:") for line in run.out.splitlines()), run.describe()


def test_a_log_says_each_host_once(fleet: Fleet) -> None:
    inventory, env = fleet()
    run = run_plain("fleet", "-i", inventory, "--no-verify", env=env)
    assert run.code == 0, run.describe()
    assert_nothing_twice(run.lines, context=run.describe())


def final_tables(run: ScreenRun) -> int:
    return len([line for line in run.output if re.match(r"\s*host\s+state\s", line)])


def test_the_report_is_what_the_readme_says(fleet: Fleet) -> None:
    inventory, env = fleet()
    run = run_in_terminal("fleet", "-i", inventory, "--no-verify", env=env, columns=120, rows=40)
    assert run.code == 0, run.describe()
    readme = " ".join((ROOT / "README.md").read_text().split())
    if "then a table per host" in readme:
        assert final_tables(run) == 2, run.describe()


def test_the_report_fits_80_columns(fleet: Fleet) -> None:
    inventory, env = fleet(names=("", ""))  # named by their address, as by default
    run = run_in_terminal("fleet", "-i", inventory, "--no-verify", env=env)
    assert run.code == 0, run.describe()
    assert "…" not in run.text, run.describe()
    assert_fits(run)
