"""`fleet`: the same declared models on every host, concurrently, drift shown.

Each host runs its own pipeline (host.py) in its own daemon thread; at most
`concurrency` hosts are worked on at once. The main thread only starts hosts, collects
their results, enforces each host's time limit and drives the view. A host that runs
past its limit is told to stop and no longer waited for: its slot goes to the next host
(its thread ends by itself, at the latest when its own request timeouts fire). A
host's failure is data in its HostResult, never an exception that reaches the others.

With `--sync` and a person at the terminal, every host is surveyed first, the models to
remove are listed and confirmed, then the hosts converge; otherwise each host surveys and
converges in one go (a slow host never holds up the rest).

Where the models come from is one choice for the whole fleet: the registry (each host
pulls), a bundle (`--bundle`: this machine uploads, and drift is against the bundle), or
the seed cache (`--seed`: each model downloaded here once, then uploaded); uploads from
this machine are bounded fleet-wide (`--uploads`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Protocol

from provision.bundle import (
    BundleReader,
    CacheStats,
    RegistrySource,
    SeedCache,
    SeedPush,
    StorePush,
    TransferOptions,
    default_cache_dir,
    store_manifest,
)
from provision.errors import EXIT_INTERRUPTED, EXIT_NOT_READY, EXIT_OK, EXIT_UNREACHABLE
from provision.fleet.host import (
    HostCancelled,
    HostResult,
    HostRun,
    HostState,
    HostStatus,
    RunOptions,
    Survey,
    cut_short,
)
from provision.fleet.inventory import FleetHost, FleetInventory
from provision.http import Timeouts
from provision.models import (
    FleetDrift,
    ModelSource,
    Reference,
    ReferenceDigest,
    RegistryClient,
    Target,
    fleet_drift,
    pull_names,
)
from provision.models.drift import BUNDLE
from provision.models.pull import PullOptions
from provision.names import ModelName

log = logging.getLogger(__name__)

TICK = 0.1  # seconds between the main loop's looks at deadlines and the view


@dataclass(frozen=True)
class FleetOptions:
    upgrade: bool = False
    sync: bool = False
    dry_run: bool = False
    verify: bool = True
    concurrency: int | None = None  # None: the inventory's [fleet].concurrency
    host_timeout: float | None = None  # None: each host's own (0: no limit)
    environ: dict[str, str] | None = None
    bundle: Path | None = None  # None: the inventory's [pull] bundle, if any
    seed: bool | None = None  # None: the inventory's [seed] enabled
    cache_dir: Path | None = None  # None: [seed] cache_dir, else the platform's
    cache_size: int | None = None  # None: [seed] cache_size
    uploads: int | None = None  # None: [fleet] uploads


@dataclass(frozen=True)
class ModelsFrom:
    """Where the fleet's models came from, for the report."""

    kind: str  # "registry", "bundle" or "seed"
    path: str | None = None  # the bundle file
    cache_dir: str | None = None  # the seed cache
    cache_size: int | None = None
    cache: CacheStats | None = None  # the seed cache's figures for this run

    def to_json(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"kind": self.kind}
        if self.path is not None:
            fields["path"] = self.path
        if self.cache_dir is not None:
            fields.update(cache_dir=self.cache_dir, cache_size=self.cache_size)
        return fields


@dataclass(frozen=True)
class FleetResult:
    source: str
    hosts: tuple[HostResult, ...]  # inventory order
    drift: tuple[FleetDrift, ...]
    exit_code: int
    options: FleetOptions
    concurrency: int
    duration: float
    cancelled: bool = False  # the person declined --sync's removals: nothing was changed
    models_from: ModelsFrom = ModelsFrom("registry")

    @property
    def sent_bytes(self) -> int:
        """Uploaded to the hosts by this machine (--bundle, --seed)."""
        return sum(h.sent_bytes for h in self.hosts)

    @property
    def hosts_sent(self) -> int:
        return sum(1 for h in self.hosts if h.sent_bytes)

    @property
    def ready(self) -> bool:
        return self.exit_code == EXIT_OK

    @property
    def changed(self) -> bool:
        return any(h.changed for h in self.hosts)

    @property
    def failing(self) -> tuple[HostResult, ...]:
        return tuple(h for h in self.hosts if not h.ready)


