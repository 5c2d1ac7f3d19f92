"""Fixtures for the tests against the real Ollama 0.32.15 and the real registry.

Every test here is marked `integration` (`pytest -m "not integration"` leaves them out).
Servers are started once per module and reused by its tests (`watched_servers`), or
per test (`start_server`); the registry once per session; `ollama_dist`, the runnable
copy they start from, is in tests/conftest.py. When a test fails, the log of every
server running at the time is attached to its report. `closed_proxies()` (tests.real)
keeps the tool from reaching anything beyond loopback; servers have it already.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.real import RealOllama, Registry, cli_env, servers, shared_ollama

ACTIVE: list[RealOllama] = []  # servers running now, for the failure report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in ACTIVE:
            report.sections.append((f"ollama serve log ({srv.url})", srv.log_tail(80)))


@contextlib.contextmanager
def watched_servers(dist: Path, root: Path, count: int, **kwargs: Any
                    ) -> Iterator[list[RealOllama]]:
    """`servers(...)`, whose logs go into the report of a test that fails meanwhile."""
    with servers(dist, root, count, **kwargs) as found:
        ACTIVE.extend(found)
        try:
            yield found
        finally:
            for srv in found:
                ACTIVE.remove(srv)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, ollama_dist: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def real_server(ollama_dist: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealOllama]:
    """One real server for the module, holding `tiny`."""
    with watched_servers(ollama_dist, tmp_path_factory.mktemp("srv"), 1) as (srv,):
        yield srv


@pytest.fixture(scope="module")
def empty_server(ollama_dist: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealOllama]:
    """One real server for the module with no model at all."""
    with watched_servers(ollama_dist, tmp_path_factory.mktemp("srv"), 1,
                         with_tiny=False) as (srv,):
        yield srv


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A user's environment without OLLAMA_HOST (each test adds the server it means)."""
    return cli_env(tmp_path / "user-home")


@pytest.fixture
def start_server(ollama_dist: Path, tmp_path: Path) -> Iterator[Callable[..., RealOllama]]:
    """Servers of the test's own: `start_server()` an empty one, `start_server(tiny=True)`
    one holding `tiny`; stopped after the test."""
    started: list[RealOllama] = []

    def start(tiny: bool = False) -> RealOllama:
        srv = RealOllama(ollama_dist, tmp_path / f"server-{len(started)}",
                         models_from=shared_ollama() / "models" if tiny else None)
        started.append(srv)
        ACTIVE.append(srv)
        return srv.start()

    yield start
    for srv in started:
        ACTIVE.remove(srv)
        srv.stop()
