"""`ollama-provision pull MODEL...`: pull what the server lacks, with progress and retries
(`--bundle FILE`: upload it from a bundle instead; the server needs no registry)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision.commands import (
    common_options,
    positive_float,
    server_and_models,
    stall_seconds,
    whole_number,
)
from provision.errors import (
    EXIT_INTERRUPTED,
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_UNREACHABLE,
    ProvisionError,
    UsageError,
)
from provision.output import counted, human_bytes, short_path, stream_is_live
from provision.result import CommandResult

if TYPE_CHECKING:  # the real imports happen inside run(): `--help` stays instant
    from typing import TextIO

    from provision.bundle import BundleReader
    from provision.models import DownloadPlan, ModelDrift, ModelSource
    from provision.models.pull import PullOptions, PullOutcome
    from provision.names import ModelName
    from provision.output import Output
    from provision.server import OllamaServer, ServerFacts


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pull",
        parents=[common_options()],
        help="pull the models the server lacks (progress, retries, resume)",
        description="Pull MODELs the Ollama server does not have yet, showing progress. "
        "Stalls and dropped connections are retried and resume where they stopped. "
        "Exit 0 all present, 1 a model failed, 2 input error, 3 server unreachable, "
        "130 interrupted.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="models to pull")
    parser.add_argument("--force", action="store_true",
                        help="pull even models already present (updates a moved tag)")
    parser.add_argument("--upgrade", action="store_true",
                        help="also pull again the present models whose weights differ from "
                        "what the registry serves now (weights digest, not /api/tags')")
    parser.add_argument("--dry-run", action="store_true",
                        help="download nothing: show sizes from the registry and the free disk")
    parser.add_argument("--insecure", action="store_true",
                        help="the registry in the model name speaks plain HTTP")
    parser.add_argument("--parallel", type=whole_number(1), default=1, metavar="N",
                        help="pull N models at once (default 1)")
    parser.add_argument("--stall-timeout", type=stall_seconds, default=60.0, metavar="SECONDS",
                        help="no progress for this long: drop the connection and retry "
                        "(default 60)")
    parser.add_argument("--retries", type=whole_number(0), default=5, metavar="N",
                        help="retries per model, with exponential backoff (default 5)")
    parser.add_argument("--no-disk-check", action="store_true",
                        help="pull even when the local disk looks too small")
    parser.add_argument("--bundle", type=Path, metavar="FILE",
                        help="upload the models from this bundle (`bundle create`) instead: "
                        "the server needs no registry")
    # Hidden: the first backoff delay (tests make it tiny); env OLLAMA_PROVISION_RETRY_BASE.
    parser.add_argument("--retry-base", type=positive_float, default=None,
                        help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `--help` and argument errors stay instant.
    from provision.http import Timeouts
    from provision.models.pull import PullOptions
    from provision.server import OllamaServer

    out, names, address = server_and_models(args)
    if args.upgrade and args.dry_run:
        raise UsageError("--upgrade cannot be combined with --dry-run",
                         hint="`ollama-provision fleet --dry-run` shows the drift per model")
    bundle = _open_bundle(args, names) if args.bundle is not None else None
    options = PullOptions(
        force=args.force, insecure=args.insecure, parallel=args.parallel,
        stall_timeout=args.stall_timeout, retries=args.retries,
        backoff_base=args.retry_base if args.retry_base is not None
        else PullOptions.backoff_from_env(),
        check_disk=not args.no_disk_check,
    )
    with OllamaServer(address, timeouts=Timeouts.for_server(options.connect_timeout,
                                                            30.0)) as server:
        facts = server.probe()
        if facts.diagnosis is not None:
            return _unreachable(out, facts, args)
        about = {"url": address.url, "source": address.source, "version": facts.version}
        if args.dry_run:
            return _dry_run(out, server, names, options, about, bundle)
        # Progress is a side show: it goes to stderr, the summary (the result) to stdout.
        terminal = stream_is_live(sys.stderr)
        return _pull(out, server, names, options, about, terminal=terminal,
                     stream=sys.stderr, upgrade=args.upgrade and not args.force,
                     source=_store_push(bundle, options) if bundle is not None else None,
                     bundle=args.bundle)


def _open_bundle(args: argparse.Namespace, names: list[ModelName]) -> BundleReader:
    """The bundle, before any request: refused when it lacks a model (exit 2) or is cut
    short (exit 1); the registry-only flags are refused with it."""
    from provision.bundle import BundleReader

    for flag, used in (("--force", args.force), ("--insecure", args.insecure),
                       ("--parallel", args.parallel > 1)):
        if used:
            raise UsageError(f"{flag} is for pulls from a registry, not for --bundle",
                             hint="--upgrade replaces models with other weights than the "
                             "bundle's")
    reader = BundleReader(args.bundle)
    reader.select(names)
    reader.check()
    return reader


def _store_push(bundle: BundleReader, options: PullOptions) -> ModelSource:
    from provision.bundle import StorePush, TransferOptions

    return StorePush(bundle, "bundle", transfer=TransferOptions(
        retries=options.retries, backoff_base=options.backoff_base))


def _pull(out: Output, server: OllamaServer, names: list[ModelName], options: PullOptions,
          about: dict[str, Any], *, terminal: bool, stream: TextIO,
          upgrade: bool = False, source: ModelSource | None = None,
          bundle: Path | None = None) -> int:
    from provision.models import pull_upgrade
    from provision.models.progress import make_reporter
    from provision.models.pull import PullInterrupted, PullStatus, pull_models

    reporter = make_reporter(quiet=out.quiet, terminal=terminal, stream=stream)
    interrupted = False
    outcomes: list[PullOutcome] = []
    drift: tuple[ModelDrift, ...] | None = None
    try:
        if source is not None:  # uploaded from a bundle (it compares the weights itself)
            outcomes = source.provide(server, names, upgrade=upgrade,
                                      check_disk=options.check_disk, reporter=reporter)
        elif upgrade:  # the present models are compared with the registry first
            upgraded = pull_upgrade(server, names, options, reporter)
            outcomes, drift = list(upgraded.outcomes), upgraded.drift
        else:
            outcomes = pull_models(server, names, options, reporter)  # draws while it runs
    except KeyboardInterrupt as stop:  # PullInterrupted carries the outcomes so far
        outcomes = stop.outcomes if isinstance(stop, PullInterrupted) else []
        interrupted = True
    except ProvisionError as refused:  # e.g. the disk cannot hold it: refused up front
        if not out.json_mode:
            raise
        out.emit_result(to_result([], about, refused.exit_code, None, error={
            "message": refused.message, "hint": refused.hint}, bundle=bundle))
        out.error(refused.message, refused.hint)
        return refused.exit_code
    exit_code = EXIT_INTERRUPTED if interrupted else (
        EXIT_OK if all(o.ok for o in outcomes) else EXIT_NOT_READY)
    if out.json_mode:
        out.emit_result(to_result(outcomes, about, exit_code, drift, bundle=bundle))
    elif not (terminal and stream_is_live(out.stdout)):
        _render_summary(out, outcomes)  # else the live view's lines on this terminal said it
    for outcome in outcomes:
        error = outcome.error
        if outcome.status != PullStatus.FAILED or error is None:
            continue
        if reporter is None:  # quiet: nothing said it yet
            out.error(f"{outcome.name.short}: {error.message}", error.hint)
        elif error.hint:  # the reason is on the model's line: now the fix
            out.info(f"hint: {outcome.name.short}: {error.hint}")
    if interrupted and source is not None:
        out.error("interrupted: uploads stopped", "run the same command again: blobs "
                  "already on the server are not sent again")
    elif interrupted:
        # As Ollama does: a download no client waits for stops, its parts stay on disk.
        out.error("interrupted: the server stopped downloading and keeps what it has",
                  "run the same command again to resume where it stopped")
    return exit_code


def to_result(outcomes: list[PullOutcome], about: dict[str, Any], exit_code: int,
              drift: tuple[ModelDrift, ...] | None = None, *,
              error: dict[str, Any] | None = None, bundle: Path | None = None
              ) -> CommandResult:
    """`error`: why nothing was pulled (a refusal up front, such as the disk check);
    `bundle`: the models were uploaded from it (None: pulled from the registry)."""
    fields: dict[str, Any] = {
        "server": about,
        "models_from": {"kind": "registry"} if bundle is None else
        {"kind": "bundle", "path": str(bundle)},
        "models": [_model_json(o) for o in outcomes],
    }
    if drift is not None:  # --upgrade: each model as found, before pulling
        fields["drift"] = [{"name": d.name.short, "state": d.state, "digest": d.digest,
                            "registry_digest": d.reference_digest, "error": d.error}
                           for d in drift]
    if error is not None:
        fields["error"] = error
    return CommandResult("pull", exit_code, fields)


def _model_json(o: PullOutcome) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": o.name.short,
        "status": o.status,
        "size": o.size,
        "downloaded": o.downloaded,
        "duration_s": round(o.duration, 3),
        "retries": o.retries,
        "retry_reasons": list(o.retry_reasons),
        "resumed": o.resumed,
        "error": None if o.error is None else {
            "kind": o.error.kind, "message": o.error.message, "hint": o.error.hint,
            "detail": o.error.detail,
        },
    }
    if o.via is not None:  # uploaded by this machine
        fields.update(sent_bytes=o.sent_bytes, blobs_sent=o.blobs_sent,
                      blobs_skipped=o.blobs_skipped, stale=o.stale)
    return fields


def _render_summary(out: Output, outcomes: list[PullOutcome]) -> None:
    """The result, one line per model, on stdout: where the progress lines (stderr) are
    not on the same terminal. A failure's reason is on its progress line: here its kind."""
    from provision.models.progress import outcome_text
    from provision.models.pull import PullStatus

    if out.quiet:
        return
    quiet_ones = (PullStatus.FAILED, PullStatus.INTERRUPTED, PullStatus.PRESENT)
    if out.terminal:
        from rich.text import Text  # tens of ms: only for a terminal

        marks = {PullStatus.FAILED: "[red]✗[/]", PullStatus.INTERRUPTED: "[yellow]![/]"}
        for o in outcomes:
            line = Text.from_markup(f"{marks.get(o.status, '[green]✓[/]')} ")
            line.append(o.name.short, style="bold")
            line.append(f": {o.status}")
            if o.stale or o.status not in quiet_ones:
                line.append(f" ({outcome_text(o, verb=False)})", style="dim")
            elif o.status == PullStatus.FAILED and o.error is not None:
                line.append(f" ({o.error.kind})", style="dim")
            out.console.print(line)
        return
    for o in outcomes:
        if o.stale:
            out.line(f"{o.name.short}: {o.status} ({outcome_text(o, verb=False)})")
        elif o.status in (PullStatus.PRESENT, PullStatus.INTERRUPTED):
            out.line(f"{o.name.short}: {o.status}")
        elif o.status == PullStatus.FAILED and o.error is not None:
            out.line(f"{o.name.short}: failed ({o.error.kind})")
        else:
            out.line(f"{o.name.short}: {o.status} ({outcome_text(o, verb=False)})")