class FleetView(Protocol):
    """Shows the fleet while it runs (main thread only)."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...

    def tick(self) -> None: ...

    def finished(self, result: HostResult) -> None: ...


class NullView:
    """Shows nothing (`--quiet`, or no view asked)."""

    def __init__(self, statuses: Sequence[HostStatus] = ()) -> None:
        pass

    def __enter__(self) -> NullView:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def tick(self) -> None:
        pass

    def finished(self, result: HostResult) -> None:
        pass


# Removals per host, to be confirmed: [(host name, (model, ...)), ...] -> go ahead?
Confirm = Callable[[list[tuple[str, tuple[str, ...]]]], bool]
ViewFactory = Callable[[Sequence[HostStatus]], FleetView]


class FleetInterrupted(KeyboardInterrupt):
    """Ctrl-C: carries the fleet's result so far (unfinished hosts: interrupted)."""

    def __init__(self, result: FleetResult) -> None:
        super().__init__()
        self.result = result


class _Stopped(KeyboardInterrupt):
    def __init__(self, results: dict[str, Any]) -> None:
        super().__init__()
        self.results = results


Task = Callable[[], Any]


def _work(status: HostStatus, task: Task, done: queue.SimpleQueue[tuple[str, Any]]) -> None:
    name = status.host.name
    try:
        value: Any = task()
    except HostCancelled:
        value = None  # the main thread has recorded why it stopped this host
    except Exception as exc:  # noqa: BLE001 - one host's bug must not take the fleet down
        log.debug("host %s failed", name, exc_info=True)
        value = replace(cut_short(status, HostState.NOT_READY, "internal error"),
                        errors=(f"internal error: {type(exc).__name__}: {exc}",))
    status.finished = time.monotonic()
    done.put((name, value))


def _wave(jobs: list[tuple[HostStatus, Task]], concurrency: int, view: FleetView,
          limit_of: Callable[[FleetHost], float]) -> dict[str, Any]:
    """Run each job in its own thread, at most `concurrency` at once; returns name -> value
    (a HostResult or a Survey). Raises _Stopped on Ctrl-C with what is known."""
    results: dict[str, Any] = {}
    done: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    pending = deque(jobs)
    running: dict[str, tuple[HostStatus, float, float]] = {}  # name -> status, deadline, limit

    def record(name: str, value: Any) -> None:
        results[name] = value
        if isinstance(value, HostResult):
            view.finished(value)

    try:
        while pending or running:
            while pending and len(running) < concurrency:
                status, task = pending.popleft()
                limit = limit_of(status.host)
                deadline = time.monotonic() + limit if limit > 0 else math.inf
                running[status.host.name] = (status, deadline, limit)
                threading.Thread(target=_work, args=(status, task, done), daemon=True,
                                 name=f"host:{status.host.name}").start()
            soonest = min((d for _, d, _ in running.values()), default=math.inf)
            wait = max(0.001, min(TICK, soonest - time.monotonic()))
            got: list[tuple[str, Any]] = []
            try:
                got.append(done.get(timeout=wait))
                while True:
                    got.append(done.get_nowait())
            except queue.Empty:
                pass
            for name, value in got:
                # A host stopped for its time limit has its result already: a late
                # answer from its thread is dropped.
                if name in running and value is not None:
                    running.pop(name)
                    record(name, value)
            now = time.monotonic()
            for name, (status, deadline, limit) in list(running.items()):
                if now >= deadline:
                    status.cancel.set()  # its thread stops at its next step or pull event
                    running.pop(name)
                    record(name, cut_short(status, HostState.TIMED_OUT,
                                           f"no result within its time limit of {limit:g} s"))
            view.tick()
    except KeyboardInterrupt:
        for name, (status, _, _) in running.items():
            status.cancel.set()
            results[name] = cut_short(status, HostState.INTERRUPTED, "interrupted")
        for status, _ in pending:
            status.cancel.set()
            results[status.host.name] = cut_short(status, HostState.INTERRUPTED, "interrupted")
        raise _Stopped(results) from None
    return results


