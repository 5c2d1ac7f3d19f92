"""`ollama-provision check [MODEL...]`: is the server ready, and are these models there?"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from provision.commands import common_options, positive_float, server_and_models
from provision.errors import EXIT_NOT_READY, EXIT_UNREACHABLE
from provision.output import counted, human_bytes
from provision.result import CommandResult

if TYPE_CHECKING:  # the real imports happen inside run(): `--help` stays instant
    from provision.output import Output
    from provision.server import ModelStatus, OllamaServer, Readiness, ServerFacts

# The whole command's deadline: the probe (10 s) and the model list (30 s) with some
# slack, plus --wait, plus per model judged with --hardware (registry reads).
DEADLINE_S = 45.0
HARDWARE_PER_MODEL_S = 60.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        parents=[common_options()],
        help="is an Ollama server ready here? (diagnoses what is wrong)",
        description="Check that an Ollama server answers, and that MODELs are present. "
        "Exit 0 ready, 1 reachable but models missing, 2 input error, 3 unreachable.",
    )
    parser.add_argument("models", nargs="*", metavar="MODEL", help="models that must be present")
    parser.add_argument(
        "--wait",
        type=positive_float,
        default=0.0,
        metavar="SECONDS",
        help="keep trying (with backoff) until the server answers or this time runs out",
    )
    parser.add_argument(
        "--min-version",
        metavar="X.Y.Z",
        help="also require at least this server version (not ready otherwise)",
    )
    parser.add_argument(
        "--hardware",
        action="store_true",
        help="also judge each MODEL against this machine (as `hardware` does; slower)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `--help` and argument errors stay instant.
    from provision.http import deadline
    from provision.server import OllamaServer, check_readiness

    out, names, address = server_and_models(args)
    seconds = DEADLINE_S + args.wait + (HARDWARE_PER_MODEL_S * len(names) if args.hardware
                                        else 0.0)
    with deadline(seconds, "the whole check"), OllamaServer(address) as server:
        with contextlib.ExitStack() as shown:
            update = shown.enter_context(out.activity(
                f"waiting for Ollama at {address.url} (up to {args.wait:g} s)")) \
                if args.wait else None
            report = check_readiness(
                server, names, wait=args.wait, min_version=args.min_version,
                on_wait=_waiting_printer(update) if update else None,
            )
        fits = {}
        if args.hardware and report.server.reachable and names:
            with out.activity(f"judging {counted(len(names), 'model')} "
                              "against this machine"):
                fits = _judge(report, server)
    if args.json:
        out.emit_result(to_result(report, fits))
    elif out.terminal:
        _render_rich(report, out)
    else:
        _render_plain(report, out)
    if fits and not args.json:
        from provision.hardware import speed_words

        for name, fit in fits.items():
            speed = fit["tokens_per_second"]
            out.line(f"model {name}: {fit['verdict']}"
                     + (f" ({fit['where']})" if fit["where"] else "")
                     + (f", {speed_words(tuple(speed))}" if speed else "")
                     + (f": {fit['error']}" if fit["error"] else ""))
    if report.server.diagnosis is not None:
        out.diagnosis(report.server.diagnosis)
    for warning in report.warnings:
        out.warn(warning)
    return report.exit_code


def _judge(report: Readiness, server: OllamaServer) -> dict[str, dict[str, Any]]:
    """Hardware verdict per requested model (the machine probe is fast; the models are
    judged from /api/show when present, else from the registry)."""
    # Only with --hardware: the machine probe's imports (psutil, GPU tools) stay off
    # `check`'s usual path.
    from provision.hardware import assess, probe_machine

    names = [m.name for m in report.models]
    if not names:
        return {}
    judged = assess(names, probe_machine(server=server), server=server,
                    server_version=report.server.version, alternatives=False)
    result = {}
    for status, model in zip(report.models, judged.models):
        fit = model.fit
        result[status.display_name] = {
            "verdict": model.verdict,
            "where": fit.where if fit and fit.fits else None,
            "memory": fit.total if fit else None,
            "tokens_per_second": list(fit.tokens_per_second)
            if fit and fit.fits and fit.tokens_per_second else None,
            "error": model.error or ("; ".join(r.message for r in fit.reasons)
                                     if fit and not fit.fits else None),
        }
    return result


def _waiting_printer(update: Callable[[str], None]) -> Callable[[ServerFacts, float], None]:
    """What the server says while check waits for it: the live line on a terminal, a line
    about every 10 s in a log."""
    def on_wait(facts: ServerFacts, remaining: float) -> None:
        if facts.diagnosis:
            update(f"waiting for Ollama at {facts.address.url}: {facts.diagnosis.message} "
                   f"({remaining:.0f} s left)")

    return on_wait


def to_result(report: Readiness, fits: dict[str, dict[str, Any]] | None = None
              ) -> CommandResult:
    """`fits`: each model's hardware verdict (`--hardware`), by its name."""
    diagnosis = report.server.diagnosis
    fits = fits or {}
    return CommandResult("check", report.exit_code, {
        "server": {
            "url": report.address.url,
            "source": report.address.source,
            "reachable": report.exit_code != EXIT_UNREACHABLE,
            "version": report.server.version,
            "model_count": report.model_count,
            "responses_api": report.responses_api,
        },
        "diagnosis": None if diagnosis is None else diagnosis.to_json(),
        "models": [
            {
                "name": m.display_name,
                "present": m.installed is not None,
                "size": m.installed.size if m.installed else None,
                "parameter_size": m.installed.parameter_size if m.installed else None,
                "quantization": m.installed.quantization if m.installed else None,
                "digest": m.installed.digest if m.installed else None,
                **({"hardware": fits[m.display_name]} if m.display_name in fits else {}),
            }
            for m in report.models
        ],
        "warnings": list(report.warnings),
    })


