"""One host of a fleet: check → plan (drift, undeclared) → remove → pull → create → verify.

Runs in its own thread (fleet.run starts one per host, bounded). Everything it learns
ends in a frozen HostResult; while it runs it writes its live state to a HostStatus that
the fleet's view reads. It talks only to its own host, through one `OllamaServer` with
the host's own timeouts (every answer that does not change is asked once: hundreds of
hosts, every request counts), and, through the shared `Reference`, reads each model's
manifest (the registry's, or a bundle's) once for the whole fleet; so a slow or dead
host costs only its own thread. Pull, create and verify are the steps `apply` runs
(`ServerSteps`); the models come from the registry, or (`--bundle`, `--seed`) the
fleet's `ModelSource` uploads them from this machine.

Cancellation (the host ran past its time limit, or Ctrl-C) is cooperative: the host
checks between steps, and during a pull its progress reporter raises HostCancelled,
which makes pull_models drop its streams and return.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from provision.errors import ProvisionError
from provision.fleet.inventory import FleetHost
from provision.http import Timeouts
from provision.models import (
    Checked,
    CreateOutcome,
    CreateStatus,
    DriftState,
    ModelDrift,
    ModelSource,
    PullSpec,
    Reference,
    ServerSteps,
    Target,
    Verification,
    VerifySpec,
    drift_of,
    needs_pull_again,
    pull_names,
    server_weights,
)
from provision.models.pull import (
    BlobProgress,
    ModelFinished,
    ModelStarted,
    PullEvent,
    PullOutcome,
    Retrying,
)
from provision.names import ModelName, parse_name
from provision.result import Status
from provision.server import InstalledModel, OllamaServer, ServerError

ModelKey = tuple[str, str, str, str]


class HostState(Status):
    """Where a host is (stable: part of the `--json` schema; the first ones live only)."""

    WAITING = "waiting"
    CHECKING = "checking"
    PLANNING = "planning"
    REMOVING = "removing"
    PULLING = "pulling"
    CREATING = "creating"
    VERIFYING = "verifying"
    READY = "ready"  # every required model present (and verified)
    NOT_READY = "not-ready"  # reachable, but a required model is missing or failed
    UNREACHABLE = "unreachable"  # no Ollama server answers at the host's URL
    TIMED_OUT = "timed-out"  # its run took longer than its host_timeout
    INTERRUPTED = "interrupted"  # Ctrl-C


FINAL_STATES = (HostState.READY, HostState.NOT_READY, HostState.UNREACHABLE,
                HostState.TIMED_OUT, HostState.INTERRUPTED)


class HostModelStatus(Status):
    """A declared model on a host after the run (stable: part of the `--json` schema)."""

    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    PENDING = "pending"  # a dry run: it would be pulled


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
        self.state = HostState.WAITING
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
class HostModelResult:
    """One declared model on one host, after the run."""

    name: str
    required: bool
    custom: bool = False
    drift: DriftState | None = None  # as found (None: a custom model)
    digest_before: str | None = None  # weights found on the host
    digest: str | None = None  # weights after the run
    action: str | None = None  # pulled / updated / unchanged / created; dry run: pull,
    # pull again, create
    status: HostModelStatus = HostModelStatus.OK
    error: str | None = None
    verification: Verification | None = None
    sent_bytes: int = 0  # uploaded to the host by this machine (--bundle, --seed)
    blobs_sent: int = 0


@dataclass(frozen=True)
class HostResult:
    name: str
    url: str
    labels: tuple[tuple[str, str], ...]
    groups: tuple[str, ...]
    state: HostState  # one of FINAL_STATES
    version: str | None = None
    models: tuple[HostModelResult, ...] = ()
    drift: tuple[ModelDrift, ...] = ()  # the pulled models after the run (dry run: as found)
    undeclared: tuple[str, ...] = ()  # on the host, not in the inventory
    removed: tuple[str, ...] = ()  # of those, removed (--sync)
    errors: tuple[str, ...] = ()
    diagnosis: str | None = None  # unreachable: the probe's diagnosis kind
    duration: float = 0.0
    sent_bytes: int = 0  # uploaded to it by this machine (--bundle, --seed)

    @property
    def ready(self) -> bool:
        return self.state == HostState.READY

    @property
    def changed(self) -> bool:
        return bool(self.removed) or any(m.status == HostModelStatus.CHANGED for m in self.models)



@dataclass(frozen=True)
class Survey:
    """What the host has, as found: the plan's input (and all a dry run reports)."""

    version: str | None
    installed: tuple[InstalledModel, ...]
    drift: tuple[ModelDrift, ...]  # one per pulled name (declared models, custom bases)
    undeclared: tuple[str, ...]
    started: float


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
            self.status.model(event.model, "ok" if event.ok else "failed")