def _unreachable(out: Output, facts: ServerFacts, args: argparse.Namespace) -> int:
    if args.json:
        address = facts.address
        out.emit_result(CommandResult("pull-plan" if args.dry_run else "pull",
                                      EXIT_UNREACHABLE, {
            "server": {"url": address.url, "source": address.source, "version": None},
            "diagnosis": facts.diagnosis.to_json() if facts.diagnosis else None,
            "models": [],
        }))
    if facts.diagnosis is not None:
        out.diagnosis(facts.diagnosis)
    return EXIT_UNREACHABLE


def _dry_run(out: Output, server: OllamaServer, names: list[ModelName],
             options: PullOptions, about: dict[str, Any],
             bundle: BundleReader | None = None) -> int:
    from provision.bundle import StoreFiles
    from provision.models import build_plan

    with out.activity(f"reading the {'bundle' if bundle is not None else 'registry'} for "
                      f"{counted(len(names), 'model')}"):
        plan = build_plan(names, server, server.tags(), force=options.force,
                          insecure=options.insecure,
                          registry=StoreFiles(bundle) if bundle is not None else None)
    exit_code = EXIT_OK if plan.ok else EXIT_NOT_READY
    if out.json_mode:
        out.emit_result(plan_result(plan, about, exit_code))
    else:
        _render_plan(out, plan, "pulled (nothing downloaded)" if bundle is None
                     else f"uploaded from {bundle.label} (nothing sent)")
    for model in plan.models:
        if model.error:
            out.error(model.error, model.hint)
    if plan.fits is False and plan.disk is not None:
        out.error(f"not enough disk space at {short_path(plan.disk.path)}: the pull needs "
                  f"{human_bytes(plan.download)}, {human_bytes(plan.disk.free_bytes or 0)} "
                  "is free", "free space there, or set OLLAMA_MODELS (in the server's "
                  "environment) to a bigger disk and restart the server")
    return exit_code


