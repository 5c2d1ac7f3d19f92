"""`apply`: the whole job from one manifest, step by step, each step `ok` or `changed`.

check → hardware → plan → pull (and create) → verify → configure (Codex, then the
other [clients]) → report. One `OllamaServer` serves every step, so each thing about the
server is asked once; pull, create and verify are the steps `fleet` runs on each host
(`ServerSteps`). Every step ends in a frozen StepResult; the models' outcomes are
gathered in ApplyModelResults; `ApplyResult.exit_code` follows the documented exit codes.

With a bundle (`[pull] bundle`, `--bundle`) the models come from it: it is opened and
checked against the declared models before the first step, the hardware and the plan
read it where they would read the registry, and the pull step uploads from it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, NamedTuple

from provision.apply.log import StepLog
from provision.apply.manifest import ApplyManifest, ClientsSpec
from provision.apply.result import ApplyModelResult, ApplyResult, StepResult, StepStatus
from provision.bundle import BundleError, BundleReader, StoreFiles, StorePush, TransferOptions
from provision.clients import (
    ClientOptions,
    ConfigRequest,
    EnvOptions,
    config_client,
    env_client,
    env_clients,
    env_fields,
    plan_env,
    render_env,
    replace_file,
)
from provision.clients.codex import CodexConfigRequest, check_codex_version, configure_codex
from provision.errors import (
    EXIT_INTERRUPTED,
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ProvisionError,
    UsageError,
)
from provision.hardware import (
    DEFAULT_MIN_TOKENS_PER_SECOND,
    GateDecision,
    Machine,
    Verdict,
    gate,
    parse_assume,
    probe_machine,
    speed_range,
    speed_words,
)
from provision.http import Timeouts
from provision.models import (
    ModelFiles,
    ModelSpec,
    RegistryClient,
    RegistryError,
    ServerSteps,
    SkipUnreachable,
    Target,
    build_plan,
    check_endpoint,
    pull_names,
)
from provision.models.progress import make_reporter
from provision.models.pull import PullInterrupted, PullOptions, PullOutcome, PullStatus
from provision.names import ModelName, parse_name
from provision.output import human_bytes, short_path
from provision.server import (
    WORTH_WAITING,
    DiagnosisKind,
    OllamaServer,
    detect_install,
    resolve_host,
)
from provision.server.start import start_server
from provision.versions import RESPONSES_API_MIN_OLLAMA, at_least

OK, CHANGED, FAILED, SKIPPED = (StepStatus.OK, StepStatus.CHANGED, StepStatus.FAILED,
                                StepStatus.SKIPPED)
INTERRUPTED_TEXT = ("interrupted: run the same command again to resume (the server keeps "
                    "what was downloaded)")


class Done(NamedTuple):
    """How a step's body ended: its status, a summary, its data, the errors (reasons)
    and what to do about them."""

    status: StepStatus
    summary: str
    data: dict[str, Any]
    errors: list[str]
    fixes: tuple[str, ...] = ()


StepBody = Callable[[], "tuple[StepStatus, str, dict[str, Any], list[str]] | Done"]


@dataclass(frozen=True)
class ApplyOptions:
    host: str | None = None  # --host; else [server].host; else OLLAMA_HOST / default
    dry_run: bool = False
    start: bool = False  # also start `ollama serve` when installed but not running
    wait: float | None = None  # None: the manifest's [server].wait
    ignore_hardware: bool = False  # pull and use models the hardware gate refuses
    require: str | None = None  # --require; None: the manifest's [hardware]
    pull: dict[str, Any] | None = None  # [pull] keys given on the command line
    verify: bool = True
    assume: tuple[str, ...] = ()  # judge this described machine instead of probing
    codex_version: str | None = None
    codex_home: str | None = None
    environ: dict[str, str] | None = None
    bundle: str | None = None  # --bundle: replaces the manifest's [pull] bundle


class _Run:
    """One apply run: state shared between the steps, which run in order."""

    def __init__(self, manifest: ApplyManifest, options: ApplyOptions, log: StepLog,
                 progress_stream: IO[str], terminal: bool) -> None:
        self.manifest = manifest
        self.options = options
        self.log = log
        self.progress_stream = progress_stream
        self.terminal = terminal
        self.env = dict(os.environ if options.environ is None else options.environ)
        self.steps: list[StepResult] = []
        self.models: dict[str, ApplyModelResult] = {}
        self.decisions: list[GateDecision] = []
        self.version: str | None = None
        self.models_dir: str | None = None
        self.would_pull = False  # the plan found models to pull or create
        self.registry_down: dict[str, RegistryError] = {}  # hosts that did not answer
        self.usage_error = False
        # Input errors are found here, before any step runs (exit 2, nothing done):
        # --host, else the manifest's [server].host, else OLLAMA_HOST, else the default.
        self.address = resolve_host(options.host or manifest.server.host, environ=self.env)
        spec = manifest.server
        backoff = PullOptions.backoff_from_env(self.env)
        self.pull_spec = replace(manifest.pull, **(options.pull or {}))
        self.bundle = self._open_bundle(options.bundle or manifest.pull.bundle)
        source = None if self.bundle is None else StorePush(
            self.bundle, "bundle", transfer=TransferOptions(
                retries=self.pull_spec.retries, backoff_base=backoff,
                connect_timeout=spec.connect_timeout, read_timeout=spec.read_timeout))
        self.server = OllamaServer(
            self.address, environ=self.env,
            timeouts=Timeouts.for_server(spec.connect_timeout, spec.read_timeout))
        self.on_server = ServerSteps(
            self.server, self.pull_spec, manifest.verify, backoff_base=backoff,
            connect_timeout=spec.connect_timeout, source=source)
        self.assumption = parse_assume(list(options.assume)) if options.assume else None
        if options.codex_version is not None:
            check_codex_version(options.codex_version)
        home = options.codex_home or manifest.codex.codex_home
        if manifest.codex.enabled and home:
            path = Path(home).expanduser()
            if path.exists() and not path.is_dir():
                raise UsageError(f"Codex home {home} is not a directory")

    # --- helpers -------------------------------------------------------------------------
    def _open_bundle(self, path: str | None) -> BundleReader | None:
        """The bundle the models come from, checked before any step: every declared model
        (not a custom one) must be in it (BundleError, exit 2, naming both); a `choose`
        list keeps the candidates it has. A truncated bundle is exit 1."""
        if path is None:
            return None
        reader = BundleReader(Path(path))
        reader.select([parse_name(m.name) for m in self.manifest.models
                       if m.name and not m.is_custom])
        specs = []
        for spec in self.manifest.models:
            if spec.choose:
                spec = self._in_bundle(spec, reader)
            specs.append(spec)
        self.manifest = replace(self.manifest, models=tuple(specs))
        reader.check()
        return reader

    def _in_bundle(self, spec: ModelSpec, reader: BundleReader) -> ModelSpec:
        kept = [c for c in spec.choose if reader.index.find(parse_name(c)) is not None]
        if not kept:
            have = ", ".join(m.name.short for m in reader.index.models) or "nothing"
            raise BundleError(f"{reader.path} has none of {', '.join(spec.choose)} (it has: "
                              f"{have})", exit_code=EXIT_USAGE)
        if len(kept) < len(spec.choose):
            left = [c for c in spec.choose if c not in kept]
            self.log.info(f"not in {reader.path}, so not chosen from: {', '.join(left)}")
        return replace(spec, choose=tuple(kept))

    def _files(self, registry: RegistryClient) -> ModelFiles:
        """What the hardware and the plan read a model's files from: the bundle, if any;
        a registry that did not answer in one step is not waited on in the next."""
        if self.bundle is not None:
            return StoreFiles(self.bundle)
        return SkipUnreachable(registry, self.registry_down)

    def _step(self, name: str, title: str, body: StepBody) -> StepResult:
        self.log.begin(name, title)
        started = time.monotonic()
        try:
            status, summary, data, errors, fixes = Done(*body())
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: record where it stopped
            # How to go on is said once, at the end of the run.
            self.steps.append(StepResult(name, FAILED, "interrupted",
                                         time.monotonic() - started, {}, ("interrupted",)))
            self.log.end(self.steps[-1])
            raise
        except ProvisionError as exc:
            # e.g. the user's own config.toml is invalid: the run goes on where it can, and
            # ends with the input-error exit code.
            self.usage_error |= isinstance(exc, UsageError)
            status, summary, data, errors = FAILED, exc.message, {}, [exc.message]
            fixes = (exc.hint,) if exc.hint else ()
        result = StepResult(name, status, summary, time.monotonic() - started, data,
                            tuple(errors), tuple(fixes))
        self.steps.append(result)
        self.log.end(result)
        return result

    def _set(self, key: str, **changes: Any) -> None:
        self.models[key] = replace(self.models[key], **changes)

    @staticmethod
    def _target(decision: GateDecision) -> Target:
        return Target(decision.spec, decision.name, decision.pull_name)

    # --- 1. check ------------------------------------------------------------------------
    def check(self) -> StepResult:
        def body() -> Done:
            asked = self.options.wait is not None or self.manifest.server.wait_asked
            wait = self.manifest.server.wait if self.options.wait is None else self.options.wait
            start = self.options.start or self.manifest.server.start
            url = self.address.url
            for note in self.address.notes:
                self.log.info(note)
            deadline = self.server.timeouts.total
            facts = self.server.probe(seconds=deadline)
            started = None
            kind = facts.diagnosis.kind if facts.diagnosis else None
            # Told to wait (--wait, or `wait` in the user's manifest), also for a server
            # that is not installed here: one in a container that is still starting.
            waits_for = WORTH_WAITING + ((DiagnosisKind.NOT_INSTALLED,) if asked else ())
            if kind == DiagnosisKind.NOT_RUNNING and not self.options.dry_run and start:
                with self.log.activity(f"Ollama is installed but not running: starting "
                                       f"`ollama serve` at {url}"):
                    started = start_server(self.server, detect_install(environ=self.env),
                                           wait=max(wait, 10.0))
                facts = started.facts
                self.log.info(f"started (pid {started.pid}); its log: "
                              f"{short_path(started.log_path)}")
            elif kind in waits_for and wait > 0:
                why = " (installed, not running: --start starts it)" \
                    if kind == DiagnosisKind.NOT_RUNNING and not start else ""
                with self.log.activity(f"waiting for Ollama at {url}",
                                       said=f"waiting up to {wait:g} s for Ollama at "
                                       f"{url}{why}") as update:
                    facts = self.server.wait_until_up(
                        wait, probe_seconds=deadline,
                        on_retry=lambda _, left: update(
                            f"still waiting for Ollama at {url} ({left:.0f} s left)"))
            if facts.diagnosis is not None:
                diagnosis = facts.diagnosis
                fixes = diagnosis.fixes
                if diagnosis.kind == DiagnosisKind.NOT_RUNNING and not start:
                    fixes = ("add --start: apply starts `ollama serve` itself (or [server] "
                             "start = true in the manifest)", *fixes)
                return Done(FAILED, diagnosis.message, {"diagnosis": diagnosis.to_json()},
                            [diagnosis.message], fixes)
            self.version = facts.version
            data: dict[str, Any] = {"url": url, "version": facts.version}
            if started:
                data["started"] = {"pid": started.pid, "log": str(started.log_path)}
                return Done(CHANGED, f"started Ollama {facts.version} at {url}", data, [])
            return Done(OK, f"Ollama {facts.version or '?'} at {url}", data, [])

        return self._step("check", f"Ollama server at {self.address.url}", body)

    # --- 2. hardware ---------------------------------------------------------------------
    def hardware(self) -> StepResult:
        def body() -> Done:
            machine, version = self._machine()
            with RegistryClient(insecure=self.pull_spec.insecure,
                                environ=self.env) as registry:
                self.decisions = gate(
                    self.manifest.models, machine, server=self.server,
                    hardware=self.manifest.hardware,
                    ignore_hardware=self.options.ignore_hardware,
                    require=self.options.require,
                    server_version=version or self.version, registry=self._files(registry))
            errors: list[str] = []
            fixes: list[str] = []
            rows = []
            for decision in self.decisions:
                key = decision.name.short
                declared = decision.spec.name or " | ".join(decision.spec.choose)
                report = decision.report
                fit = report.fit if report else None
                notes = (decision.reason,) if decision.reason and decision.allowed else ()
                self.models[key] = ApplyModelResult(
                    name=key, required=decision.spec.required, declared=declared,
                    custom=decision.spec.is_custom, verdict=decision.verdict,
                    where=fit.where if fit else None,
                    status=OK if decision.allowed else FAILED,
                    error=None if decision.allowed else decision.reason, notes=notes)
                if decision.spec.choose:
                    self.log.info(_chose_line(decision))
                row = f"{key}: {decision.verdict}"
                if fit and fit.verdict == Verdict.PARTIAL:
                    row += f" ({fit.where})"
                if fit and fit.fits and fit.tokens_per_second:  # verify measures it
                    row += f", {speed_words(fit.tokens_per_second)}"
                if report is not None and report.needs is not None \
                        and report.needs.source == "rough":
                    row += " (rough estimate: the registry could not be read)"
                rows.append(row)
                if not decision.allowed:
                    unknown = report is not None and report.error
                    message = (decision.reason or "") if unknown else \
                        f"{key} cannot run here: {decision.reason}"
                    if decision.spec.required:
                        errors.append(message)
                        if not unknown and not self.options.ignore_hardware:
                            fixes.append("--ignore-hardware uses it anyway")
                    else:
                        self.log.info(f"{message} (optional: the run goes on)")
            data = {"machine": None if machine is None else {
                        "gpus": [g.name for g in machine.gpus],
                        "memory_available": machine.memory.available},
                    "models": [{"name": d.name.short, "verdict": d.verdict,
                                "allowed": d.allowed, "reason": d.reason,
                                "candidates": [{"name": c.name, "verdict": c.verdict,
                                                "tokens_per_second": c.tokens_per_second}
                                               for c in d.candidates]}
                               for d in self.decisions]}
            status = FAILED if errors else OK
            return Done(status, "; ".join(rows) or "no models declared", data, errors,
                        tuple(dict.fromkeys(fixes)))

        return self._step("hardware", "can this machine run the models?", body)

    def _machine(self) -> tuple[Machine | None, str | None]:
        """The machine the server runs on: described (--assume), this one when the server is
        local, else None (this machine's RAM and GPUs say nothing about a remote server)."""
        if self.assumption is not None:
            return self.assumption.machine, self.assumption.server_version
        if not self.address.is_loopback:
            return None, None
        return probe_machine(environ=self.env, server=self.server), None

    # --- 3. plan -------------------------------------------------------------------------
    def _pull_names(self) -> list[ModelName]:
        return pull_names(self._target(d) for d in self.decisions if d.allowed)

    def plan(self) -> StepResult:
        def body() -> Done:
            with RegistryClient(insecure=self.pull_spec.insecure,
                                environ=self.env) as registry:
                plan = build_plan(self._pull_names(), self.server, self.server.tags(),
                                  insecure=self.pull_spec.insecure,
                                  registry=self._files(registry))
            verb = "pull" if self.bundle is None else "upload"
            if plan.disk is not None:
                self.models_dir = str(plan.disk.path)
            lines, errors = [], []
            unknown = 0
            for model in plan.models:
                if not model.will_pull:
                    lines.append(f"{model.name.short} is present")
                elif model.error:
                    unknown += 1
                    lines.append(f"{verb} {model.name.short} (size unknown: {model.error})")
                else:
                    size = human_bytes(model.download or model.size or 0)
                    lines.append(f"{verb} {model.name.short} ({size})")
            creates = [d.name.short for d in self.decisions if d.allowed and d.spec.is_custom]
            lines += [f"create {name} (if it differs)" for name in creates]
            fixes = []
            if plan.fits is False and plan.disk is not None:
                errors.append(
                    f"not enough disk space in {short_path(plan.disk.path)}: the download "
                    f"needs {human_bytes(plan.download)}, "
                    f"{human_bytes(plan.disk.free_bytes or 0)} free")
                fixes.append("free space there, or set OLLAMA_MODELS (in the server's "
                             "environment) to a bigger disk and restart the server")
            for line in lines:
                self.log.info(line)
            pulls = [m.name.short for m in plan.models if m.will_pull]
            present = [m.name.short for m in plan.models if not m.will_pull]
            data = {"download": plan.download,
                    "disk": None if plan.disk is None else {
                        "path": str(plan.disk.path), "free": plan.disk.free_bytes},
                    "pulls": pulls, "present": present, "creates": creates}
            self.would_pull = bool(pulls or creates)
            return Done(FAILED if errors else OK,
                        _plan_summary(verb, len(pulls), unknown, plan.download, len(present),
                                      len(creates)), data, errors, tuple(fixes))

        return self._step("plan", "what needs doing", body)

    # --- 4. pull and create --------------------------------------------------------------
    def pull(self) -> StepResult:
        def body() -> Done:
            names = self._pull_names()
            installed = self.server.tags()  # as the plan saw it (asked once)
            present = {n.key: PullOutcome(n, PullStatus.PRESENT, size=found.size)
                       for n in names if (found := installed.find(n)) is not None}
            todo = [n for n in names if n.key not in present]
            outcomes: dict[Any, PullOutcome] = dict(present)  # said in the plan already
            if todo:
                reporter = make_reporter(quiet=self.log.quiet, terminal=self.terminal,
                                         stream=self.progress_stream)
                if reporter is not None:
                    reporter.say_failures = False  # the step's end line says why, once
                try:
                    outcomes.update(self.on_server.pull(todo, reporter))
                except PullInterrupted as stop:
                    for outcome in stop.outcomes:
                        self._pulled(outcome)
                    raise
            errors, failures, fixes = [], [], []
            for outcome in outcomes.values():
                for key, required in self._pulled(outcome):
                    message = outcome.error.message if outcome.error else outcome.status
                    failures.append(f"{key}: {message}")
                    if required:
                        errors.append(failures[-1])
                    if outcome.error and outcome.error.hint:
                        fixes.append(outcome.error.hint)
            created = self._create(outcomes, errors)
            data = {"outcomes": [{"name": o.name.short, "status": o.status,
                                  "downloaded": o.downloaded, "retries": o.retries,
                                  "resumed": o.resumed,
                                  "error": o.error.message if o.error else None}
                                 for o in outcomes.values()]}
            pulled = [o.name.short for o in outcomes.values() if o.changed]
            parts = ([f"pulled {', '.join(pulled)}"] if pulled else []) \
                + ([f"created {', '.join(created)}"] if created else []) + failures
            changed = bool(pulled or created)
            status = FAILED if errors else (CHANGED if changed else OK)
            return Done(status, "; ".join(parts) or "nothing to download", data, errors,
                        tuple(dict.fromkeys(fixes)))

        title = ("download missing models" if self.bundle is None
                 else f"upload missing models from {self.bundle.path.name}")
        return self._step("pull", title, body)

    def _pulled(self, outcome: PullOutcome) -> list[tuple[str, bool]]:
        """Record a pull's outcome on the models it serves (custom models: in _create);
        the (model, required) that it failed."""
        failed = []
        for decision in self.decisions:
            if decision.pull_name.key != outcome.name.key or decision.spec.is_custom \
                    or not decision.allowed:
                continue
            key = decision.name.short
            self._set(key, pull=outcome.status)
            if not outcome.ok:  # interrupted too: never `ok`
                self._set(key, status=FAILED, error=outcome.error.message if outcome.error
                          else str(outcome.status))
                failed.append((key, decision.spec.required))
            elif outcome.changed:
                self._set(key, status=CHANGED)
        return failed

    def _create(self, pulled: dict[Any, PullOutcome], errors: list[str]) -> list[str]:
        customs = [d for d in self.decisions if d.allowed and d.spec.is_custom]
        outcomes = self.on_server.create([self._target(d) for d in customs], pulled, ())
        created = []
        for decision in customs:
            key = decision.name.short
            base = pulled.get(decision.pull_name.key)
            outcome = outcomes.get(decision.name.key)
            if outcome is None:
                continue
            self._set(key, create=outcome.status)
            if base is not None and not base.ok:
                self._set(key, status=FAILED, error=outcome.error)
                if decision.spec.required:
                    errors.append(f"{key}: base model {decision.pull_name.short} failed")
            elif outcome.changed:
                created.append(key)
                self._set(key, status=CHANGED)
            elif outcome.error:
                self._set(key, status=FAILED, error=outcome.error)
                if decision.spec.required:
                    errors.append(f"{key}: {outcome.error}")
        return created

    # --- 5. verify -----------------------------------------------------------------------
    def verify(self) -> StepResult:
        def body() -> Done:
            errors: list[str] = []
            rows = []
            failed = 0
            todo = [d for d in self.decisions if self.models[d.name.short].status != FAILED]
            for decision in todo if self.manifest.verify.load else ():
                # `load = false`: only the client endpoint is checked
                key = decision.name.short
                found = self.server.tags().find(decision.name)
                size = f" ({human_bytes(found.size)})" if found is not None else ""
                with self.log.activity(f"loading {key}{size}"):
                    checked = self.on_server.verify(self._target(decision))
                result, problem = checked.verification, checked.problem
                notes = list(self.models[key].notes)
                fit = decision.report.fit if decision.report else None
                if result.ok and result.placement and fit is not None:
                    predicted = fit.verdict
                    if predicted in (Verdict.GPU, Verdict.PARTIAL, Verdict.CPU) \
                            and predicted != result.placement:
                        notes.append(f"predicted {predicted}, the server placed it "
                                     f"{result.placement}")
                status = self.models[key].status if not problem else FAILED
                self._set(key, verification=result, notes=tuple(notes), status=status,
                          error=problem)
                if problem and decision.spec.required:
                    errors.append(f"{key}: {problem}")
                rate = result.tokens_per_second
                failed += bool(problem)
                rows.append(f"{key}: {result.placement or '?'}"
                            + (f", {rate:.1f} tok/s" if rate else "")
                            + (f" FAILED ({problem})" if problem else ""))
                if len(todo) > 1:  # each model's end; the step's line counts them
                    self.log.info(rows[-1])
            endpoint = self._endpoint_check()
            data: dict[str, Any] = {"endpoint": endpoint}
            if endpoint and not endpoint["ok"]:
                errors.append(f"{endpoint['path']} does not answer: {endpoint['error']}")
            if not rows and endpoint is None:
                why = ("no models declared" if not self.decisions else
                       "every model failed before" if not todo else
                       "[verify] load = false, and no Codex endpoint to check")
                return Done(SKIPPED, f"nothing to verify: {why}", data, errors)
            if len(rows) > 1:
                summary = f"{len(rows) - failed} of {len(rows)} models load and answer"
            elif rows:
                summary = rows[0]
            else:  # `load = false`: the endpoint alone
                summary = errors[-1] if errors else f"{endpoint['path']} answers"  # type: ignore[index]
            return Done(FAILED if errors else OK, summary, data, errors)

        return self._step("verify", "load, place and time each model", body)

    def _codex_model(self) -> str | None:
        """[codex] model, else the first usable required model that chats (Codex cannot
        use a model that only embeds)."""
        wanted = self.manifest.codex.model
        if wanted:
            key = parse_name(wanted).key
            match = next((d for d in self.decisions if d.name.key == key), None)
            return match.name.short if match else parse_name(wanted).short
        first = next((d for d in self.decisions if d.spec.required and d.allowed
                      and not self.on_server.is_embedding(d.name)), None)
        return first.name.short if first else None

    def _endpoint_check(self) -> dict[str, Any] | None:
        model = self._codex_model()
        if not self.manifest.codex.enabled or model is None:
            return None
        if self.models.get(model) and self.models[model].status == FAILED:
            return None
        wire = "responses" if at_least(self.version, RESPONSES_API_MIN_OLLAMA) else "chat"
        result = check_endpoint(self.server, parse_name(model), wire)
        return {"path": result.path, "ok": result.ok, "status": result.status,
                "error": result.error}

    # --- 6. configure --------------------------------------------------------------------
    def configure(self) -> StepResult:
        def body() -> Done:
            codex = self.manifest.codex
            model = self._codex_model()
            if model is None:
                return Done(SKIPPED, "no usable model for Codex", {}, [])
            if model in self.models and self.models[model].status == FAILED:
                return Done(SKIPPED, f"not pointing Codex at {model}: it failed", {}, [])
            if model not in self.models and \
                    self.server.tags().find(parse_name(model)) is None:
                message = (f"[codex] model = \"{model}\" is neither declared in [[models]] "
                           f"nor on the server at {self.address.url}: Codex would ask for a "
                           "model that is not there")
                return Done(FAILED, message, {"model": model}, [message],
                            ("declare it in [[models]] (then apply pulls it), or name a "
                             "declared model",))
            home = self.options.codex_home or codex.codex_home
            result = configure_codex(CodexConfigRequest(
                model=model, server=self.server,
                codex_version=self.options.codex_version, profile=codex.profile,
                provider_id=codex.provider_id, set_default=codex.set_default,
                codex_home=Path(home).expanduser() if home else None,
                dry_run=self.options.dry_run, environ=self.env,
                model_coming=model in self.models))
            for warning in result.warnings:
                self.log.info(f"warning: {warning}")
            if self.options.dry_run and result.diff:
                self._show_diff(result.diff)
            data = {"path": result.path, "form": result.form, "provider_id": result.provider_id,
                    "profile": result.profile, "model": result.model,
                    "files": [f.path for f in result.files if f.changed],
                    "backup": result.backup, "validation": result.validation.status,
                    "usage": result.usage, "warnings": list(result.warnings)}
            errors = []
            if result.exit_code != EXIT_OK:
                errors.append(result.validation.message or "the Codex config is not usable: "
                              + "; ".join(result.warnings))
            written = [short_path(f.path) for f in result.files if f.changed]
            verb = "would write" if self.options.dry_run else "wrote"
            kept = [short_path(f.path) for f in result.files if Path(f.path).exists()]
            summary = (f"{verb} {', '.join(written)}; use: {result.usage}" if written
                       else f"{', '.join(kept or [short_path(result.path)])} unchanged")
            status = FAILED if errors else (CHANGED if written else OK)
            return Done(status, summary, data, errors)

        return self._step("configure", "Codex config", body)

    def _show_diff(self, diff: str) -> None:
        """A dry run's diff, its file names as a person reads them (`~/...`)."""
        for line in diff.rstrip("\n").splitlines():
            if line.startswith(("--- ", "+++ ")):
                line = line[:4] + short_path(line[4:])
            self.log.info(line)

    # --- 7. the other clients ([clients]) ------------------------------------------------
    def configure_clients(self) -> list[str]:
        """A step per config client, then `env`; their step names."""
        clients: ClientsSpec = self.manifest.clients
        for name, options in clients.configs:
            self._configure_client(name, options)
        if clients.env is not None:
            self._write_env(clients.env)
        return [*(n for n, _ in clients.configs), *(["env"] if clients.env is not None else [])]

    def _client_models(self) -> tuple[str | None, str | None]:
        """The first usable required chat model, and the first usable embedding model."""
        chat = embedding = None
        for decision in self.decisions:
            key = decision.name.short
            if not decision.allowed or self.models[key].status == FAILED:
                continue
            if self.on_server.is_embedding(decision.name):
                embedding = embedding or key
            elif decision.spec.required:
                chat = chat or key
        return chat, embedding

    def _configure_client(self, name: str, options: ClientOptions) -> StepResult:
        client = config_client(name)

        def body() -> tuple[StepStatus, str, dict[str, Any], list[str]]:
            chat, embedding = self._client_models()
            chat = options.model or chat
            if chat is None or client.configure is None:
                return SKIPPED, f"no usable chat model for {name}", {}, []
            outcome = client.configure(ConfigRequest(
                address=self.address, model=chat,
                embedding_model=options.embedding_model or embedding, output=options.path,
                set_default=options.set_default, dry_run=self.options.dry_run,
                environ=self.env))
            for warning in outcome.warnings:
                self.log.info(f"warning: {warning}")
            if self.options.dry_run and outcome.file.diff:
                self._show_diff(outcome.file.diff)
            data = {"path": outcome.file.path, "models": dict(outcome.models),
                    "backup": outcome.file.backup, "usage": outcome.usage,
                    "warnings": list(outcome.warnings)}
            verb = "would write" if self.options.dry_run else "wrote"
            where = short_path(outcome.file.path)
            summary = (f"{verb} {where}; use: {outcome.usage}" if outcome.changed
                       else f"{where} unchanged")
            return (CHANGED if outcome.changed else OK), summary, data, []

        return self._step(name, f"{client.summary.split(':')[0]} config", body)

    def _write_env(self, spec: EnvOptions) -> StepResult:
        def body() -> tuple[StepStatus, str, dict[str, Any], list[str]]:
            names = spec.clients or [n for n, c in env_clients().items() if c.default]
            plan = plan_env(self.address, [env_client(n) for n in names], self.env,
                            override=spec.override)
            for note in plan.notes:
                self.log.info(f"note: {note}")
            errors = [c.message for c in plan.kept]
            data = env_fields(plan)
            text = render_env(plan, spec.format)
            if spec.format == "github":
                target = self.env.get("GITHUB_ENV")
                if not target:
                    return SKIPPED, "not under GitHub Actions ($GITHUB_ENV is not set)", \
                        data, errors
                if all(self.env.get(v.name) == v.value for v in plan.variables):
                    return OK, "already set in this step's environment", data, errors
                if not self.options.dry_run:
                    with open(target, "a", encoding="utf-8") as f:
                        f.write(text)
                changed, where = True, "$GITHUB_ENV"
            else:
                result = replace_file(Path(spec.file or ""), text, dry_run=self.options.dry_run)
                changed, where = result.changed, short_path(result.path)
            names_set = ", ".join(v.name for v in plan.variables)
            verb = "would set" if self.options.dry_run else "set"
            summary = f"{verb} {names_set} in {where}" if changed else f"{where} unchanged"
            status = FAILED if errors else (CHANGED if changed else OK)
            return status, summary, data, errors

        return self._step("env", "variables for other tools", body)


def run_apply(manifest: ApplyManifest, options: ApplyOptions, *, log: StepLog,
              progress_stream: IO[str], terminal: bool) -> ApplyResult:
    """The steps in order; interrupted (Ctrl-C, SIGTERM, SIGHUP), the result so far with
    exit code 130."""
    run = _Run(manifest, options, log, progress_stream, terminal)
    try:
        return _run_steps(run, manifest, options)
    except KeyboardInterrupt:
        return _result(run, EXIT_INTERRUPTED)
    finally:
        run.server.close()


def _run_steps(run: _Run, manifest: ApplyManifest, options: ApplyOptions) -> ApplyResult:
    if run.check().status == FAILED:
        return _result(run, EXIT_UNREACHABLE)
    if run.hardware().status == FAILED and not any(d.allowed for d in run.decisions):
        return _result(run, EXIT_NOT_READY)
    plan = run.plan()
    if options.dry_run:
        if manifest.codex.enabled:
            run.configure()
        run.configure_clients()
        refused = any(m.required and m.status == FAILED for m in run.models.values())
        failed = refused or any(s.status == FAILED for s in run.steps)
        return _result(run, EXIT_NOT_READY if failed else EXIT_OK)
    if plan.status == FAILED:
        return _result(run, EXIT_NOT_READY)
    run.pull()
    if options.verify and manifest.verify.enabled:
        run.verify()
    if manifest.codex.enabled:
        run.configure()
    client_steps = run.configure_clients()
    failed_required = any(m.required and m.status == FAILED for m in run.models.values())
    failed_step = any(s.status == FAILED and s.name in ("configure", "verify", *client_steps)
                      for s in run.steps)
    return _result(run, EXIT_NOT_READY if failed_required or failed_step else EXIT_OK)


def _result(run: _Run, code: int) -> ApplyResult:
    if run.usage_error and code != EXIT_INTERRUPTED:
        code = EXIT_USAGE
    return ApplyResult(source=run.manifest.source, address=run.address, steps=tuple(run.steps),
                       models=tuple(run.models.values()), exit_code=code,
                       dry_run=run.options.dry_run, models_dir=run.models_dir,
                       would_pull=run.options.dry_run and run.would_pull,
                       bundle=str(run.bundle.path) if run.bundle is not None else None)


def _chose_line(decision: GateDecision) -> str:
    """What a `choose` list became, and each candidate as judged (verdict, estimated
    speed), on one line: `chose B of 3: A no-fit; B cpu 6.3-9.7 tok/s; ...`."""
    minimum = decision.spec.min_tokens_per_second
    minimum = DEFAULT_MIN_TOKENS_PER_SECOND if minimum is None else minimum
    judged = []
    for candidate in decision.candidates:
        text = f"{candidate.name} {candidate.verdict}"
        if candidate.tokens_per_second is not None:
            text += f" {speed_range(candidate.tokens_per_second)} tok/s"
        if candidate.slow:
            text += f" (below {minimum:g})"
        judged.append(text)
    head = f"chose {decision.name.short}" if decision.allowed else "chose none"
    return f"{head} of {len(decision.spec.choose)}: " + "; ".join(judged)


def _plan_summary(verb: str, pulls: int, unknown: int, download: int, present: int,
                  creates: int) -> str:
    """`1 to pull (1.3 GB), 2 present`: a size only where the registry told it (`verb`:
    pull, or upload from a bundle)."""
    if not pulls:
        parts = [f"nothing to {verb}"]
    elif unknown == pulls:
        parts = [f"{pulls} to {verb} (size unknown)"]
    elif unknown:
        parts = [f"{pulls} to {verb} (at least {human_bytes(download)})"]
    else:
        parts = [f"{pulls} to {verb} ({human_bytes(download)})"]
    if present:
        parts.append(f"{present} present")
    if creates:
        parts.append(f"{creates} custom")
    return ", ".join(parts)
