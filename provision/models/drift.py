"""Drift: does a server have the weights the reference has (what the registry serves now,
or a bundle), and the fleet's majority?

The comparison is made on the *weights* layer digest. `/api/tags` shows the manifest's
digest, which changes whenever any layer or the manifest's encoding changes, and never
matches the registry's weights digest: comparing it gives false "stale" results (Ollama's
own update check ran into that). The weights digest is on both sides:

- the server: `/api/show`'s `modelfile` has `FROM /.../blobs/sha256-<hex>`;
- the reference: the manifest's `application/vnd.ollama.image.model` layer (the
  registry's, or a bundle's when the models come from one).

`check_server()` answers for one server (`pull --upgrade`); `fleet_drift()` puts every
host's answers side by side and adds the majority; `Reference` reads each model's
manifest once for the whole fleet (hundreds of hosts must not mean hundreds of registry
requests per model) and keeps it (the seed cache downloads what it lists).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable

from provision.errors import ProvisionError
from provision.models.pull import PullOptions, PullOutcome, PullStatus, Reporter, pull_models
from provision.models.registry import ModelManifest, RegistryClient
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


REGISTRY, BUNDLE = "registry", "bundle"  # what a Reference reads


@dataclass(frozen=True)
class ReferenceDigest:
    digest: str | None  # `sha256:<hex>` of the weights layer the reference has
    error: str | None = None


class Reference:
    """The weights each model should have: its manifest read once (`read`: the registry's,
    or a bundle's) and shared by every host's thread (single flight: the first asker
    reads, the others wait for that answer)."""

    def __init__(self, read: Callable[[ModelName], ModelManifest], kind: str = REGISTRY
                 ) -> None:
        self.read = read
        self.kind = kind
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str, str, str], ModelManifest | ProvisionError] = {}
        self._flights: dict[tuple[str, str, str, str], threading.Lock] = {}

    @classmethod
    def of_registry(cls, registry: RegistryClient) -> Reference:
        return cls(registry.manifest, REGISTRY)

    def manifest(self, name: ModelName) -> ModelManifest:
        """The model's manifest; raises the ProvisionError reading it raised."""
        answer = self._answer(name)
        if isinstance(answer, ProvisionError):
            raise answer
        return answer

    def get(self, name: ModelName) -> ReferenceDigest:
        return self._digest(self._answer(name))

    def known(self, name: ModelName) -> ReferenceDigest | None:
        """The answer when it was read already (never reads)."""
        with self._lock:
            answer = self._known.get(name.key)
        return None if answer is None else self._digest(answer)

    def _answer(self, name: ModelName) -> ModelManifest | ProvisionError:
        with self._lock:
            if name.key in self._known:
                return self._known[name.key]
            flight = self._flights.setdefault(name.key, threading.Lock())
        with flight:
            with self._lock:
                if name.key in self._known:
                    return self._known[name.key]
            answer: ModelManifest | ProvisionError
            try:
                answer = self.read(name)
            except ProvisionError as exc:
                answer = exc
            with self._lock:
                self._known[name.key] = answer
            return answer

    def _digest(self, answer: ModelManifest | ProvisionError) -> ReferenceDigest:
        if isinstance(answer, ProvisionError):
            return ReferenceDigest(None, answer.message)
        weights = answer.weights
        if weights is None:
            return ReferenceDigest(None, f"the {self.kind}'s manifest has no weights layer")
        return ReferenceDigest(weights.digest.lower())


@dataclass(frozen=True)
class ModelDrift:
    """One model on one server."""

    name: ModelName
    state: DriftState
    digest: str | None = None  # the server's weights
    reference_digest: str | None = None  # the weights it should have
    error: str | None = None  # why the state is unknown

    @property
    def installed(self) -> bool:
        return self.state != DriftState.MISSING


def drift_of(name: ModelName, installed: bool, digest: str | None, digest_error: str | None,
             reference: ReferenceDigest | None, kind: str = REGISTRY) -> ModelDrift:
    if not installed:
        return ModelDrift(name, DriftState.MISSING,
                          reference_digest=reference.digest if reference else None)
    if digest is None:
        return ModelDrift(name, DriftState.UNKNOWN, error=digest_error,
                          reference_digest=reference.digest if reference else None)
    if reference is None or reference.digest is None:
        why = reference.error if reference else f"the {kind} was not asked"
        return ModelDrift(name, DriftState.UNKNOWN, digest, error=f"{kind}: {why}")
    state = DriftState.CURRENT if digest == reference.digest else DriftState.STALE
    return ModelDrift(name, state, digest, reference.digest)


def check_server(server: OllamaServer, names: Iterable[ModelName],
                 digests: Reference) -> list[ModelDrift]:
    """Each of `names` on this server, against the reference."""
    inventory = server.tags()
    results = []
    for name in names:
        if inventory.find(name) is None:
            results.append(drift_of(name, False, None, None, None))
            continue
        digest, error = server_weights(server, name)
        results.append(drift_of(name, True, digest, error, digests.get(name), digests.kind))
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
    reference_digest: str | None  # the weights the reference has
    reference_error: str | None
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
                reference: Mapping[str, ReferenceDigest]) -> list[FleetDrift]:
    """Per model (first-seen order): every host's state and whether it has the majority's
    weights. `reference` maps short names to what the reference has."""
    models: dict[str, list[tuple[str, ModelDrift]]] = {}
    for host, drifts in per_host.items():
        for drift in drifts:
            models.setdefault(drift.name.short, []).append((host, drift))
    report = []
    for model, rows in models.items():
        top = majority([d.digest for _, d in rows if d.digest])
        answer = reference.get(model)
        report.append(FleetDrift(
            model=model,
            reference_digest=answer.digest if answer else None,
            reference_error=answer.error if answer else None,
            majority_digest=top,
            hosts=tuple(HostDigest(host, d.state, d.digest,
                                   None if d.digest is None or top is None else d.digest == top)
                        for host, d in rows)))
    return report


def drift_to_json(report: Sequence[FleetDrift], reference: str = REGISTRY
                  ) -> list[dict[str, Any]]:
    """`reference`: what the weights were compared with (`registry` or `bundle`); the
    `registry_*` keys are kept for scripts that read them (null for a bundle)."""
    registry = reference == REGISTRY
    return [{"model": d.model, "reference": reference, "reference_digest": d.reference_digest,
             "reference_error": d.reference_error,
             "registry_digest": d.reference_digest if registry else None,
             "registry_error": d.reference_error if registry else None,
             "majority_digest": d.majority_digest,
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
        drift = check_server(server, names, Reference.of_registry(registry))
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
