"""`ollama-provision apply [-f FILE]`: the whole job from one declarative config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision.commands import common_options, positive_float, stall_seconds, whole_number
from provision.result import CommandResult

if TYPE_CHECKING:  # the real imports happen inside run(): `--help` stays instant
    from provision.apply import ApplyModelResult, ApplyResult
    from provision.models import Verification
    from provision.output import Output


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "apply",
        parents=[common_options()],
        help="make this machine ready: check, judge hardware, pull, verify, configure Codex",
        description="Run the whole job from a manifest (default: the built-in default.toml). "
        "Idempotent: a second run changes nothing and says so. Exit 0 ready, 1 a required "
        "model failed or does not fit, 2 input error, 3 server unreachable.",
    )
    parser.add_argument("-f", "--file", metavar="FILE",
                        help="manifest (TOML); default: the built-in default.toml")
    parser.add_argument("--dry-run", action="store_true",
                        help="stop after planning: print downloads, sizes, disk, config diff")
    parser.add_argument("--start", action="store_true",
                        help="start `ollama serve` when Ollama is installed but not running")
    parser.add_argument("--wait", type=positive_float, metavar="SECONDS",
                        help="wait this long for a starting server, also for one not "
                        "installed here, as in a container (default: [server].wait, which "
                        "waits only for an installed server)")
    parser.add_argument("--ignore-hardware", action="store_true",
                        help="pull and use models the hardware check refuses")
    parser.add_argument("--force", action="store_true", help=argparse.SUPPRESS)  # the old name
    parser.add_argument("--require", choices=("cpu", "partial", "gpu"),
                        help="least placement a model must get (default: [hardware].require, "
                        "cpu): cpu (runs at all), partial (some layers on GPU), gpu (all)")
    pull = parser.add_argument_group("pull settings (default: the manifest's [pull])")
    pull.add_argument("--insecure", action="store_true", default=None,
                      help="the registry in a model name speaks plain HTTP")
    pull.add_argument("--parallel", type=whole_number(1), metavar="N",
                      help="pull N models at once")
    pull.add_argument("--stall-timeout", type=stall_seconds, metavar="SECONDS",
                      help="no progress for this long: drop the connection and retry")
    pull.add_argument("--retries", type=whole_number(0), metavar="N",
                      help="retries per model, with exponential backoff")
    parser.add_argument("--no-verify", action="store_true", help="skip the verify step")
    parser.add_argument("--bundle", metavar="FILE",
                        help="take the models from this bundle, not the registry (replaces "
                        "[pull] bundle; the server needs no registry)")
    parser.add_argument("--assume", action="append", default=[], metavar="SPEC",
                        help="judge a described machine instead of this one "
                        "(see `hardware --help`)")
    parser.add_argument("--codex-version", metavar="X.Y.Z",
                        help="write the config for this Codex release (default: detected)")
    parser.add_argument("--codex-home", metavar="DIR",
                        help="Codex home (default: [codex].codex_home, $CODEX_HOME, ~/.codex)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `--help` and argument errors stay instant.
    from provision.apply import (
        INTERRUPTED_TEXT,
        ApplyOptions,
        StepLog,
        load_manifest,
        run_apply,
    )
    from provision.errors import EXIT_INTERRUPTED
    from provision.github import Actions
    from provision.output import Output, stream_is_live

    if args.force:  # users' scripts still say it
        print("warning: apply --force is now --ignore-hardware (--force goes away in a later "
              "release)", file=sys.stderr, flush=True)
    manifest = load_manifest(args.file)
    out = Output(json_mode=args.json, quiet=args.quiet)
    actions = Actions()
    terminal = stream_is_live(sys.stderr)
    log = StepLog(sys.stderr, quiet=args.quiet, actions=actions, terminal=terminal)
    pull = {key: value for key in ("insecure", "parallel", "stall_timeout", "retries")
            if (value := getattr(args, key)) is not None}
    result = run_apply(
        manifest,
        ApplyOptions(host=args.host, dry_run=args.dry_run, start=args.start, wait=args.wait,
                     ignore_hardware=args.ignore_hardware or args.force, require=args.require,
                     pull=pull, verify=not args.no_verify, assume=tuple(args.assume),
                     codex_version=args.codex_version, codex_home=args.codex_home,
                     bundle=str(Path(args.bundle).absolute()) if args.bundle else None),
        log=log, progress_stream=sys.stderr, terminal=terminal,
    )
    if result.models_dir:
        actions.set_output("models-dir", result.models_dir)
        if actions.enabled:
            out.info(f"models directory (cache it between runs): {result.models_dir}")
    actions.append_summary(markdown_summary(result))
    if args.json:
        out.emit_result(to_result(result))
    elif out.terminal:
        _render_rich(result, out)
    else:
        _render_plain(result, out)
    if result.exit_code == EXIT_INTERRUPTED:
        out.error(INTERRUPTED_TEXT)
    return result.exit_code


def _verification(v: Verification | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {"ok": v.ok, "placement": v.placement, "size": v.size, "size_vram": v.size_vram,
            "context_length": v.context_length, "tokens_per_second": v.tokens_per_second,
            "load_seconds": v.load_seconds, "error": v.error}


def to_result(result: ApplyResult) -> CommandResult:
    return CommandResult("apply", result.exit_code, {
        "source": result.source,
        "models_from": {"kind": "bundle", "path": result.bundle} if result.bundle else
        {"kind": "registry"},
        "server": {"url": result.address.url},
        "dry_run": result.dry_run,
        "changed": result.changed,
        "models_dir": result.models_dir,
        "steps": [{"name": s.name, "status": s.status, "changed": s.changed,
                   "duration": round(s.duration, 3), "summary": s.summary,
                   "errors": list(s.errors), "fixes": list(s.fixes), "data": s.data}
                  for s in result.steps],
        "models": [{"name": m.name, "declared": m.declared, "required": m.required,
                    "custom": m.custom, "verdict": m.verdict, "where": m.where, "pull": m.pull,
                    "create": m.create, "status": m.status, "changed": m.changed,
                    "error": m.error, "notes": list(m.notes),
                    "verification": _verification(m.verification)} for m in result.models],
    })


def _rate(m: ApplyModelResult) -> str:
    v = m.verification
    return f"{v.tokens_per_second:.1f}" if v and v.tokens_per_second else ""


def _where(m: ApplyModelResult) -> str:
    v = m.verification
    return (v.placement if v and v.placement else None) or m.where or ""


def markdown_summary(result: ApplyResult) -> str:
    verdict = "ready" if result.exit_code == 0 else f"not ready (exit {result.exit_code})"
    lines = [f"### ollama-provision apply: {verdict}", "",
             f"Server `{result.address.url}`, manifest `{result.source}`", "",
             "| step | status | summary |", "|---|---|---|"]
    lines += [f"| {s.name} | {s.status} | {_cell(s.summary)} |" for s in result.steps]
    fixes = [(s.name, fix) for s in result.steps for fix in s.fixes]
    if fixes:
        lines += ["", "What to do:", ""] + [f"- {name}: {fix}" for name, fix in fixes]
    if result.models:
        lines += ["", "| model | status | runs on | tokens/s | note |", "|---|---|---|---|---|"]
        for m in result.models:
            note = _cell(m.error or "; ".join(m.notes))
            lines.append(f"| {m.name} | {m.status} | {_where(m)} | {_rate(m)} | {note} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "/")


def _verdict(result: ApplyResult) -> str:
    """The run's last line: ready or not, and what changed (the step log said how)."""
    changed = result.changed_steps
    state = {0: "ready", 130: "interrupted"}.get(result.exit_code, "not ready")
    what = ("would change: " if result.dry_run else "changed: ") + ", ".join(changed) \
        if changed else ("nothing to change" if result.dry_run else "nothing changed")
    return f"apply: {state} ({what})"


def _render_plain(result: ApplyResult, out: Output) -> None:
    """stdout's result: a line per model (why one failed is in the step log), then the
    verdict."""
    for m in result.models:
        facts = [f for f in (_where(m), f"{_rate(m)} tok/s" if _rate(m) else "") if f]
        line = f"model {m.name}: {m.status}" + (f" ({', '.join(facts)})" if facts else "")
        if m.notes and not m.error:
            line += f"; {'; '.join(m.notes)}"
        out.line(line)
    out.line(_verdict(result))


def _render_rich(result: ApplyResult, out: Output) -> None:
    """On a terminal the step log above says every step's result and every model's: only
    the verdict is left to say."""
    from rich.text import Text  # tens of ms: only for a terminal

    style = "bold green" if result.exit_code == 0 else "bold red"
    out.console.print(Text(_verdict(result), style=style))