def run_fleet(inventory: FleetInventory, options: FleetOptions = FleetOptions(), *,
              view: ViewFactory | None = None, confirm: Confirm | None = None) -> FleetResult:
    """Bring every host of the inventory to its declared models. `confirm` is asked about
    `--sync` removals before anything changes (None: remove without asking)."""
    env = dict(os.environ if options.environ is None else options.environ)
    concurrency = max(1, options.concurrency or inventory.concurrency)
    backoff = PullOptions.backoff_from_env(env)
    run_options = RunOptions(upgrade=options.upgrade, sync=options.sync,
                             dry_run=options.dry_run, verify=options.verify,
                             pull=inventory.pull, verify_spec=inventory.verify,
                             backoff_base=backoff)
    statuses = [HostStatus(host) for host in inventory.hosts]
    started = time.monotonic()

    def limit_of(host: FleetHost) -> float:
        return options.host_timeout if options.host_timeout is not None else host.timeouts.total

    with contextlib.ExitStack() as sources:
        registry = sources.enter_context(RegistryClient(
            insecure=inventory.pull.insecure, environ=env,
            timeouts=Timeouts(connect=5.0, read=10.0)))
        digests, source, models_from, cache = _models_source(
            inventory, options, env, registry, sources, backoff)
        runs = {s.host.name: HostRun(s.host, run_options, digests, s, env, source)
                for s in statuses}

        def finish(results: dict[str, Any], *, code: int | None = None,
                   cancelled: bool = False) -> FleetResult:
            hosts = tuple(results[s.host.name] for s in statuses)
            if cache is not None:
                cache.close(interrupted=code == EXIT_INTERRUPTED)
            done = models_from if cache is None else replace(models_from, cache=cache.stats)
            return _result(inventory, options, concurrency, started, hosts, digests,
                           code=code, cancelled=cancelled, models_from=done)

        known: dict[str, Any] = {}  # results so far, for an interrupted run

        def wave(jobs: list[tuple[HostStatus, Task]]) -> dict[str, Any]:
            # One view per wave: it is closed while a person answers the --sync prompt.
            with (view or NullView)(statuses) as shown:
                results = _wave(jobs, concurrency, shown, limit_of)
            known.update(results)
            return results

        with contextlib.ExitStack() as cleanup:
            for run in runs.values():  # a surveyed host keeps its connection until then
                cleanup.callback(run.close)
            try:
                if not (options.sync and not options.dry_run and confirm is not None):
                    return finish(wave([(s, runs[s.host.name].run) for s in statuses]))
                surveys = wave([(s, runs[s.host.name].survey) for s in statuses])
                removals = [(s.host.name, surveys[s.host.name].undeclared) for s in statuses
                            if isinstance(surveys[s.host.name], Survey)
                            and surveys[s.host.name].undeclared]
                if removals and not confirm(removals):
                    # Declined: report what would have been done, change nothing.
                    dry = replace(run_options, dry_run=True)
                    results = {name: (HostRun(runs[name].host, dry, digests, runs[name].status,
                                              env, source).converge(value)
                                      if isinstance(value, Survey) else value)
                               for name, value in surveys.items()}
                    return finish(results, code=EXIT_NOT_READY, cancelled=True)
                jobs = [(s, _converge(runs[s.host.name], surveys[s.host.name]))
                        for s in statuses if isinstance(surveys[s.host.name], Survey)]
                results = {n: v for n, v in surveys.items() if isinstance(v, HostResult)}
                results.update(wave(jobs))
                return finish(results)
            except _Stopped as stop:
                partial = {**known, **stop.results}
                for s in statuses:
                    if not isinstance(partial.get(s.host.name), HostResult):
                        partial[s.host.name] = cut_short(s, HostState.INTERRUPTED, "interrupted")
                raise FleetInterrupted(finish(partial, code=EXIT_INTERRUPTED)) from None