class HostRun:
    def __init__(self, host: FleetHost, options: RunOptions, digests: Reference,
                 status: HostStatus, environ: dict[str, str] | None = None,
                 source: ModelSource | None = None) -> None:
        self.host = host
        self.options = options
        self.digests = digests
        self.status = status
        self.address = host.address
        self.targets = [Target.of(spec) for spec in host.models]
        self.pull_names = pull_names(self.targets)
        t = host.timeouts
        # One server (one kept-alive connection) for all of the host's short requests.
        self.server = OllamaServer(host.address, environ=environ, timeouts=Timeouts.for_server(
            max(t.connect, 0.1), max(t.read, 0.1)))
        self.steps = ServerSteps(self.server, options.pull, options.verify_spec,
                                 backoff_base=options.backoff_base,
                                 connect_timeout=max(t.connect, 0.1), source=source)

    # --- helpers -------------------------------------------------------------------------
    def close(self) -> None:
        self.server.close()

    def _state(self, state: HostState) -> None:
        if self.status.cancel.is_set():
            raise HostCancelled
        self.status.state = state

    def _result(self, state: HostState, started: float, **fields: Any) -> HostResult:
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
        started = time.monotonic()
        self.status.started = started
        self._state(HostState.CHECKING)
        found = self.server.probe()
        if found.diagnosis is not None:
            self.close()
            return self._result(HostState.UNREACHABLE, started,
                                errors=(found.diagnosis.message,),
                                diagnosis=found.diagnosis.kind)
        self._state(HostState.PLANNING)
        try:
            inventory = self.server.tags()
        except ProvisionError as exc:
            self.close()
            return self._result(HostState.NOT_READY, started, version=found.version,
                                errors=(exc.message,))
        drift = []
        for name in self.pull_names:
            if inventory.find(name) is None:
                drift.append(drift_of(name, False, None, None, None))
                self.status.model(name.short, "missing")
                continue
            digest, error = server_weights(self.server, name)
            found_drift = drift_of(name, True, digest, error, self.digests.get(name),
                                   self.digests.kind)
            drift.append(found_drift)
            self.status.model(name.short, "ok" if found_drift.state == DriftState.CURRENT
                              else found_drift.state)
        declared = {n.key for n in self.pull_names} | {t.name.key for t in self.targets}
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
        todo = [d.name for d in survey.drift
                if d.state == DriftState.MISSING or (self.options.upgrade and needs_pull_again(d))]
        if self.options.dry_run:
            return self._report(survey, {}, {}, {}, set(todo), (), [])
        if self.options.sync and survey.undeclared:
            self._state(HostState.REMOVING)
            removed = self._remove(survey.undeclared, errors)
        outcomes: dict[ModelKey, PullOutcome] = {}
        if todo:
            self._state(HostState.PULLING)
            outcomes = self._pull(todo, errors)
        after: dict[ModelKey, str | None] = {}
        created: dict[ModelKey, CreateOutcome] = {}
        verified: dict[ModelKey, Checked] = {}
        for name in todo:  # what did the pull leave on the host?
            outcome = outcomes.get(name.key)
            if outcome is not None and outcome.ok:
                after[name.key] = server_weights(self.server, name)[0]
        if any(t.spec.is_custom for t in self.targets):
            self._state(HostState.CREATING)
            present = {d.name.key for d in survey.drift if d.state != DriftState.MISSING}
            created = self.steps.create(self.targets, outcomes, present)
        if self.options.verify and self.options.verify_spec.enabled:
            self._state(HostState.VERIFYING)
            verified = self._verify(survey, outcomes, created)
        return self._report(survey, outcomes, after, created, set(), removed, errors,
                            verified)

    # --- steps ---------------------------------------------------------------------------
    def _remove(self, names: tuple[str, ...], errors: list[str]) -> tuple[str, ...]:
        removed = []
        for name in names:
            self._state(HostState.REMOVING)
            try:
                if self.server.delete(parse_name(name)):
                    removed.append(name)  # else gone already: nothing to do
            except ServerError as exc:
                why = f"HTTP {exc.status}" if exc.status is not None else exc.reason
                errors.append(f"could not remove {name}: {why}")
        return tuple(removed)

    def _pull(self, todo: list[ModelName], errors: list[str]) -> dict[ModelKey, PullOutcome]:
        try:
            # The host's disk is not this machine's: its server reports a full disk itself
            # (a blob it cannot store is a failed upload).
            return self.steps.pull(todo, _Reporter(self.status), force=self.options.upgrade,
                                   check_disk=False)
        except ProvisionError as exc:
            errors.append(exc.message)
            return {}

    def _verify(self, survey: Survey, outcomes: dict[ModelKey, PullOutcome],
                created: dict[ModelKey, CreateOutcome]) -> dict[ModelKey, Checked]:
        drift = {d.name.key: d for d in survey.drift}
        verified = {}
        for target in self.targets:
            name, pulled = target.name, target.pull_name
            outcome = outcomes.get(pulled.key)
            if outcome is not None and not outcome.ok:
                continue
            if outcome is None and drift[pulled.key].state == DriftState.MISSING:
                continue
            made = created.get(name.key)
            if target.spec.is_custom and made is not None \
                    and made.status == CreateStatus.FAILED:
                continue
            self._state(HostState.VERIFYING)
            self.status.model(name.short, "verifying")
            checked = self.steps.verify(target)
            verified[name.key] = checked
            self.status.model(name.short, "ok" if checked.verification.ok else "failed")
        return verified

    # --- the result ----------------------------------------------------------------------
    def _report(self, survey: Survey, outcomes: dict[ModelKey, PullOutcome],
                after: dict[ModelKey, str | None], created: dict[ModelKey, CreateOutcome],
                pending: set[ModelName], removed: tuple[str, ...], errors: list[str],
                verified: dict[ModelKey, Checked] | None = None) -> HostResult:
        verified = verified or {}
        pending_keys = {n.key for n in pending}
        drift = {d.name.key: d for d in survey.drift}
        models = []
        for target in self.targets:
            spec, name, pulled = target.spec, target.name, target.pull_name
            found = drift[pulled.key]
            outcome = outcomes.get(pulled.key)
            status, action, error = HostModelStatus.OK, None, None
            if pulled.key in pending_keys:
                # A dry run: a missing model keeps the host from being ready; a stale one
                # that would be pulled again is there and usable. A custom model is
                # created (from its base, pulled first).
                verb = "pull" if self.steps.source.kind == "registry" else "push"
                status, action = (HostModelStatus.PENDING, verb) \
                    if found.state == DriftState.MISSING else (HostModelStatus.OK,
                                                               f"{verb} again")
                if spec.is_custom:
                    action = "create"
            elif outcome is not None:
                action = outcome.status
                if not outcome.ok:
                    status = HostModelStatus.FAILED
                    error = outcome.error.message if outcome.error else outcome.status
                    if spec.is_custom:
                        error = f"its base {pulled.short} failed to pull: {error}"
                elif outcome.changed:
                    status = HostModelStatus.CHANGED
            elif found.state == DriftState.MISSING:  # a pull that never ran (errors say why)
                status = HostModelStatus.FAILED
                error = f"its base {pulled.short} is not on the host" if spec.is_custom \
                    else "not on the host"
            if spec.is_custom and status != HostModelStatus.FAILED and name.key in created:
                made = created[name.key]
                action = made.status
                if made.status == CreateStatus.CREATED:
                    status = HostModelStatus.CHANGED
                elif made.status == CreateStatus.FAILED:
                    status, error = HostModelStatus.FAILED, made.error
            checked = verified.get(name.key)
            if checked is not None and checked.problem and status != HostModelStatus.FAILED:
                status, error = HostModelStatus.FAILED, f"verify: {checked.problem}"
            # what was sent counts once, for the model that asked for it (not its custom
            # models built on it)
            sent = outcome if outcome is not None and not spec.is_custom else None
            models.append(HostModelResult(
                name=name.short, required=spec.required, custom=spec.is_custom,
                drift=None if spec.is_custom else found.state, digest_before=found.digest,
                digest=None if spec.is_custom else after.get(pulled.key, found.digest),
                action=action, status=status, error=error,
                verification=checked.verification if checked else None,
                sent_bytes=sent.sent_bytes if sent else 0,
                blobs_sent=sent.blobs_sent if sent else 0))
        failed = [m for m in models if m.required
                  and m.status in (HostModelStatus.FAILED, HostModelStatus.PENDING)]
        now = []  # the pulled models' drift after the run: what the fleet report shows
        for found in survey.drift:
            outcome = outcomes.get(found.name.key)
            if outcome is not None and outcome.ok:
                digest = after.get(found.name.key)
                now.append(drift_of(found.name, True, digest, None if digest else
                                    "weights digest unreadable after the pull",
                                    self.digests.get(found.name), self.digests.kind))
            else:
                now.append(found)
        all_errors = list(errors) + [f"{m.name}: {m.error}" for m in models
                                     if m.status == HostModelStatus.FAILED and m.error]
        state = HostState.NOT_READY if failed or errors else HostState.READY
        return self._result(state, survey.started, version=survey.version,
                            models=tuple(models), drift=tuple(now),
                            undeclared=survey.undeclared, removed=removed,
                            errors=tuple(all_errors),
                            sent_bytes=sum(o.sent_bytes for o in outcomes.values()))


def cut_short(status: HostStatus, state: HostState, why: str) -> HostResult:
    """The result of a host the fleet stopped waiting for, saying what it had got to."""
    host = status.host
    where = "not started" if status.state == HostState.WAITING else status.state
    busy = [f"{n} {m.percent:.0f}%" for n, m in status.models.items()
            if m.status == "pulling" and m.percent is not None]
    detail = f"{why} (it was {where}" + (f": {', '.join(busy)}" if busy else "") + ")"
    started = status.started if status.started is not None else time.monotonic()
    return HostResult(name=host.name, url=host.address.url, labels=host.labels,
                      groups=host.groups, state=state, errors=(detail,),
                      duration=time.monotonic() - started)
