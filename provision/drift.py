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

import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provision.errors import ProvisionError
from provision.names import ModelName

if TYPE_CHECKING:
    import httpx

    from provision.host import ServerAddress
    from provision.pull import PullOptions, PullOutcome, Reporter
    from provision.registry import RegistryClient

# States of one model on one server (stable: part of the `--json` schemas).
CURRENT = "current"  # the weights the registry serves now
STALE = "stale"  # other weights than the registry serves now: `--upgrade` pulls it again
MISSING = "missing"  # not on the server
UNKNOWN = "unknown"  # cannot tell: the registry or the server's weights digest is unreadable

_BLOB_AT_END = re.compile(r"sha256[-:]([0-9a-fA-F]{64})$")


def weights_digest(modelfile: str) -> str | None:
    """`sha256:<hex>` of the weights blob named by a modelfile's FROM line, else None.

    Line by line, with an anchored pattern: linear in the modelfile's length, whatever a
    server puts in it."""
    for line in (modelfile or "").splitlines():
        if line.startswith("FROM") and line[4:5].isspace():
            found = _BLOB_AT_END.search(line.rstrip())
            if found:
                return f"sha256:{found.group(1).lower()}"
    return None


def server_show(http: httpx.Client, name: ModelName) -> tuple[dict[str, Any] | None, str | None]:
    """(body, error) of `/api/show` for an installed model."""
    import httpx

    from provision.http import json_body

    try:
        response = http.post("/api/show", json={"model": name.short})
    except httpx.HTTPError as exc:
        return None, f"/api/show failed: {type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return None, f"/api/show answered HTTP {response.status_code}"
    try:
        body = json_body(response)
    except (ValueError, httpx.HTTPError):
        return None, "/api/show answered unreadable JSON"
    return (body, None) if isinstance(body, dict) else (None, "/api/show answered no object")


def weights_from_show(body: dict[str, Any] | None,
                      error: str | None) -> tuple[str | None, str | None]:
    """(digest, error) of the weights named in an `/api/show` body."""
    if body is None:
        return None, error
    digest = weights_digest(str(body.get("modelfile") or ""))
    return (digest, None) if digest else (None, "no FROM .../sha256-... line in the modelfile")


def server_weights(http: httpx.Client, name: ModelName) -> tuple[str | None, str | None]:
    """(digest, error) of an installed model's weights, from `/api/show`."""
    return weights_from_show(*server_show(http, name))


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
    state: str  # current / stale / missing / unknown
    digest: str | None = None  # the server's weights
    registry_digest: str | None = None
    error: str | None = None  # why the state is unknown

    @property
    def installed(self) -> bool:
        return self.state != MISSING


def judge(name: ModelName, installed: bool, digest: str | None, digest_error: str | None,
          registry: RegistryDigest | None) -> ModelDrift:
    if not installed:
        return ModelDrift(name, MISSING, registry_digest=registry.digest if registry else None)
    if digest is None:
        return ModelDrift(name, UNKNOWN, error=digest_error,
                          registry_digest=registry.digest if registry else None)
    if registry is None or registry.digest is None:
        why = registry.error if registry else "the registry was not asked"
        return ModelDrift(name, UNKNOWN, digest, error=f"registry: {why}")
    state = CURRENT if digest == registry.digest else STALE
    return ModelDrift(name, state, digest, registry.digest)


def check_server(http: httpx.Client, names: Iterable[ModelName], digests: RegistryDigests,
                 installed: Iterable[ModelName]) -> list[ModelDrift]:
    """Each of `names` on this server (its `/api/tags` names are `installed`)."""
    present = {n.key for n in installed}
    results = []
    for name in names:
        if name.key not in present:
            results.append(judge(name, False, None, None, None))
            continue
        digest, error = server_weights(http, name)
        results.append(judge(name, True, digest, error, digests.get(name)))
    return results


def needs_pull_again(drift: ModelDrift) -> bool:
    """`--upgrade`: stale, or present with an unknown state (pulling again is the only way
    to be sure; blobs the server already has are not downloaded again)."""
    return drift.state in (STALE, UNKNOWN)


# --- the fleet -------------------------------------------------------------------------


@dataclass(frozen=True)
class HostDigest:
    host: str
    state: str
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

    def with_state(self, state: str) -> tuple[str, ...]:
        return tuple(h.host for h in self.hosts if h.state == state)

    @property
    def outliers(self) -> tuple[str, ...]:
        """Hosts whose weights differ from the majority's."""
        return tuple(h.host for h in self.hosts if h.majority is False)

    @property
    def drifted(self) -> bool:
        return bool(self.with_state(STALE) or self.outliers)


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
             "stale": list(d.with_state(STALE)), "missing": list(d.with_state(MISSING)),
             "unknown": list(d.with_state(UNKNOWN)), "outliers": list(d.outliers),
             "hosts": [{"host": h.host, "state": h.state, "digest": h.digest,
                        "majority": h.majority} for h in d.hosts]}
            for d in report]


# --- one server: `pull --upgrade` ------------------------------------------------------


@dataclass(frozen=True)
class UpgradeResult:
    outcomes: tuple[PullOutcome, ...]  # one per name, in order
    drift: tuple[ModelDrift, ...]  # what was found before pulling


def pull_upgrade(address: ServerAddress, names: Sequence[ModelName], options: PullOptions,
                 reporter: Reporter | None = None, *,
                 environ: dict[str, str] | None = None,
                 timeouts: tuple[float, float] = (5.0, 30.0)) -> UpgradeResult:
    """Pull what is missing and pull again what is stale (or cannot be checked); models
    with the registry's current weights are left alone (status `present`)."""
    from dataclasses import replace

    from provision.http import Timeouts, client
    from provision.inventory import fetch_inventory
    from provision.pull import PRESENT, PullOutcome, pull_models
    from provision.registry import RegistryClient

    with client(address.url, loopback=address.is_loopback,
                timeouts=Timeouts.for_server(*timeouts)) as http, \
            RegistryClient(insecure=options.insecure, environ=environ) as registry:
        inventory = fetch_inventory(http)
        drift = check_server(http, names, RegistryDigests(registry),
                             [m.name for m in inventory.models])
    todo = [d.name for d in drift if d.state == MISSING or needs_pull_again(d)]
    pulled = {}
    if todo:
        # force: pull a present model again; for a missing one force changes nothing.
        outcomes = pull_models(address, todo, replace(options, force=True), reporter,
                               environ=environ)
        pulled = {o.name.key: o for o in outcomes}
    sizes = {m.name.key: m.size for m in inventory.models}
    final = tuple(pulled.get(d.name.key) or PullOutcome(name=d.name, status=PRESENT,
                                                        size=sizes.get(d.name.key, 0))
                  for d in drift)
    return UpgradeResult(outcomes=final, drift=tuple(drift))
