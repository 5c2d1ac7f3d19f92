"""Clients of a provisioned server, each pointed at it the way it reads an address.

One module per client, each defining `CLIENT`: an `EnvClient` (environment variables,
printed by `ollama-provision env`) or a `ConfigClient` (a config file of the tool's own,
written by `config --client NAME` and by `apply`'s `[clients]`). Adding a tool is adding
a module here; the registry finds it. Modules whose name starts with `_` are helpers.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from provision.clients._base import (
    CLIENT_OPTIONS,
    ClientOptions,
    ConfigClient,
    ConfigOutcome,
    ConfigRequest,
    EnvClient,
    EnvVar,
)
from provision.clients._env import (
    ENV_OPTIONS,
    EnvOptions,
    EnvPlan,
    env_fields,
    env_result,
    plan_env,
    render_env,
)
from provision.clients._files import FileResult, replace_file
from provision.errors import UsageError


@lru_cache(maxsize=1)
def _registry() -> dict[str, ConfigClient | EnvClient]:
    found: dict[str, ConfigClient | EnvClient] = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        client = getattr(importlib.import_module(f"{__name__}.{module.name}"), "CLIENT", None)
        if isinstance(client, (ConfigClient, EnvClient)):
            found[client.name] = client
    return found


def config_clients() -> dict[str, ConfigClient]:
    """Clients with a config file of their own, by name (`codex` first: the default)."""
    found = {n: c for n, c in _registry().items() if isinstance(c, ConfigClient)}
    return dict(sorted(found.items(), key=lambda item: item[0] != "codex"))


def env_clients() -> dict[str, EnvClient]:
    """Clients that read environment variables, by name."""
    return {n: c for n, c in _registry().items() if isinstance(c, EnvClient)}


def config_client(name: str) -> ConfigClient:
    clients = config_clients()
    if name not in clients:
        raise UsageError(f"no config client '{name}'; known: {', '.join(clients)}",
                         hint="for tools that read environment variables, see "
                         "`ollama-provision env --help`")
    return clients[name]


def env_client(name: str) -> EnvClient:
    clients = env_clients()
    if name not in clients:
        raise UsageError(f"no environment client '{name}'; known: {', '.join(clients)}")
    return clients[name]


__all__ = [
    "CLIENT_OPTIONS", "ENV_OPTIONS", "ClientOptions", "ConfigClient", "ConfigOutcome",
    "ConfigRequest", "EnvClient", "EnvOptions", "EnvPlan", "EnvVar", "FileResult",
    "config_client", "config_clients", "env_client", "env_clients", "env_fields",
    "env_result", "plan_env", "render_env", "replace_file",
]
