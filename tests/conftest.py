"""Shared fixtures: an Ollama test double (and its registry) on loopback for every test.

- `ollama`: a started `OllamaTestServer()` with defaults (no model installed), stopped after.
- `make_ollama(**kwargs)`: a factory of started servers (any constructor argument), all
  stopped after the test.
- `not_ollama`: a started `NotOllamaServer()` (nginx-like web server on the port).
- `make_not_ollama(kind=...)`: a factory of those ("nginx", "raw", "silent").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.ollama_server import NotOllamaServer, OllamaTestServer


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
