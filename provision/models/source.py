"""Where the models a server lacks come from: the server pulls them from the registry
(`ServerPull`), or this machine uploads them from a store it holds (a bundle, the seed
cache: `provision.bundle` implements `ModelSource` for those). `pull`, and the per-server
steps of `apply` and `fleet`, take either; only this one step differs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from provision.models.pull import PullOptions, PullOutcome, Reporter, pull_models
from provision.names import ModelName
from provision.server import OllamaServer

REGISTRY = "registry"


class ModelSource(Protocol):
    kind: str  # "registry", "bundle" or "seed" (the `--json` documents say it)
    label: str  # for messages: "the registry", "models.tar", "the seed cache"

    def provide(self, server: OllamaServer, names: list[ModelName], *, upgrade: bool,
                check_disk: bool, reporter: Reporter | None) -> list[PullOutcome]:
        """Put the models the server lacks on it (`upgrade`: also those it has with
        other weights); one outcome per name, in order, in pull's words. Raises
        ProvisionError when refused up front (a local disk too small), PullInterrupted
        on Ctrl-C."""
        ...


class ServerPull:
    """The server downloads from the registry itself (`POST /api/pull`)."""

    kind = REGISTRY
    label = "the registry"

    def __init__(self, options: PullOptions) -> None:
        self.options = options

    def provide(self, server: OllamaServer, names: list[ModelName], *, upgrade: bool,
                check_disk: bool, reporter: Reporter | None) -> list[PullOutcome]:
        # upgrade: pull present models again (for a missing one it changes nothing)
        options = replace(self.options, force=self.options.force or upgrade,
                          check_disk=check_disk)
        return pull_models(server, names, options, reporter)
