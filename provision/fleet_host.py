"""One host of a fleet: check → plan (drift, undeclared) → remove → pull → create → verify.

Runs in its own thread (fleet.py starts one per host, bounded). Everything it learns
ends in a frozen HostResult; while it runs it writes its live state to a HostStatus that
the fleet's view reads. It talks only to its own host (and, through the shared
RegistryDigests, reads each model's registry manifest once for the whole fleet), with the
host's own timeouts, so a slow or dead host costs only its own thread.

Cancellation (the host ran past its time limit, or Ctrl-C) is cooperative: the host
checks between steps, and during a pull its progress reporter raises HostCancelled,
which makes pull_models drop its streams and return.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provision.drift import (
    MISSING,
    ModelDrift,
    RegistryDigests,
    judge,
    needs_pull_again,
    server_show,
    weights_from_show,
)
from provision.errors import ProvisionError
from provision.fleet_inventory import FleetHost
from provision.manifest import ModelSpec, PullSpec, VerifySpec
from provision.names import ModelName, parse_name
from provision.pull import BlobProgress, ModelFinished, ModelStarted, PullEvent, Retrying

if TYPE_CHECKING:
    import httpx

    from provision.inventory import InstalledModel
    from provision.verify import Verification

# Host states (stable: part of the `--json` schema). The first ones are live only.
WAITING, CHECKING, PLANNING, REMOVING, PULLING, CREATING, VERIFYING = (
    "waiting", "checking", "planning", "removing", "pulling", "creating", "verifying")
READY = "ready"  # every required model present (and verified)
NOT_READY = "not-ready"  # reachable, but a required model is missing or failed
UNREACHABLE = "unreachable"  # no Ollama server answers at the host's URL
TIMED_OUT = "timed-out"  # its run took longer than its host_timeout
INTERRUPTED = "interrupted"  # Ctrl-C
FINAL_STATES = (READY, NOT_READY, UNREACHABLE, TIMED_OUT, INTERRUPTED)

# Model statuses (stable).
OK, CHANGED, FAILED, PENDING = "ok", "changed", "failed", "pending"  # pending: dry run


class HostCancelled(Exception):
    """Raised inside a host's thread to stop its work (time limit or Ctrl-C)."""


@dataclass(frozen=True)
class RunOptions:
    upgrade: bool = False  # pull stale models again
    sync: bool = False  # remove undeclared models
    dry_run: bool = False  # find out and plan, change nothing
    verify: bool = True
    pull: PullSpec = PullSpec()
    verify_spec: VerifySpec = VerifySpec()
    backoff_base: float = 1.0


class ModelLive:
    """A model's live progress on one host (for the view)."""

    __slots__ = ("status", "blobs")

    def __init__(self, status: str) -> None:
        self.status = status  # ok / missing / stale / pulling / failed / ...
        self.blobs: dict[str, tuple[int, int]] = {}  # digest -> (furthest completed, total)

    @property
    def percent(self) -> float | None:
        blobs = list(self.blobs.values())  # one atomic copy: the host's thread adds blobs
        total = sum(t for _, t in blobs)
        return 100.0 * sum(c for c, _ in blobs) / total if total else None


class HostStatus:
    """Live state of one host: written only by its own thread, read by the view.

    Plain attribute writes (atomic under the GIL) and no lock: the view may draw a
    state a few milliseconds old, never a torn one that matters."""

    def __init__(self, host: FleetHost) -> None:
        self.host = host
        self.state = WAITING
        self.models: dict[str, ModelLive] = {}
        self.note = ""
        self.started: float | None = None
        self.finished: float | None = None
        self.cancel = threading.Event()

    def model(self, name: str, status: str | None = None) -> ModelLive:
        live = self.models.get(name)
        if live is None:
            live = self.models[name] = ModelLive(status or "unknown")
        elif status is not None:
            live.status = status
        return live


@dataclass(frozen=True)
class ModelResult:
    name: str
    required: bool
    custom: bool = False
    drift: str | None = None  # as found: current / stale / missing / unknown (None: custom)
    digest_before: str | None = None  # weights found on the host
    digest: str | None = None  # weights after the run
    action: str | None = None  # pulled / updated / unchanged / created / None
    status: str = OK  # ok / changed / failed / pending
    error: str | None = None
    verification: Verification | None = None


@dataclass(frozen=True)
class HostResult:
    name: str
    url: str
    labels: tuple[tuple[str, str], ...]
    groups: tuple[str, ...]
    state: str  # one of FINAL_STATES
    version: str | None = None
    models: tuple[ModelResult, ...] = ()
    drift: tuple[ModelDrift, ...] = ()  # the pulled models after the run (dry run: as found)
    undeclared: tuple[str, ...] = ()  # on the host, not in the inventory
    removed: tuple[str, ...] = ()  # of those, removed (--sync)
    errors: tuple[str, ...] = ()
    diagnosis: str | None = None  # unreachable: the probe's diagnosis kind
    duration: float = 0.0

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def changed(self) -> bool:
        return bool(self.removed) or any(m.status == CHANGED for m in self.models)