def plan_result(plan: DownloadPlan, about: dict[str, Any], exit_code: int) -> CommandResult:
    disk = plan.disk
    return CommandResult("pull-plan", exit_code, {
        "server": about,
        "models": [
            {
                "name": m.name.short,
                "present": m.present,
                "will_pull": m.will_pull,
                "size": m.size,
                "download": m.download,
                "blobs": m.blobs,
                "parameter_size": m.parameter_size or None,
                "quantization": m.quantization or None,
                "family": m.family or None,
                "error": None if m.error is None else {"message": m.error, "hint": m.hint,
                                                       "status": m.error_status},
            }
            for m in plan.models
        ],
        "download": plan.download,
        "disk": None if disk is None else {
            "path": str(disk.path), "source": disk.source, "free": disk.free_bytes,
            "fits": plan.fits,
        },
    })


def _render_plan(out: Output, plan: DownloadPlan,
                 how: str = "pulled (nothing downloaded)") -> None:
    if out.quiet:
        return
    pulls = [m for m in plan.models if m.will_pull and not m.error]
    width = max((len(m.name.short) for m in plan.models), default=0)
    out.line(f"dry run: {len(pulls)} of {counted(len(plan.models), 'model')} would be {how}")
    for m in plan.models:
        label = m.name.short.ljust(width)
        if not m.will_pull:
            out.line(f"  {label}  present, nothing to download (--force pulls it again)")
        elif m.error:
            out.line(f"  {label}  cannot tell: {m.error}")
        else:
            facts = [f for f in (m.parameter_size, m.quantization) if f]
            shared = (f", {human_bytes(m.size - m.download)} already on disk"
                      if m.size and m.download is not None and m.download < m.size else "")
            out.line(f"  {label}  {human_bytes(m.download or 0):>9}  {' '.join(facts)}"
                     f"  ({m.blobs} blobs{shared})")
    out.line(f"total: {human_bytes(plan.download)} to download")
    if plan.disk is None:
        out.line("disk: the server is remote, its free space is not known here")
    elif plan.disk.free_bytes is None:
        out.line(f"disk: free space at {short_path(plan.disk.path)} unknown "
                 f"({plan.disk.described})")
    else:
        verdict = "fits" if plan.fits else "DOES NOT FIT"
        out.line(f"disk: {human_bytes(plan.disk.free_bytes)} free at {short_path(plan.disk.path)} "
                 f"({plan.disk.described}): {verdict}")
