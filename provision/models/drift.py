"""Drift: does a server have the weights the registry serves now, and the fleet's majority?

The comparison is made on the *weights* layer digest. `/api/tags` shows the manifest's
digest, which changes whenever any layer or the manifest's encoding changes, and never
matches the registry's weights digest: comparing it gives false "stale" results (Ollama's
own update check ran into that). The weights digest is on both sides:

- the server: `/api/show`'s `modelfile` has `FROM /.../blobs/sha256-<hex>`;
- the registry: the manifest's `application/vnd.ollama.image.model` layer.

`check_server()` answers for one server (`pull --upgrade`); `fleet_drift()` puts every
host's answers side by side and adds the majority; `RegistryDigests` reads each model's
registry manifest once for the whole fleet (hundreds of hosts must not mean hundreds of
registry requests per model).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from provision.errors import ProvisionError
from provision.models.pull import PullOptions, PullOutcome, PullStatus, Reporter, pull_models
from provision.models.registry import RegistryClient
from provision.names import ModelName
from provision.result import Status
from provision.server import OllamaServer, ServerError


class DriftState(Status):
    """One model on one server (stable: part of the `--json` schemas)."""

    CURRENT = "current"  # the weights the registry serves now
    STALE = "stale"  # other weights than the registry serves now: `--upgrade` pulls again
    MISSING = "missing"  # not on the server
    UNKNOWN = "unknown"  # cannot tell: the registry or the server's weights are unreadable



def server_weights(server: OllamaServer, name: ModelName) -> tuple[str | None, str | None]:
    """(digest, error) of an installed model's weights, from its `/api/show`."""
    try:
        show = server.show(name)
    except ServerError as exc:
        return None, (f"{exc.request} answered HTTP {exc.status}"
                      if exc.status not in (None, 200) else exc.message)
    if show is None:
        return None, "the server lists the model but does not show it (HTTP 404)"
    if show.weights is None:
        return None, "no FROM .../sha256-... line in the modelfile"
    return show.weights, None


@dataclass(frozen=True)
class RegistryDigest:
    digest: str | None  # `sha256:<hex>` of the weights layer the registry serves now
    error: str | None = None


class RegistryDigests:
    """The registry's weights digest per model, read once and shared by every host's
    thread (single flight: the first asker reads, the others wait for that answer)."""

    def __init__(self, registry: RegistryClient) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str, str, str], RegistryDigest] = {}
        self._flights: dict[tuple[str, str, str, str], threading.Lock] = {}

    def get(self, name: ModelName) -> RegistryDigest:
        with self._lock:
            if name.key in self._known:
                return self._known[name.key]
            flight = self._flights.setdefault(name.key, threading.Lock())
        with flight:
            with self._lock:
                if name.key in self._known:
                    return self._known[name.key]
            answer = self._read(name)
            with self._lock:
                self._known[name.key] = answer
            return answer

    def known(self, name: ModelName) -> RegistryDigest | None:
        """The answer when it was read already (never asks the registry)."""
        with self._lock:
            return self._known.get(name.key)

    def _read(self, name: ModelName) -> RegistryDigest:
        try:
            weights = self.registry.manifest(name).weights
        except ProvisionError as exc:
            return RegistryDigest(None, exc.message)
        if weights is None:
            return RegistryDigest(None, "the registry's manifest has no weights layer")
        return RegistryDigest(weights.digest.lower())


@dataclass(frozen=True)
class ModelDrift:
    """One model on one server."""

    name: ModelName
    state: DriftState
    digest: str | None = None  # the server's weights
    registry_digest: str | None = None
    error: str | None = None  # why the state is unknown

    @property
    def installed(self) -> bool:
        return self.state != DriftState.MISSING


def drift_of(name: ModelName, installed: bool, digest: str | None, digest_error: str | None,
          registry: RegistryDigest | None) -> ModelDrift:
    if not installed:
        return ModelDrift(name, DriftState.MISSING,
                          registry_digest=registry.digest if registry else None)
    if digest is None:
        return ModelDrift(name, DriftState.UNKNOWN, error=digest_error,
                          registry_digest=registry.digest if registry else None)
    if registry is None or registry.digest is None:
        why = registry.error if registry else "the registry was not asked"
        return ModelDrift(name, DriftState.UNKNOWN, digest, error=f"registry: {why}")
    state = DriftState.CURRENT if digest == registry.digest else DriftState.STALE
    return ModelDrift(name, state, digest, registry.digest)