@dataclass(frozen=True)
class Survey:
    """What the host has, as found: the plan's input (and all a dry run reports)."""

    version: str | None
    installed: tuple[InstalledModel, ...]
    drift: tuple[ModelDrift, ...]  # one per pulled name (declared models, custom bases)
    undeclared: tuple[str, ...]
    started: float


def pull_names(specs: tuple[ModelSpec, ...]) -> list[ModelName]:
    """What is downloaded: each declared model, a custom model's base instead of it."""
    names: dict[tuple[str, str, str, str], ModelName] = {}
    for spec in specs:
        name = parse_name(spec.base or spec.name or "")
        names.setdefault(name.key, name)
    return list(names.values())


class _Reporter:
    """pull_models' events → the host's live status; raises when the host is cancelled."""

    def __init__(self, status: HostStatus) -> None:
        self.status = status

    def handle(self, event: PullEvent) -> None:
        if self.status.cancel.is_set():
            raise HostCancelled
        if isinstance(event, BlobProgress):
            live = self.status.model(event.model)
            done = live.blobs.get(event.digest, (0, 0))[0]
            # Ollama moves a blob back when it retries a part: show the furthest point.
            live.blobs[event.digest] = (max(done, min(event.completed, event.total)),
                                        event.total)
        elif isinstance(event, ModelStarted):
            self.status.model(event.model, "pulling").blobs.clear()
        elif isinstance(event, Retrying):
            self.status.note = f"{event.model}: retry {event.retry}: {event.error.message}"
        elif isinstance(event, ModelFinished):
            outcome = event.outcome
            self.status.model(outcome.name.short, "ok" if outcome.ok else "failed")


