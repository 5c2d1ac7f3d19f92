"""Shared fixtures: an Ollama test double (and its registry) on loopback for every test.

- `ollama`: a started `OllamaTestServer()` with defaults (no model installed), stopped after.
- `make_ollama(**kwargs)`: a factory of started servers (any constructor argument), all
  stopped after the test.
- `not_ollama`: a started `NotOllamaServer()` (nginx-like web server on the port).
- `make_not_ollama(kind=...)`: a factory of those ("nginx", "raw", "silent").
- `make_hostile(upstream=None)`: a factory of started `HostileServer`s (tests/double/hostile.py):
  chosen paths misbehave, the rest is relayed to `upstream` (an Ollama double's URL).
- `ollama_dist`: a runnable copy of the real Ollama from the shared folder (tests/real),
  once per session; the tests that ask for it skip (or, in CI, fail) where it cannot run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.double import NotOllamaServer, OllamaTestServer
from tests.double.hostile import HostileServer
from tests.real import require_server, runnable_copy


@pytest.fixture
def ollama() -> Iterator[OllamaTestServer]:
    with OllamaTestServer() as srv:
        yield srv


@pytest.fixture
def make_ollama() -> Iterator[Callable[..., OllamaTestServer]]:
    servers: list[OllamaTestServer] = []

    def factory(**kwargs: Any) -> OllamaTestServer:
        srv = OllamaTestServer(**kwargs)
        servers.append(srv)
        return srv.start()

    yield factory
    for srv in servers:
        srv.stop()


@pytest.fixture
def not_ollama() -> Iterator[NotOllamaServer]:
    with NotOllamaServer() as srv:
        yield srv


@pytest.fixture
def make_not_ollama() -> Iterator[Callable[..., NotOllamaServer]]:
    servers: list[NotOllamaServer] = []

    def factory(kind: str = "nginx", **kwargs: Any) -> NotOllamaServer:
        srv = NotOllamaServer(kind, **kwargs)
        servers.append(srv)
        return srv.start()

    yield factory
    for srv in servers:
        srv.stop()


@pytest.fixture
def make_hostile() -> Iterator[Callable[..., HostileServer]]:
    servers: list[HostileServer] = []

    def factory(upstream: str | None = None) -> HostileServer:
        srv = HostileServer(upstream)
        servers.append(srv)
        return srv.start()

    yield factory
    for srv in servers:
        srv.stop()


@pytest.fixture(scope="session")
def ollama_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_server()
    return runnable_copy(tmp_path_factory.mktemp("ollama-dist"))


@pytest.fixture
def pull_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A clean environment for pull tests: models dir in tmp, near-instant backoff, no
    terminal forced, no proxies or OLLAMA_HOST from the developer's shell."""
    for var in ("OLLAMA_HOST", "FORCE_COLOR", "OLLAMA_PROVISION_REGISTRY", "HTTPS_PROXY",
                "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("OLLAMA_PROVISION_RETRY_BASE", "0.01")