def _model_line(m: ModelStatus) -> str:
    if m.installed is None:
        return f"model {m.name.short}: missing (pull it: ollama-provision pull {m.name.short})"
    facts = [human_bytes(m.installed.size)]
    facts += [f for f in (m.installed.parameter_size, m.installed.quantization) if f]
    return f"model {m.display_name}: present ({', '.join(facts)})"


_SOURCE = {"flag": "from --host", "env": "from OLLAMA_HOST", "default": "the default address"}


def _models(count: int | None) -> str:
    return f"{count} model" + ("" if count == 1 else "s")


def _render_plain(report: Readiness, out: Output) -> None:
    if report.server.diagnosis is not None:
        state = "unreachable" if report.exit_code == EXIT_UNREACHABLE else "not ready"
        out.line(f"ollama: {state} at {report.address.url}")
        return
    out.line(f"ollama: {report.server.version or 'unknown version'} at {report.address.url} "
             f"({_models(report.model_count)}) - "
             f"{'ready' if report.exit_code == 0 else 'not ready'}")
    for m in report.models:
        out.line(_model_line(m))


def _render_rich(report: Readiness, out: Output) -> None:
    from rich.table import Table  # tens of ms: only for a terminal

    console = out.console
    if report.server.diagnosis is not None:
        state = "unreachable" if report.exit_code == EXIT_UNREACHABLE else "not ready"
        console.print(f"[bold red]✗[/] Ollama {state} at {report.address.url}")
        return
    mark = "[bold green]✓[/]" if report.exit_code == 0 else "[bold yellow]![/]"
    console.print(
        f"{mark} Ollama [bold]{report.server.version or '?'}[/] at {report.address.url} "
        f"[dim]({_SOURCE[report.address.source]}, {_models(report.model_count)})[/]"
    )
    if not report.models:
        return
    table = Table(box=None, padding=(0, 2), show_edge=False)
    for column in ("model", "status", "size", "params", "quant"):
        table.add_column(column, style="bold" if column == "model" else None)
    for m in report.models:
        if m.installed is None:
            table.add_row(m.name.short, "[red]missing[/]", "", "", "")
        else:
            table.add_row(m.display_name, "[green]present[/]", human_bytes(m.installed.size),
                          m.installed.parameter_size, m.installed.quantization)
    console.print(table)
    if report.exit_code == EXIT_NOT_READY:
        missing = " ".join(m.name.short for m in report.models if m.installed is None)
        if missing:
            console.print(f"pull the missing models: [bold]ollama-provision pull {missing}[/]")

