"""`apply`: the whole job from one manifest, step by step, each step `ok` or `changed`.

check → hardware → plan → pull (and create) → verify → configure (Codex, then the
other [clients]) → report.
Every step ends in a frozen StepResult; the models' outcomes are gathered in
ModelResults; `ApplyResult.exit_code` follows the documented exit codes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import IO, Any

from provision.errors import (
    EXIT_INTERRUPTED,
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ProvisionError,
    UsageError,
)
from provision.gate import Judged
from provision.github import Actions
from provision.host import ServerAddress, resolve_host
from provision.manifest import Manifest
from provision.names import ModelName
from provision.verify import Verification

OK, CHANGED, FAILED, SKIPPED = "ok", "changed", "failed", "skipped"
INTERRUPTED_TEXT = ("interrupted: run the same command again to resume (the server keeps "
                    "what was downloaded)")

# Failures that a server coming up resolves: worth waiting for. "Not installed" is among
# them: a server in a container (`docker run -p 11434:11434 ollama/ollama`) is not
# installed here and refuses connections until it has started. A wrong name, TLS or a
# proxy problem do not go away by themselves.
WORTH_WAITING = ("not-installed", "not-running", "connection-refused", "no-answer", "timeout")


@dataclass(frozen=True)
class ApplyOptions:
    host: str | None = None  # --host; else [server].host; else OLLAMA_HOST / default
    dry_run: bool = False
    start: bool = False  # also start `ollama serve` when installed but not running
    wait: float | None = None  # None: the manifest's [server].wait
    force: bool = False  # pull and use models the hardware gate refuses
    verify: bool = True
    assume: tuple[str, ...] = ()  # judge this described machine instead of probing
    codex_version: str | None = None
    codex_home: str | None = None
    environ: dict[str, str] | None = None


@dataclass(frozen=True)
class StepResult:
    name: str
    status: str  # ok / changed / failed / skipped
    summary: str
    duration: float
    data: dict[str, Any] = field(default_factory=dict)
    errors: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.status == CHANGED


@dataclass(frozen=True)
class ModelResult:
    name: str
    required: bool
    declared: str  # as written in the manifest (a name, or the choose list)
    custom: bool = False
    verdict: str | None = None  # predicted by the hardware step
    where: str | None = None  # predicted placement in words
    pull: str | None = None  # pull outcome status
    create: str | None = None  # custom model: created / unchanged / failed
    verification: Verification | None = None
    status: str = OK
    error: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApplyResult:
    source: str
    address: ServerAddress
    steps: tuple[StepResult, ...]
    models: tuple[ModelResult, ...]
    exit_code: int
    dry_run: bool
    models_dir: str | None = None

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.steps)


class StepLog:
    """Announces steps: plain lines (or GitHub groups) on stderr; silent when quiet."""

    def __init__(self, stream: IO[str], *, quiet: bool, actions: Actions) -> None:
        self.stream = stream
        self.quiet = quiet
        self.actions = actions

    def begin(self, name: str, title: str) -> None:
        if self.actions.enabled:
            print(f"::group::{name}: {title}", file=self.stream, flush=True)
        elif not self.quiet:
            print(f"==> {name}: {title}", file=self.stream, flush=True)

    def info(self, text: str) -> None:
        if not self.quiet:
            print(f"    {text}", file=self.stream, flush=True)

    def end(self, result: StepResult) -> None:
        if not self.quiet:
            print(f"    {result.status}: {result.summary} ({result.duration:.1f} s)",
                  file=self.stream, flush=True)
            for error in result.errors:
                if error not in result.summary:  # the reason, when the summary lacks it
                    print(f"    error: {error}", file=self.stream, flush=True)
        for error in result.errors:
            self.actions.error(error, title=f"ollama-provision {result.name}")
        if self.actions.enabled:
            print("::endgroup::", file=self.stream, flush=True)


class _Run:
    """One apply run: state shared between the steps, which run in order."""

    def __init__(self, manifest: Manifest, options: ApplyOptions, log: StepLog,
                 progress_stream: IO[str], terminal: bool) -> None:
        self.manifest = manifest
        self.options = options
        self.log = log
        self.progress_stream = progress_stream
        self.terminal = terminal
        self.env = dict(os.environ if options.environ is None else options.environ)
        self.steps: list[StepResult] = []
        self.models: dict[str, ModelResult] = {}
        self.judged: list[Judged] = []
        self.version: str | None = None
        self.models_dir: str | None = None
        self.usage_error = False
        # Input errors are found here, before any step runs (exit 2, nothing done):
        # --host, else the manifest's [server].host, else OLLAMA_HOST, else the default.
        self.address = resolve_host(options.host or manifest.server.host, environ=self.env)
        self.assumption = None
        if options.assume:
            from provision.assume import parse_assume

            self.assumption = parse_assume(list(options.assume))
        if options.codex_version is not None:
            from provision.configure import check_codex_version

            check_codex_version(options.codex_version)
        home = options.codex_home or manifest.codex.codex_home
        if manifest.codex.enabled and home:
            from pathlib import Path

            path = Path(home).expanduser()
            if path.exists() and not path.is_dir():
                raise UsageError(f"Codex home {home} is not a directory")

    # --- helpers -------------------------------------------------------------------------
    def _step(self, name: str, title: str, body: Any) -> StepResult:
        self.log.begin(name, title)
        started = time.monotonic()
        try:
            status, summary, data, errors = body()
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: record where it stopped
            self.steps.append(StepResult(name, FAILED, INTERRUPTED_TEXT,
                                         time.monotonic() - started, {}, (INTERRUPTED_TEXT,)))
            self.log.end(self.steps[-1])
            raise
        except ProvisionError as exc:
            # e.g. the user's own config.toml is invalid: the run goes on where it can, and
            # ends with the input-error exit code.
            self.usage_error |= isinstance(exc, UsageError)
            status, summary, data, errors = FAILED, exc.message, {}, [exc.message]
        result = StepResult(name, status, summary, time.monotonic() - started, data,
                            tuple(errors))
        self.steps.append(result)
        self.log.end(result)
        return result

    def _set(self, key: str, **changes: Any) -> None:
        self.models[key] = replace(self.models[key], **changes)

    def _timeouts(self) -> Any:
        from provision.http import Timeouts

        server = self.manifest.server
        return Timeouts.for_server(server.connect_timeout, server.read_timeout)

    def _http(self) -> Any:
        from provision.http import client

        return client(self.address.url, loopback=self.address.is_loopback,
                      timeouts=self._timeouts())

    # --- 1. check ------------------------------------------------------------------------
    def check(self) -> StepResult:
        def body() -> tuple[str, str, dict[str, Any], list[str]]:
            from provision.probe import probe, wait_for_server

            wait = self.manifest.server.wait if self.options.wait is None else self.options.wait
            for note in self.address.notes:
                self.log.info(note)
            result = probe(self.address, environ=self.env, timeouts=self._timeouts())
            started = None
            if not result.reachable and result.diagnosis and \
                    result.diagnosis.kind == "not-running" and \
                    (self.options.start or self.manifest.server.start) and not self.options.dry_run:
                from provision.local_install import detect_install
                from provision.server_start import start_server

                self.log.info("Ollama is installed but not running: starting `ollama serve`")
                started = start_server(self.address, detect_install(environ=self.env),
                                       wait=max(wait, 10.0), environ=self.env)
                result = started.result
                self.log.info(f"started (pid {started.pid}); its log: {started.log_path}")
            elif not result.reachable and wait > 0 and result.diagnosis and \
                    result.diagnosis.kind in WORTH_WAITING:
                self.log.info(f"waiting up to {wait:g} s for Ollama at {self.address.url}")
                result = wait_for_server(self.address, wait, environ=self.env,
                                         timeouts=self._timeouts())
            if not result.reachable:
                diagnosis = result.diagnosis
                assert diagnosis is not None
                for fix in diagnosis.fixes:
                    self.log.info(f"fix: {fix}")
                fixes = "; ".join(diagnosis.fixes[:2])
                return FAILED, diagnosis.message, {
                    "diagnosis": diagnosis.to_json()}, [
                    f"{diagnosis.message}" + (f" (fix: {fixes})" if fixes else "")]
            self.version = result.version
            data: dict[str, Any] = {"url": self.address.url, "version": result.version}
            if started:
                data["started"] = {"pid": started.pid, "log": str(started.log_path)}
                return CHANGED, f"started Ollama {result.version} at {self.address.url}", data, []
            return OK, f"Ollama {result.version or '?'} at {self.address.url}", data, []

        return self._step("check", f"Ollama server at {self.address.url}", body)

    # --- 2. hardware ---------------------------------------------------------------------
    def hardware(self) -> StepResult:
        def body() -> tuple[str, str, dict[str, Any], list[str]]:
            from provision.gate import judge_specs
            from provision.registry import RegistryClient

            machine, version = self._machine()
            with RegistryClient(insecure=self.manifest.pull.insecure,
                                environ=self.env) as registry:
                self.judged = judge_specs(
                    self.manifest.models, machine, address=self.address,
                    hardware=self.manifest.hardware, force=self.options.force,
                    server_version=version or self.version, registry=registry)
            errors = []
            rows = []
            for judged in self.judged:
                key = judged.name.short
                declared = judged.spec.name or " | ".join(judged.spec.choose)
                fit = judged.report.fit if judged.report else None
                notes = (judged.reason,) if judged.reason and judged.allowed else ()
                self.models[key] = ModelResult(
                    name=key, required=judged.spec.required, declared=declared,
                    custom=judged.spec.is_custom, verdict=judged.verdict,
                    where=fit.where if fit else None,
                    status=OK if judged.allowed else FAILED,
                    error=None if judged.allowed else judged.reason, notes=notes)
                if judged.spec.choose:
                    self.log.info(f"chose {key} from {declared}: "
                                  + ", ".join(f"{n} {v}" for n, v in judged.candidates))
                rows.append(f"{key}: {judged.verdict}"
                            + (f" ({fit.where})" if fit and fit.verdict == "partial" else ""))
                if not judged.allowed:
                    unknown = judged.report is not None and judged.report.error
                    message = (judged.reason or "") if unknown else \
                        f"{key} cannot run here: {judged.reason}"
                    self.log.info(message)
                    if judged.spec.required:
                        errors.append(message)
            data = {"machine": None if machine is None else {
                        "gpus": [g.name for g in machine.gpus],
                        "memory_available": machine.memory.available},
                    "models": [{"name": j.name.short, "verdict": j.verdict,
                                "allowed": j.allowed, "reason": j.reason,
                                "candidates": [list(c) for c in j.candidates]}
                               for j in self.judged]}
            status = FAILED if errors else OK
            return status, "; ".join(rows) or "no models declared", data, errors

        return self._step("hardware", "can this machine run the models?", body)

    def _machine(self) -> tuple[Any, str | None]:
        """The machine the server runs on: described (--assume), this one when the server is
        local, else None (this machine's RAM and GPUs say nothing about a remote server)."""
        if self.assumption is not None:
            return self.assumption.machine, self.assumption.server_version
        if not self.address.is_loopback:
            return None, None
        from provision.machine import probe_machine

        return probe_machine(environ=self.env, server=self.address), None

    # --- 3. plan -------------------------------------------------------------------------
    def _pull_names(self) -> list[ModelName]:
        names: list[ModelName] = []
        seen: set[tuple[str, str, str, str]] = set()
        for judged in self.judged:
            if judged.allowed and judged.pull_name.key not in seen:
                seen.add(judged.pull_name.key)
                names.append(judged.pull_name)
        return names

    def plan(self) -> StepResult:
        def body() -> tuple[str, str, dict[str, Any], list[str]]:
            from provision.inventory import fetch_inventory
            from provision.output import human_bytes
            from provision.plan import build_plan

            with self._http() as http:
                inventory = fetch_inventory(http)
            plan = build_plan(self._pull_names(), inventory, insecure=self.manifest.pull.insecure,
                              local=self.address.is_loopback, environ=self.env,
                              server=self.address)
            if plan.disk is not None:
                self.models_dir = str(plan.disk.path)
            lines, errors = [], []
            for model in plan.models:
                if model.will_pull:
                    size = human_bytes(model.download or model.size or 0)
                    lines.append(f"pull {model.name.short} ({size})" if not model.error
                                 else f"pull {model.name.short} (size unknown: {model.error})")
                else:
                    lines.append(f"{model.name.short} is present")
            creates = [j.name.short for j in self.judged if j.allowed and j.spec.is_custom]
            lines += [f"create {name} (if it differs)" for name in creates]
            if plan.fits is False and plan.disk is not None:
                errors.append(
                    f"not enough disk space in {plan.disk.path}: the download needs "
                    f"{human_bytes(plan.download)}, {human_bytes(plan.disk.free_bytes or 0)} free")
            for line in lines:
                self.log.info(line)
            data = {"download": plan.download,
                    "disk": None if plan.disk is None else {
                        "path": str(plan.disk.path), "free": plan.disk.free_bytes},
                    "pulls": [m.name.short for m in plan.models if m.will_pull],
                    "present": [m.name.short for m in plan.models if not m.will_pull],
                    "creates": creates}
            summary = (f"{len(data['pulls'])} to pull ({human_bytes(plan.download)}), "
                       f"{len(data['present'])} present, {len(creates)} custom")
            would_change = self.options.dry_run and (data["pulls"] or creates)
            return (FAILED if errors else CHANGED if would_change else OK), summary, data, errors

        return self._step("plan", "what needs doing", body)

    # --- 4. pull and create --------------------------------------------------------------
    def pull(self) -> StepResult:
        def body() -> tuple[str, str, dict[str, Any], list[str]]:
            from provision.progress import make_reporter
            from provision.pull import PullInterrupted, PullOptions, pull_models

            spec = self.manifest.pull
            options = PullOptions(force=False, insecure=spec.insecure, parallel=spec.parallel,
                                  stall_timeout=spec.stall_timeout, retries=spec.retries,
                                  backoff_base=PullOptions.backoff_from_env(self.env),
                                  connect_timeout=self.manifest.server.connect_timeout)
            reporter = make_reporter(quiet=self.log.quiet, terminal=self.terminal,
                                     stream=self.progress_stream)
            try:
                outcomes = pull_models(self.address, self._pull_names(), options, reporter,
                                       environ=self.env)
            except PullInterrupted as stop:
                for outcome in stop.outcomes:
                    for judged in self.judged:
                        if judged.pull_name.key == outcome.name.key and \
                                not judged.spec.is_custom:
                            self._set(judged.name.short, pull=outcome.status)
                raise
            by_key = {o.name.key: o for o in outcomes}
            errors, changed = [], False
            for judged in self.judged:
                outcome = by_key.get(judged.pull_name.key)
                if outcome is None:
                    continue
                changed |= outcome.status in ("pulled", "updated")
                key = judged.name.short
                if judged.spec.is_custom:
                    continue
                self._set(key, pull=outcome.status)
                if not outcome.ok:
                    message = outcome.error.message if outcome.error else outcome.status
                    self._set(key, status=FAILED, error=message)
                    if judged.spec.required:
                        errors.append(f"{key}: {message}")
                elif outcome.status in ("pulled", "updated"):
                    self._set(key, status=CHANGED)
            created = self._create(by_key, errors)
            data = {"outcomes": [{"name": o.name.short, "status": o.status,
                                  "downloaded": o.downloaded, "retries": o.retries,
                                  "resumed": o.resumed,
                                  "error": o.error.message if o.error else None}
                                 for o in outcomes]}
            pulled = [o.name.short for o in outcomes if o.status in ("pulled", "updated")]
            summary = (f"pulled {', '.join(pulled)}" if pulled else "nothing to download")
            if created:
                summary += f"; created {', '.join(created)}"
            status = FAILED if errors else (CHANGED if changed or created else OK)
            return status, summary, data, errors

        return self._step("pull", "download missing models", body)

    def _create(self, outcomes: dict[tuple[str, str, str, str], Any],
                errors: list[str]) -> list[str]:
        from provision.create import CREATED, CustomModel, ensure_custom_model
        from provision.names import parse_name

        created = []
        with self._http() as http:
            for judged in self.judged:
                spec = judged.spec
                if not (judged.allowed and spec.is_custom):
                    continue
                key = judged.name.short
                base = outcomes.get(judged.pull_name.key)
                if base is not None and not base.ok:
                    self._set(key, status=FAILED, create="failed",
                              error=f"its base {judged.pull_name.short} failed to pull")
                    if spec.required:
                        errors.append(f"{key}: base model {judged.pull_name.short} failed")
                    continue
                outcome = ensure_custom_model(http, CustomModel(
                    name=judged.name, base=parse_name(spec.base or ""), system=spec.system,
                    template=spec.template, parameters=tuple(spec.parameters.items())))
                self._set(key, create=outcome.status)
                if outcome.status == CREATED:
                    created.append(key)
                    self._set(key, status=CHANGED)
                elif outcome.error:
                    self._set(key, status=FAILED, error=outcome.error)
                    if spec.required:
                        errors.append(f"{key}: {outcome.error}")
        return created

    # --- 5. verify -----------------------------------------------------------------------
    def verify(self) -> StepResult:
        def body() -> tuple[str, str, dict[str, Any], list[str]]:
            from provision.verify import check_endpoint, verify_model

            spec = self.manifest.verify
            errors: list[str] = []
            rows = []
            with self._http() as http:
                for judged in self.judged:
                    key = judged.name.short
                    if self.models[key].status == FAILED or not spec.load:
                        continue  # `load = false`: only the client endpoint is checked
                    embedding = _is_embedding(http, judged.name)
                    result = verify_model(
                        http, judged.name, num_ctx=judged.spec.num_ctx,
                        keep_alive=judged.spec.keep_alive, generate=spec.generate,
                        prompt=spec.prompt, num_predict=spec.num_predict, embedding=embedding)
                    notes = list(self.models[key].notes)
                    problem = result.error
                    if result.ok and result.placement and judged.report and judged.report.fit:
                        predicted = judged.report.fit.verdict
                        if predicted in ("gpu", "partial", "cpu") and predicted != result.placement:
                            notes.append(f"predicted {predicted}, the server placed it "
                                         f"{result.placement}")
                    rate = result.tokens_per_second
                    if result.ok and spec.min_tokens_per_second and rate is not None \
                            and rate < spec.min_tokens_per_second:
                        problem = (f"{rate:.1f} tokens/s, below the required "
                                   f"{spec.min_tokens_per_second:g}")
                    status = self.models[key].status if not problem else FAILED
                    self._set(key, verification=result, notes=tuple(notes), status=status,
                              error=problem)
                    if problem and judged.spec.required:
                        errors.append(f"{key}: {problem}")
                    where = result.placement or "?"
                    rows.append(f"{key}: {where}" + (f", {rate:.1f} tok/s" if rate else "")
                                + (f" FAILED ({problem})" if problem else ""))
                    self.log.info(rows[-1])
                endpoint = self._endpoint_check(http, check_endpoint)
            data: dict[str, Any] = {"endpoint": endpoint}
            if endpoint and not endpoint["ok"]:
                errors.append(f"{endpoint['path']} does not answer: {endpoint['error']}")
            return (FAILED if errors else OK), "; ".join(rows) or "nothing to verify", data, errors

        return self._step("verify", "load, place and time each model", body)

    def _codex_model(self) -> str | None:
        wanted = self.manifest.codex.model
        if wanted:
            from provision.names import parse_name

            key = parse_name(wanted).key
            match = next((j for j in self.judged if j.name.key == key), None)
            return match.name.short if match else parse_name(wanted).short
        first = next((j for j in self.judged if j.spec.required and j.allowed), None)
        return first.name.short if first else None

    def _endpoint_check(self, http: Any, check_endpoint: Any) -> dict[str, Any] | None:
        from provision.names import parse_name
        from provision.versions import RESPONSES_API_MIN_OLLAMA, at_least

        model = self._codex_model()
        if not self.manifest.codex.enabled or model is None:
            return None
        if self.models.get(model) and self.models[model].status == FAILED:
            return None
        wire = "responses" if at_least(self.version, RESPONSES_API_MIN_OLLAMA) else "chat"
        result = check_endpoint(http, parse_name(model), wire)
        return {"path": result.path, "ok": result.ok, "status": result.status,
                "error": result.error}

    def _on_server(self, model: str) -> bool:
        from provision.inventory import fetch_inventory
        from provision.names import parse_name

        with self._http() as http:
            return fetch_inventory(http).find(parse_name(model)) is not None

    # --- 6. configure --------------------------------------------------------------------
    def configure(self) -> StepResult:
        def body() -> tuple[str, str, dict[str, Any], list[str]]:
            from pathlib import Path

            from provision.codex_config import ServerFacts
            from provision.configure import ConfigRequest, configure_codex

            codex = self.manifest.codex
            model = self._codex_model()
            if model is None:
                return SKIPPED, "no usable model for Codex", {}, []
            if model in self.models and self.models[model].status == FAILED:
                return SKIPPED, f"not pointing Codex at {model}: it failed", {}, []
            if model not in self.models and not self._on_server(model):
                message = (f"[codex] model = \"{model}\" is neither declared in [[models]] "
                           f"nor on the server at {self.address.url}: Codex would ask for a "
                           "model that is not there")
                self.log.info("fix: declare it in [[models]] (then apply pulls it), or "
                              "name a declared model")
                return FAILED, message, {"model": model}, [message]
            home = self.options.codex_home or codex.codex_home
            result = configure_codex(ConfigRequest(
                model=model, server=ServerFacts(self.address, self.version, True),
                codex_version=self.options.codex_version, profile=codex.profile,
                provider_id=codex.provider_id, set_default=codex.set_default,
                codex_home=Path(home).expanduser() if home else None,
                dry_run=self.options.dry_run, environ=self.env))
            for warning in result.warnings:
                self.log.info(f"warning: {warning}")
            if self.options.dry_run and result.diff:
                for line in result.diff.rstrip("\n").splitlines():
                    self.log.info(line)
            data = {"path": result.path, "form": result.form, "provider_id": result.provider_id,
                    "profile": result.profile, "model": result.model,
                    "backup": result.backup, "validation": result.validation.status,
                    "usage": result.usage, "warnings": list(result.warnings)}
            errors = []
            if result.exit_code != EXIT_OK:
                errors.append(result.validation.message or "the Codex config is not usable: "
                              + "; ".join(result.warnings))
            verb = "would write" if self.options.dry_run else "wrote"
            summary = (f"{verb} {result.path} ({result.form}); use: {result.usage}"
                       if result.changed else f"{result.path} unchanged")
            status = FAILED if errors else (CHANGED if result.changed else OK)
            return status, summary, data, errors

        return self._step("configure", "Codex config", body)


    # --- 7. the other clients ([clients]) ------------------------------------------------
    def configure_clients(self) -> list[str]:
        """A step per config client, then `env`; their step names."""
        for name, options in self.manifest.clients.configs:
            self._configure_client(name, options)
        if self.manifest.clients.env is not None:
            self._write_env(self.manifest.clients.env)
        return [*(n for n, _ in self.manifest.clients.configs),
                *(["env"] if self.manifest.clients.env is not None else [])]

    def _client_models(self) -> tuple[str | None, str | None]:
        """The first usable required chat model, and the first usable embedding model."""
        chat = embedding = None
        with self._http() as http:
            for judged in self.judged:
                key = judged.name.short
                if not judged.allowed or self.models[key].status == FAILED:
                    continue
                if _is_embedding(http, judged.name):
                    embedding = embedding or key
                elif judged.spec.required:
                    chat = chat or key
        return chat, embedding

    def _configure_client(self, name: str, options: Any) -> StepResult:
        from provision.clients import ConfigRequest, config_client

        client = config_client(name)

        def body() -> tuple[str, str, dict[str, Any], list[str]]:
            chat, embedding = self._client_models()
            chat = options.model or chat
            if chat is None:
                return SKIPPED, f"no usable chat model for {name}", {}, []
            outcome = client.configure(ConfigRequest(
                address=self.address, model=chat,
                embedding_model=options.embedding_model or embedding, output=options.path,
                set_default=options.set_default, dry_run=self.options.dry_run,
                environ=self.env))
            for warning in outcome.warnings:
                self.log.info(f"warning: {warning}")
            if self.options.dry_run and outcome.file.diff:
                for line in outcome.file.diff.rstrip("\n").splitlines():
                    self.log.info(line)
            data = {"path": outcome.file.path, "models": dict(outcome.models),
                    "backup": outcome.file.backup, "usage": outcome.usage,
                    "warnings": list(outcome.warnings)}
            verb = "would write" if self.options.dry_run else "wrote"
            summary = (f"{verb} {outcome.file.path}; use: {outcome.usage}" if outcome.changed
                       else f"{outcome.file.path} unchanged")
            return (CHANGED if outcome.changed else OK), summary, data, []

        return self._step(name, f"{client.summary.split(':')[0]} config", body)

    def _write_env(self, spec: Any) -> StepResult:
        def body() -> tuple[str, str, dict[str, Any], list[str]]:
            from provision.clients import env_client, env_clients
            from provision.clients._env import plan_env, render, to_json

            names = spec.clients or [n for n, c in env_clients().items() if c.default]
            plan = plan_env(self.address, [env_client(n) for n in names], self.env,
                            override=spec.override)
            for note in plan.notes:
                self.log.info(f"note: {note}")
            errors = [c.message for c in plan.kept]
            data = to_json(plan)
            text = render(plan, spec.format)
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
                from provision.clients._files import replace_file

                result = replace_file(spec.file, text, dry_run=self.options.dry_run)
                changed, where = result.changed, result.path
            names_set = ", ".join(v.name for v in plan.variables)
            verb = "would set" if self.options.dry_run else "set"
            summary = f"{verb} {names_set} in {where}" if changed else f"{where} unchanged"
            status = FAILED if errors else (CHANGED if changed else OK)
            return status, summary, data, errors

        return self._step("env", "variables for other tools", body)


def _is_embedding(http: Any, name: ModelName) -> bool:
    import httpx

    from provision.http import json_body

    try:
        show = json_body(http.post("/api/show", json={"model": name.short}))
    except (httpx.HTTPError, ValueError):  # unknown capabilities: treat as a chat model
        return False
    capabilities = show.get("capabilities") if isinstance(show, dict) else None
    if not isinstance(capabilities, list):
        return False
    return "embedding" in capabilities and "completion" not in capabilities


def run_apply(manifest: Manifest, options: ApplyOptions, *, log: StepLog,
              progress_stream: IO[str], terminal: bool) -> ApplyResult:
    """The steps in order; interrupted (Ctrl-C, SIGTERM, SIGHUP), the result so far with
    exit code 130."""
    run = _Run(manifest, options, log, progress_stream, terminal)
    try:
        return _run_steps(run, manifest, options)
    except KeyboardInterrupt:
        return _result(run, EXIT_INTERRUPTED)


def _run_steps(run: _Run, manifest: Manifest, options: ApplyOptions) -> ApplyResult:
    if run.check().status == FAILED:
        return _result(run, EXIT_UNREACHABLE)
    if run.hardware().status == FAILED and not any(
            j.allowed for j in run.judged):
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
                       dry_run=run.options.dry_run, models_dir=run.models_dir)
