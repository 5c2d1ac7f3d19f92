"""The two kinds of client, and what each produces.

An `EnvClient` reads the server's address from environment variables (`env` prints them);
a `ConfigClient` reads it from a config file of its own (`config --client NAME` edits it).
Each client module defines one of them as `CLIENT`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from provision.clients._files import FileResult
from provision.server import ServerAddress
from provision.tables import Schema, is_bool, is_text


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str
    client: str  # the client that reads it (named in clash messages)
    # Whether two values mean the same to that client (two spellings of one address);
    # None: only the same text does.
    same: Callable[[str, str], bool] | None = None

    def means(self, other: str) -> bool:
        if other == self.value:
            return True
        return bool(self.same and self.same(self.value, other))


@dataclass(frozen=True)
class EnvClient:
    name: str
    summary: str  # who reads these variables, in a phrase
    variables: Callable[[ServerAddress], tuple[EnvVar, ...]]
    default: bool = True  # printed by `env` when no --client is named
    notes: Callable[[ServerAddress], tuple[str, ...]] = field(default=lambda _address: ())


@dataclass(frozen=True)
class ConfigRequest:
    """What `config --client NAME` and `apply` ask of a config client."""

    address: ServerAddress
    model: str | None  # the chat model
    embedding_model: str | None = None
    output: str | None = None  # the file to write (created, or edited in place)
    set_default: bool = False  # make these the tool's default models
    dry_run: bool = False
    environ: Mapping[str, str] | None = None


@dataclass(frozen=True)
class ConfigOutcome:
    """What a config client wrote (or, in a dry run, would write)."""

    client: str
    file: FileResult
    models: tuple[tuple[str, str], ...]  # (role, model): ("chat", "qwen2.5:7b"), ...
    usage: str  # how to use it, in a command
    warnings: tuple[str, ...] = ()
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.file.changed)


@dataclass(frozen=True)
class ClientOptions:
    """[clients.NAME] of a config client in apply's manifest (Codex has [codex]'s)."""

    path: str  # the tool's config file (created when missing)
    model: str | None = None  # default: the manifest's first required chat model
    embedding_model: str | None = None  # default: the manifest's embedding model, if any
    set_default: bool = False  # make them the tool's default models


# key -> (check, what is expected, ClientOptions field)
CLIENT_OPTIONS: Schema = {
    "path": (is_text, "the tool's config file path", "path"),
    "model": (is_text, "a model name", "model"),
    "embedding_model": (is_text, "a model name", "embedding_model"),
    "set_default": (is_bool, "true or false", "set_default"),
}


@dataclass(frozen=True)
class ConfigClient:
    name: str
    summary: str
    # Writes the config; None for Codex, which `config`'s own flags and apply's configure
    # step drive (provision.clients.codex).
    configure: Callable[[ConfigRequest], Any] | None = None


def server_url(address: ServerAddress) -> str:
    """The server's URL as people write it: the scheme's own port (80, 443) left out."""
    default = 443 if address.scheme == "https" else 80
    port = "" if address.port == default else f":{address.port}"
    return f"{address.scheme}://{address.netloc.rsplit(':', 1)[0]}{port}{address.path}"


def same_url(a: str, b: str) -> bool:
    """One URL, with or without a trailing slash."""
    return a.rstrip("/") == b.rstrip("/")
