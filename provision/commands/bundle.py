"""`ollama-provision bundle create|inspect|verify|push`: models in one file, and servers
provisioned from it through the Ollama API alone."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision.commands import common_options, whole_number
from provision.errors import (
    EXIT_INTERRUPTED,
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_UNREACHABLE,
    ProvisionError,
)
from provision.output import counted, human_bytes
from provision.result import CommandResult

if TYPE_CHECKING:  # the real imports happen inside the runs: `--help` stays instant
    from provision.bundle import (
        BundleReader,
        BundleSummary,
        CreateResult,
        PushOutcome,
        TransferOptions,
        VerifyResult,
    )
    from provision.output import Output
    from provision.server import OllamaServer, ServerAddress


def _rate(text: str) -> float:
    from provision.bundle.transfer import parse_rate

    try:
        return parse_rate(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a rate: '{text}' (bytes per second, e.g. 50M or 1.5G)") from None


def _output_options() -> argparse.ArgumentParser:
    """--json, -q, -v: what every bundle command takes (--host only where a server is)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parent.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parent.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parent


def _transfer_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--limit-rate", type=_rate, default=None, metavar="RATE",
                        help="at most RATE bytes per second (e.g. 50M): leave room on a "
                        "shared link")
    parent.add_argument("--retries", type=whole_number(0), default=5, metavar="N",
                        help="retries per blob, with exponential backoff (default 5)")
    return parent


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bundle",
        help="models in one file, for machines without registry access",
        description="Put models in one file (a bundle) on a connected machine, then "
        "provision servers from it through the Ollama API alone: the servers need no "
        "registry access.",
    )
    commands = parser.add_subparsers(dest="bundle_command", metavar="SUBCOMMAND")
    create = commands.add_parser(
        "create", parents=[_output_options(), _transfer_options()],
        help="download models into a bundle file",
        description="Download MODELs (manifests and blobs, each blob once) into one "
        "uncompressed tar. Run again after an interruption: it continues where it stopped. "
        "Exit 0 done, 1 a model could not be bundled, 2 input error, 130 interrupted.")
    create.add_argument("models", nargs="+", metavar="MODEL", help="models to bundle")
    create.add_argument("-o", "--output", required=True, type=Path, metavar="FILE",
                        help="the bundle file to write")
    create.add_argument("--insecure", action="store_true",
                        help="the registry in the model name speaks plain HTTP")
    create.add_argument("--from-server", metavar="URL",
                        help="read the models from this server's models folder (a server "
                        "on this machine) instead of the registry")
    create.add_argument("--force", action="store_true",
                        help="replace FILE when it holds another bundle")
    create.set_defaults(run=run_create)

    inspect = commands.add_parser(
        "inspect", parents=[_output_options()], help="list a bundle's models",
        description="The models in a bundle: names, sizes, digests. Reads only the index "
        "and manifests. Exit 0, 1 truncated or damaged, 2 not a bundle.")
    inspect.add_argument("file", type=Path, metavar="FILE")
    inspect.set_defaults(run=run_inspect)

    verify = commands.add_parser(
        "verify", parents=[_output_options()], help="check every digest of a bundle",
        description="Read the whole bundle and check every manifest and blob against its "
        "sha256 digest. Exit 0 intact, 1 damaged or truncated, 2 not a bundle.")
    verify.add_argument("file", type=Path, metavar="FILE")
    verify.set_defaults(run=run_verify)

    push = commands.add_parser(
        "push", parents=[common_options(), _transfer_options()],
        help="provision a server from a bundle",
        description="Put MODELs of the bundle (all when none are named) on the Ollama "
        "server, through its API: only the blobs it lacks are uploaded, then each model is "
        "created under its registry name, as if pulled. Run again after an interruption: "
        "blobs already on the server are not sent again. Exit 0 all present, 1 a model "
        "failed, 2 input error, 3 server unreachable, 130 interrupted.")
    push.add_argument("file", type=Path, metavar="FILE")
    push.add_argument("models", nargs="*", metavar="MODEL", help="models to provision")
    push.add_argument("--no-upgrade", action="store_true",
                      help="leave a model the server has with other weights alone "
                      "(default: replace it with the bundle's)")
    push.set_defaults(run=run_push)

    def usage(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(run=usage)


def _output(args: argparse.Namespace) -> Output:
    # Imported in each run, not at the top: `--help` and argument errors stay instant.
    from provision.output import Output

    return Output(json_mode=args.json, quiet=args.quiet)


def _transfer(args: argparse.Namespace) -> TransferOptions:
    from provision.bundle import TransferOptions
    from provision.models.pull import PullOptions

    return TransferOptions(retries=args.retries, limit_rate=args.limit_rate,
                           backoff_base=PullOptions.backoff_from_env())


def _reporter(out: Output) -> Any:
    from provision.models.progress import make_reporter
    from provision.output import stream_is_live

    return make_reporter(quiet=out.quiet, terminal=stream_is_live(
        sys.stderr), stream=sys.stderr)


# --- create -------------------------------------------------------------------------------


def run_create(args: argparse.Namespace) -> int:
    from provision.bundle import BundleStatus, RegistrySource, ServerSource, create_bundle
    from provision.models import RegistryClient
    from provision.names import parse_names
    from provision.server import resolve_host

    out = _output(args)
    names = parse_names(args.models)
    transfer = _transfer(args)
    if args.from_server:
        server = _server(resolve_host(args.from_server), transfer)
        facts = server.probe()
        if facts.diagnosis is not None:
            server.close()
            out.diagnosis(facts.diagnosis)
            return EXIT_UNREACHABLE
        source: Any = ServerSource(server, transfer)
    else:
        source = RegistrySource(RegistryClient(insecure=args.insecure), transfer)
    reporter = _reporter(out)
    try:
        with reporter if reporter is not None else nullcontext():
            result_: CreateResult = create_bundle(names, source, args.output, force=args.force,
                                                  reporter=reporter)
    except KeyboardInterrupt:
        partial = args.output.with_name(args.output.name + ".partial")
        out.error(f"interrupted: run the same command again to resume ({partial.name} is "
                  "kept)" if partial.exists() else "interrupted: nothing was written")
        return EXIT_INTERRUPTED
    except ProvisionError as exc:
        if out.json_mode:
            out.emit_result(CommandResult("bundle-create", exc.exit_code, {
                "path": str(args.output),
                "error": {"message": exc.message, "hint": exc.hint}}))
        raise
    finally:
        source.close()
    if out.json_mode:
        out.emit_result(_create_result(result_))
    elif result_.status == BundleStatus.UNCHANGED:
        out.line(f"{result_.path}: unchanged, it already holds these models "
                 "(nothing downloaded)")
    else:
        out.line(_create_line(result_, source.label))
    return EXIT_OK


def _create_line(result: CreateResult, label: str) -> str:
    from provision.models.progress import format_duration

    count = len(result.index.models)
    kept = f", {human_bytes(result.kept)} kept from an interrupted run" if result.kept else ""
    return (f"wrote {result.path}: {counted(count, 'model')}, "
            f"{human_bytes(result.size)} ({human_bytes(result.fetched)} from {label}{kept}, "
            f"{format_duration(result.duration)})")


def _create_result(result: CreateResult) -> CommandResult:
    return CommandResult("bundle-create", EXIT_OK, {
        "path": str(result.path),
        "status": result.status, "size": result.size, "fetched": result.fetched,
        "kept": result.kept, "duration_s": round(result.duration, 3),
        "models": [{"name": m.name.short, "manifest_digest": m.manifest_digest}
                   for m in result.index.models],
        "blobs": [{"digest": b.digest, "size": b.size} for b in result.index.blobs],
    })


# --- inspect ------------------------------------------------------------------------------


def run_inspect(args: argparse.Namespace) -> int:
    from provision.bundle import BundleReader, summarize

    out = _output(args)
    summary = summarize(BundleReader(args.file))
    if out.json_mode:
        out.emit_result(_inspect_result(args.file, summary))
    else:
        _render_inspect(out, args.file, summary)
    return EXIT_OK


def _inspect_result(path: Path, summary: BundleSummary) -> CommandResult:
    return CommandResult("bundle-inspect", EXIT_OK, {
        "path": str(path), "file_size": summary.file_size,
        "blob_bytes": summary.blob_bytes, "shared_bytes": summary.shared_bytes,
        "models": [{
            "name": m.name.short, "full_name": m.name.full, "size": m.size,
            "manifest_digest": m.manifest_digest,
            "weights": m.weights.digest if m.weights else None,
            "family": m.family or None, "parameter_size": m.parameter_size or None,
            "quantization": m.quantization or None,
            "layers": [{"media_type": x.media_type, "digest": x.digest, "size": x.size}
                       for x in m.layers],
        } for m in summary.models],
    })


def _render_inspect(out: Output, path: Path, summary: BundleSummary) -> None:
    count = len(summary.models)
    shared = (f", {human_bytes(summary.shared_bytes)} shared between models"
              if summary.shared_bytes else "")
    out.line(f"{path}: {counted(count, 'model')}, "
             f"{human_bytes(summary.file_size)}{shared}")
    for m in summary.models:
        facts = " ".join(f for f in (m.family, m.parameter_size, m.quantization) if f)
        out.line(f"  {m.name.short}  {human_bytes(m.size)}  {facts}".rstrip())
        weights = f"  weights {m.weights.digest[7:19]}" if m.weights else ""
        out.line(f"    manifest {m.manifest_digest[7:19]}{weights}")
        kinds = ", ".join(f"{x.media_type.rsplit('.', 1)[-1]} {human_bytes(x.size)}"
                          for x in m.layers[1:])
        for line in textwrap.wrap(f"layers: {kinds}", width=80, initial_indent="    ",
                                  subsequent_indent="      ", break_on_hyphens=False):
            out.line(line)


# --- verify -------------------------------------------------------------------------------


def run_verify(args: argparse.Namespace) -> int:
    from provision.bundle import BundleReader
    from provision.models.pull import CHECKING, BlobProgress, ModelFinished, ModelStarted

    out = _output(args)
    reader = BundleReader(args.file)
    reporter = _reporter(out)
    total = sum(m.size for m in reader.members)
    label = args.file.name
    done = [0]

    def progress(count: int) -> None:
        done[0] += count
        if reporter is not None:
            reporter.handle(BlobProgress(label, "bundle", total, done[0]))

    try:
        with reporter if reporter is not None else nullcontext():
            if reporter is not None:
                reporter.handle(ModelStarted(label, total, CHECKING))
            started = time.monotonic()
            result = reader.verify(progress)
            if reporter is not None:
                reporter.handle(ModelFinished(label, result.ok, "intact" if result.ok else
                                              "damaged", moved=done[0],
                                              duration=time.monotonic() - started))
    except KeyboardInterrupt:
        out.error("interrupted: nothing was changed")
        return EXIT_INTERRUPTED
    exit_code = EXIT_OK if result.ok else EXIT_NOT_READY
    if out.json_mode:
        out.emit_result(_verify_result(args.file, result, exit_code))
    elif result.ok:
        out.line(_verify_line(args.file, reader, result))
    for problem in result.problems:
        out.error(f"{args.file}: {problem}")
    if not result.ok:
        out.info("hint: copy the bundle again, or make it again with `ollama-provision "
                 "bundle create`")
    return exit_code


def _verify_line(path: Path, reader: BundleReader, result: VerifyResult) -> str:
    models, blobs = len(reader.index.models), len(reader.index.blobs)
    return (f"{path}: intact, every digest matches ({counted(models, 'model')}, "
            f"{counted(blobs, 'blob')}, {human_bytes(result.checked_bytes)})")


def _verify_result(path: Path, result: VerifyResult, exit_code: int) -> CommandResult:
    return CommandResult("bundle-verify", exit_code, {
        "path": str(path), "checked_bytes": result.checked_bytes,
        "problems": list(result.problems)})


# --- push ---------------------------------------------------------------------------------


def run_push(args: argparse.Namespace) -> int:
    from provision.bundle import (
        BundleReader,
        PushInterrupted,
        PushOptions,
        PushStatus,
        push_models,
    )
    from provision.names import parse_names
    from provision.server import resolve_host

    out = _output(args)
    names = parse_names(args.models)
    reader = BundleReader(args.file)
    reader.select(names)  # a model the bundle lacks is an input error, before any request
    reader.check_length()
    address = resolve_host(args.host)
    for note in address.notes:
        out.warn(note)
    transfer = _transfer(args)
    with _server(address, transfer) as server:
        found = server.probe()
        about = {"url": address.url, "source": address.source, "version": found.version}
        if found.diagnosis is not None:
            if out.json_mode:
                out.emit_result(CommandResult("bundle-push", EXIT_UNREACHABLE, {
                    "server": about, "bundle": str(args.file),
                    "diagnosis": found.diagnosis.to_json(), "models": []}))
            out.diagnosis(found.diagnosis)
            return EXIT_UNREACHABLE
        options = PushOptions(upgrade=not args.no_upgrade, transfer=transfer)
        reporter = _reporter(out)
        interrupted = False
        try:
            with reporter if reporter is not None else nullcontext():
                outcomes = push_models(reader, server, names, options=options,
                                       reporter=reporter)
        except PushInterrupted as stop:
            outcomes, interrupted = stop.outcomes, True
    exit_code = EXIT_INTERRUPTED if interrupted else (
        EXIT_OK if all(o.ok for o in outcomes) else EXIT_NOT_READY)
    if out.json_mode:
        out.emit_result(_push_result(outcomes, about, str(args.file), exit_code))
    else:
        _render_push(out, outcomes)
    for o in outcomes:
        if o.status == PushStatus.FAILED and o.error is not None:
            out.error(f"{o.name.short}: {o.error.message}", o.error.hint)
    if interrupted:
        out.error("interrupted: run the same command again to continue; blobs already on "
                  "the server are not sent again")
    return exit_code


def _server(address: ServerAddress, transfer: TransferOptions) -> OllamaServer:
    """The server, its reads timed as the transfer options say (silence for
    `read_timeout` is a failed attempt)."""
    from provision.http import Timeouts
    from provision.server import OllamaServer

    return OllamaServer(address, timeouts=Timeouts(
        connect=transfer.connect_timeout, read=transfer.read_timeout,
        write=transfer.read_timeout))


def _render_push(out: Output, outcomes: list[PushOutcome]) -> None:
    from provision.bundle import PushStatus, outcome_text

    if out.quiet:
        return
    for o in outcomes:
        if o.status == PushStatus.FAILED and o.error is not None:
            out.line(f"{o.name.short}: failed ({o.error.kind})")
        elif o.status == PushStatus.INTERRUPTED:
            out.line(f"{o.name.short}: interrupted")
        else:
            out.line(f"{o.name.short}: {outcome_text(o)}")
        for note in o.notes:
            out.line(f"  note: {note}")


def _push_result(outcomes: list[PushOutcome], server: dict[str, Any], bundle: str,
                 exit_code: int) -> CommandResult:
    return CommandResult("bundle-push", exit_code, {
        "server": server, "bundle": bundle,
        "models": [{
            "name": o.name.short, "status": o.status, "size": o.size,
            "bytes_sent": o.bytes_sent, "blobs_sent": o.blobs_sent,
            "blobs_skipped": o.blobs_skipped, "duration_s": round(o.duration, 3),
            "retries": o.retries, "weights": o.weights,
            "manifest_digest": o.manifest_digest, "same_manifest": o.same_manifest,
            "stale": o.stale, "notes": list(o.notes),
            "error": None if o.error is None else {
                "kind": o.error.kind, "message": o.error.message, "hint": o.error.hint,
                "detail": o.error.detail},
        } for o in outcomes],
    })