def _converge(run: HostRun, survey: Survey) -> Task:
    return lambda: run.converge(survey)


def _models_source(inventory: FleetInventory, options: FleetOptions, env: dict[str, str],
                   registry: RegistryClient, cleanup: contextlib.ExitStack, backoff: float
                   ) -> tuple[Reference, ModelSource | None, ModelsFrom, SeedCache | None]:
    """What the hosts' weights are compared with, where their models come from, and
    (--seed) the cache. A bundle that lacks a declared model is refused here, before
    any host is contacted (BundleError, exit 2)."""
    transfer = TransferOptions(retries=inventory.pull.retries, backoff_base=backoff)
    uploads = threading.BoundedSemaphore(options.uploads or inventory.uploads)

    def slots() -> threading.BoundedSemaphore:  # one slot per blob upload, fleet-wide
        return uploads
    seed = inventory.seed
    bundle = options.bundle or (Path(inventory.pull.bundle) if inventory.pull.bundle else None)
    if options.bundle is None and (options.seed or (options.seed is None and seed.enabled)):
        bundle = None  # --seed: the inventory's bundle is not used
    if bundle is not None:
        reader = BundleReader(bundle)
        reader.select(_declared(inventory))
        reader.check()
        source = StorePush(reader, BUNDLE, transfer=transfer, upload_slot=slots)
        return (Reference(lambda name: store_manifest(reader, name), BUNDLE), source,
                ModelsFrom("bundle", path=str(bundle)), None)
    reference = Reference.of_registry(registry)
    if not (options.seed or (options.seed is None and seed.enabled)):
        return reference, None, ModelsFrom("registry"), None
    folder = options.cache_dir or (Path(seed.cache_dir) if seed.cache_dir else
                                   default_cache_dir(env))
    size = seed.cache_size if options.cache_size is None else options.cache_size
    downloads = cleanup.enter_context(RegistryClient(insecure=inventory.pull.insecure,
                                                     environ=env))
    cache = SeedCache(folder, size, RegistrySource(downloads, transfer))
    if not options.dry_run:
        cache.open()  # a folder that cannot be made is one error now, not one per host
    source = SeedPush(cache, reference, transfer=transfer, upload_slot=slots)
    return (reference, source,
            ModelsFrom("seed", cache_dir=str(folder), cache_size=size), cache)


def _declared(inventory: FleetInventory) -> list[ModelName]:
    """Every model a bundle must hold, each once: the declared models. A custom model's
    base need not be there (as for apply): a host that has it keeps it, and one that
    lacks it fails on its own, naming the bundle, with nothing sent to it."""
    return pull_names(Target.of(spec) for host in inventory.hosts for spec in host.models
                      if not spec.is_custom)


def _result(inventory: FleetInventory, options: FleetOptions, concurrency: int,
            started: float, hosts: tuple[HostResult, ...], digests: Reference, *,
            code: int | None, cancelled: bool,
            models_from: ModelsFrom = ModelsFrom("registry")) -> FleetResult:
    per_host = {h.name: h.drift for h in hosts if h.drift}
    reference: dict[str, ReferenceDigest] = {}
    for drifts in per_host.values():
        for d in drifts:
            known = digests.known(d.name)
            if known is not None:
                reference[d.name.short] = known
    if code is None:
        if hosts and all(h.state == HostState.UNREACHABLE for h in hosts):
            code = EXIT_UNREACHABLE
        else:
            code = EXIT_OK if all(h.ready for h in hosts) else EXIT_NOT_READY
    return FleetResult(source=inventory.source, hosts=hosts,
                       drift=tuple(fleet_drift(per_host, reference)), exit_code=code,
                       options=options, concurrency=concurrency,
                       duration=time.monotonic() - started, cancelled=cancelled,
                       models_from=models_from)