class HostRun:
    def __init__(self, host: FleetHost, options: RunOptions, digests: RegistryDigests,
                 status: HostStatus, environ: dict[str, str] | None = None) -> None:
        self.host = host
        self.options = options
        self.digests = digests
        self.status = status
        self.environ = environ
        self.address = host.address
        self.pull_names = pull_names(host.models)
        self._http: httpx.Client | None = None
        # /api/show bodies by model key: read once, used for the weights digest and then
        # for the capabilities the verify step needs (hundreds of hosts: every request
        # counts).
        self._shows: dict[tuple[str, str, str, str], dict[str, Any] | None] = {}

    # --- helpers -------------------------------------------------------------------------
    @property
    def http(self) -> httpx.Client:
        """One client (one kept-alive connection) for all of the host's short requests."""
        if self._http is None:
            from provision.http import Timeouts, client

            t = self.host.timeouts
            self._http = client(self.address.url, loopback=self.address.is_loopback,
                                timeouts=Timeouts.for_server(max(t.connect, 0.1),
                                                             max(t.read, 0.1)))
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _show(self, name: ModelName) -> tuple[dict[str, Any] | None, str | None]:
        body, error = server_show(self.http, name)
        self._shows[name.key] = body
        return body, error

    def _state(self, state: str) -> None:
        if self.status.cancel.is_set():
            raise HostCancelled
        self.status.state = state

    def _result(self, state: str, started: float, **fields: Any) -> HostResult:
        h = self.host
        return HostResult(name=h.name, url=self.address.url, labels=h.labels, groups=h.groups,
                          state=state, duration=time.monotonic() - started, **fields)

    # --- the whole run -------------------------------------------------------------------
    def run(self) -> HostResult:
        try:
            survey = self.survey()
            return survey if isinstance(survey, HostResult) else self.converge(survey)
        finally:
            self.close()

    def survey(self) -> Survey | HostResult:
        """Check the server, list its models, judge the declared ones against the registry."""
        from provision.inventory import fetch_inventory
        from provision.probe import probe

        started = time.monotonic()
        self.status.started = started
        self._state(CHECKING)
        found = probe(self.address, environ=self.environ, http=self.http)
        if found.diagnosis is not None:
            self.close()
            return self._result(UNREACHABLE, started, errors=(found.diagnosis.message,),
                                diagnosis=found.diagnosis.kind)
        self._state(PLANNING)
        try:
            inventory = fetch_inventory(self.http)
        except ProvisionError as exc:
            self.close()
            return self._result(NOT_READY, started, version=found.version,
                                errors=(exc.message,))
        drift = []
        for name in self.pull_names:
            installed = inventory.find(name) is not None
            if not installed:
                drift.append(judge(name, False, None, None, None))
                self.status.model(name.short, "missing")
                continue
            digest, error = weights_from_show(*self._show(name))
            judged = judge(name, True, digest, error, self.digests.get(name))
            drift.append(judged)
            self.status.model(name.short, "ok" if judged.state == "current" else judged.state)
        declared = {n.key for n in self.pull_names} | {
            parse_name(s.name or "").key for s in self.host.models}
        undeclared = tuple(m.name.short for m in inventory.models if m.name.key not in declared)
        return Survey(version=found.version, installed=inventory.models, drift=tuple(drift),
                      undeclared=undeclared, started=started)

    def converge(self, survey: Survey) -> HostResult:
        try:
            return self._converge(survey)
        finally:
            self.close()

    def _converge(self, survey: Survey) -> HostResult:
        errors: list[str] = []
        removed: tuple[str, ...] = ()
        by_key = {d.name.key: d for d in survey.drift}
        todo = [d.name for d in survey.drift
                if d.state == MISSING or (self.options.upgrade and needs_pull_again(d))]
        if self.options.dry_run:
            return self._report(survey, {}, {}, {}, set(todo), (), [])
        if self.options.sync and survey.undeclared:
            self._state(REMOVING)
            removed = self._remove(survey.undeclared, errors)
        outcomes: dict[tuple[str, str, str, str], Any] = {}
        if todo:
            self._state(PULLING)
            outcomes = self._pull(todo, errors)
        after: dict[tuple[str, str, str, str], str | None] = {}
        created: dict[tuple[str, str, str, str], Any] = {}
        verified: dict[tuple[str, str, str, str], Verification] = {}
        for name in todo:  # what did the pull leave on the host?
            outcome = outcomes.get(name.key)
            if outcome is not None and outcome.ok:
                after[name.key] = weights_from_show(*self._show(name))[0]
        if any(s.is_custom for s in self.host.models):
            self._state(CREATING)
            created = self._create(self.http, by_key, outcomes)
        if self.options.verify and self.options.verify_spec.enabled:
            self._state(VERIFYING)
            verified = self._verify(self.http, by_key, outcomes, created)
        return self._report(survey, outcomes, after, created, set(), removed, errors,
                            verified)

    # --- steps ---------------------------------------------------------------------------
    def _remove(self, names: tuple[str, ...], errors: list[str]) -> tuple[str, ...]:
        import httpx

        removed = []
        for name in names:
            self._state(REMOVING)
            try:
                response = self.http.request("DELETE", "/api/delete", json={"model": name})
            except httpx.HTTPError as exc:
                errors.append(f"could not remove {name}: {exc}")
                continue
            if response.status_code == 200:
                removed.append(name)
            elif response.status_code != 404:  # 404: gone already, nothing to do
                errors.append(f"could not remove {name}: HTTP {response.status_code}")
        return tuple(removed)

    def _pull(self, todo: list[ModelName], errors: list[str]) -> dict[Any, Any]:
        from provision.pull import PullOptions, pull_models

        spec = self.options.pull
        options = PullOptions(
            force=self.options.upgrade, insecure=spec.insecure, parallel=spec.parallel,
            stall_timeout=spec.stall_timeout, retries=spec.retries,
            backoff_base=self.options.backoff_base,
            # The host's disk is not this machine's: its server reports a full disk itself.
            check_disk=False, connect_timeout=max(self.host.timeouts.connect, 0.1))
        try:
            outcomes = pull_models(self.address, todo, options, _Reporter(self.status),
                                   environ=self.environ)
        except ProvisionError as exc:
            errors.append(exc.message)
            return {}
        return {o.name.key: o for o in outcomes}

    def _create(self, http: httpx.Client, drift: dict[Any, ModelDrift],
                outcomes: dict[Any, Any]) -> dict[Any, Any]:
        from provision.create import CustomModel, ensure_custom_model

        created = {}
        for spec in self.host.models:
            if not spec.is_custom:
                continue
            self._state(CREATING)
            name, base = parse_name(spec.name or ""), parse_name(spec.base or "")
            outcome = outcomes.get(base.key)
            if (outcome is not None and not outcome.ok) or (
                    outcome is None and drift[base.key].state == MISSING):
                continue  # its base is not there: reported with the base
            created[name.key] = ensure_custom_model(http, CustomModel(
                name=name, base=base, system=spec.system, template=spec.template,
                parameters=tuple(spec.parameters.items())))
        return created

    def _verify(self, http: httpx.Client, drift: dict[Any, ModelDrift],
                outcomes: dict[Any, Any], created: dict[Any, Any]) -> dict[Any, Verification]:
        from provision.verify import verify_model

        spec = self.options.verify_spec
        verified = {}
        for model in self.host.models:
            name = parse_name(model.name or "")
            pulled = parse_name(model.base or model.name or "")
            outcome = outcomes.get(pulled.key)
            if outcome is not None and not outcome.ok:
                continue
            if outcome is None and drift[pulled.key].state == MISSING:
                continue
            if model.is_custom and getattr(created.get(name.key), "status", "") == "failed":
                continue
            self._state(VERIFYING)
            self.status.model(name.short, "verifying")
            show = self._shows.get(name.key) if name.key in self._shows else \
                server_show(http, name)[0]
            capabilities = (show or {}).get("capabilities") or []
            embedding = "embedding" in capabilities and "completion" not in capabilities
            result = verify_model(http, name, num_ctx=model.num_ctx, keep_alive=model.keep_alive,
                                  generate=spec.generate, prompt=spec.prompt,
                                  num_predict=spec.num_predict, embedding=embedding)
            verified[name.key] = result
            self.status.model(name.short, "ok" if result.ok else "failed")
        return verified

    # --- the result ----------------------------------------------------------------------
    def _report(self, survey: Survey, outcomes: dict[Any, Any], after: dict[Any, str | None],
                created: dict[Any, Any], pending: set[ModelName], removed: tuple[str, ...],
                errors: list[str], verified: dict[Any, Verification] | None = None
                ) -> HostResult:
        verified = verified or {}
        pending_keys = {n.key for n in pending}
        drift = {d.name.key: d for d in survey.drift}
        min_rate = self.options.verify_spec.min_tokens_per_second
        models = []
        for spec in self.host.models:
            name = parse_name(spec.name or "")
            pulled = parse_name(spec.base or spec.name or "")
            found = drift[pulled.key]
            outcome = outcomes.get(pulled.key)
            status, action, error = OK, None, None
            if pulled.key in pending_keys:
                # A dry run: a missing model keeps the host from being ready; a stale one
                # that would be pulled again is there and usable.
                status, action = (PENDING, "pull") if found.state == MISSING else (
                    OK, "pull again")
            elif outcome is not None:
                action = outcome.status
                if not outcome.ok:
                    status = FAILED
                    error = outcome.error.message if outcome.error else outcome.status
                    if spec.is_custom:
                        error = f"its base {pulled.short} failed to pull: {error}"
                elif outcome.status in ("pulled", "updated"):
                    status = CHANGED
            elif found.state == MISSING:
                status, error = FAILED, "not on the host"  # a pull that never ran
            if spec.is_custom and status != FAILED and name.key in created:
                made = created[name.key]
                action = made.status
                if made.status == "created":
                    status = CHANGED
                elif made.status == "failed":
                    status, error = FAILED, made.error
            check = verified.get(name.key)
            if check is not None and status != FAILED:
                problem = check.error
                rate = check.tokens_per_second
                if check.ok and min_rate and rate is not None and rate < min_rate:
                    problem = f"{rate:.1f} tokens/s, below the required {min_rate:g}"
                if problem:
                    status, error = FAILED, f"verify: {problem}"
            models.append(ModelResult(
                name=name.short, required=spec.required, custom=spec.is_custom,
                drift=None if spec.is_custom else found.state, digest_before=found.digest,
                digest=None if spec.is_custom else after.get(pulled.key, found.digest),
                action=action, status=status, error=error, verification=check))
        failed = [m for m in models if m.required and m.status in (FAILED, PENDING)]
        now = []  # the pulled models' drift after the run: what the fleet report shows
        for found in survey.drift:
            outcome = outcomes.get(found.name.key)
            if outcome is not None and outcome.ok:
                digest = after.get(found.name.key)
                now.append(judge(found.name, True, digest, None if digest else
                                 "weights digest unreadable after the pull",
                                 self.digests.get(found.name)))
            else:
                now.append(found)
        all_errors = list(errors) + [f"{m.name}: {m.error}" for m in models
                                     if m.status == FAILED and m.error]
        state = NOT_READY if failed or errors else READY
        return self._result(state, survey.started, version=survey.version,
                            models=tuple(models), drift=tuple(now),
                            undeclared=survey.undeclared, removed=removed,
                            errors=tuple(all_errors))


def cut_short(status: HostStatus, state: str, why: str) -> HostResult:
    """The result of a host the fleet stopped waiting for, saying what it had got to."""
    host = status.host
    where = "not started" if status.state == WAITING else status.state
    busy = [f"{n} {m.percent:.0f}%" for n, m in status.models.items()
            if m.status == "pulling" and m.percent is not None]
    detail = f"{why} (it was {where}" + (f": {', '.join(busy)}" if busy else "") + ")"
    started = status.started if status.started is not None else time.monotonic()
    return HostResult(name=host.name, url=host.address.url, labels=host.labels,
                      groups=host.groups, state=state, errors=(detail,),
                      duration=time.monotonic() - started)


__all__ = ["HostRun", "HostStatus", "HostResult", "ModelResult", "RunOptions", "Survey",
           "HostCancelled", "cut_short"]