def check_server(server: OllamaServer, names: Iterable[ModelName],
                 digests: RegistryDigests) -> list[ModelDrift]:
    """Each of `names` on this server, against the registry."""
    inventory = server.tags()
    results = []
    for name in names:
        if inventory.find(name) is None:
            results.append(drift_of(name, False, None, None, None))
            continue
        digest, error = server_weights(server, name)
        results.append(drift_of(name, True, digest, error, digests.get(name)))
    return results


def needs_pull_again(drift: ModelDrift) -> bool:
    """`--upgrade`: stale, or present with an unknown state (pulling again is the only way
    to be sure; blobs the server already has are not downloaded again)."""
    return drift.state in (DriftState.STALE, DriftState.UNKNOWN)


# --- the fleet -------------------------------------------------------------------------


@dataclass(frozen=True)
class HostDigest:
    host: str
    state: DriftState
    digest: str | None
    majority: bool | None  # has the majority's weights (None: missing or unknown)


@dataclass(frozen=True)
class FleetDrift:
    """One model across the fleet."""

    model: str
    registry_digest: str | None
    registry_error: str | None
    majority_digest: str | None  # the weights most hosts have (None: a tie or none)
    hosts: tuple[HostDigest, ...]

    def with_state(self, state: DriftState) -> tuple[str, ...]:
        return tuple(h.host for h in self.hosts if h.state == state)

    @property
    def outliers(self) -> tuple[str, ...]:
        """Hosts whose weights differ from the majority's."""
        return tuple(h.host for h in self.hosts if h.majority is False)

    @property
    def drifted(self) -> bool:
        return bool(self.with_state(DriftState.STALE) or self.outliers)


def majority(digests: Sequence[str]) -> str | None:
    """The most common digest; None when there is none or the top is a tie."""
    ranked = Counter(digests).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def fleet_drift(per_host: Mapping[str, Sequence[ModelDrift]],
                registry: Mapping[str, RegistryDigest]) -> list[FleetDrift]:
    """Per model (first-seen order): every host's state and whether it has the majority's
    weights. `registry` maps short names to what the registry serves."""
    models: dict[str, list[tuple[str, ModelDrift]]] = {}
    for host, drifts in per_host.items():
        for drift in drifts:
            models.setdefault(drift.name.short, []).append((host, drift))
    report = []
    for model, rows in models.items():
        top = majority([d.digest for _, d in rows if d.digest])
        answer = registry.get(model)
        report.append(FleetDrift(
            model=model,
            registry_digest=answer.digest if answer else None,
            registry_error=answer.error if answer else None,
            majority_digest=top,
            hosts=tuple(HostDigest(host, d.state, d.digest,
                                   None if d.digest is None or top is None else d.digest == top)
                        for host, d in rows)))
    return report


def drift_to_json(report: Sequence[FleetDrift]) -> list[dict[str, Any]]:
    return [{"model": d.model, "registry_digest": d.registry_digest,
             "registry_error": d.registry_error, "majority_digest": d.majority_digest,
             "stale": list(d.with_state(DriftState.STALE)),
             "missing": list(d.with_state(DriftState.MISSING)),
             "unknown": list(d.with_state(DriftState.UNKNOWN)), "outliers": list(d.outliers),
             "hosts": [{"host": h.host, "state": h.state, "digest": h.digest,
                        "majority": h.majority} for h in d.hosts]}
            for d in report]


# --- one server: `pull --upgrade` ------------------------------------------------------


@dataclass(frozen=True)
class UpgradeResult:
    outcomes: tuple[PullOutcome, ...]  # one per name, in order
    drift: tuple[ModelDrift, ...]  # what was found before pulling


def pull_upgrade(server: OllamaServer, names: Sequence[ModelName], options: PullOptions,
                 reporter: Reporter | None = None) -> UpgradeResult:
    """Pull what is missing and pull again what is stale (or cannot be checked); models
    with the registry's current weights are left alone (status `present`)."""
    with RegistryClient(insecure=options.insecure, environ=server.environ) as registry:
        drift = check_server(server, names, RegistryDigests(registry))
    inventory = server.tags()
    todo = [d.name for d in drift if d.state == DriftState.MISSING or needs_pull_again(d)]
    pulled = {}
    if todo:
        # force: pull a present model again; for a missing one force changes nothing.
        outcomes = pull_models(server, todo, replace(options, force=True), reporter)
        pulled = {o.name.key: o for o in outcomes}
    sizes = {m.name.key: m.size for m in inventory.models}
    final = tuple(pulled.get(d.name.key) or PullOutcome(name=d.name, status=PullStatus.PRESENT,
                                                        size=sizes.get(d.name.key, 0))
                  for d in drift)
    return UpgradeResult(outcomes=final, drift=tuple(drift))
