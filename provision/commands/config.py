"""`ollama-provision config [MODEL]`: point Codex at the Ollama server, safely."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from provision.commands import common_options
from provision.errors import EXIT_OK, UsageError
from provision.output import short_path
from provision.result import CommandResult

if TYPE_CHECKING:  # the real imports happen inside run(): `--help` stays instant
    from provision.clients import ConfigOutcome
    from provision.clients.codex import CodexConfigResult
    from provision.output import Output

# config's Codex-only flags, with the value that means "not given".
_CODEX_ONLY = {"format": "auto", "codex_version": None, "profile": "ollama",
               "provider_id": None, "codex_home": None, "env_key": None, "env_header": [],
               "no_validate": False}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        parents=[common_options()],
        help="write a client's config for this Ollama server (Codex by default)",
        description="Write what a client reads to use this Ollama server, the user's other "
        "settings kept byte for byte: for Codex (the default) what the installed release "
        "reads, a profile (`codex --profile ollama`) by default; `--client dbgpt`: DB-GPT's "
        "TOML. Exit 0 written or unchanged, 1 written but the client or the server is not "
        "ready for it, 2 input error (bad flag, invalid or read-only file).",
    )
    parser.add_argument("model", nargs="?", metavar="MODEL",
                        help="the (chat) model to use (default: Codex's profile's, else the "
                        "server's model when it has one; with several, name one)")
    parser.add_argument("--client", default="codex", metavar="NAME",
                        help="the tool to configure: codex (default), dbgpt (its TOML, "
                        "named with --output); see `env` for tools that read variables")
    parser.add_argument("--embedding-model", metavar="MODEL",
                        help="dbgpt: also its embedding model ([[models.embeddings]])")
    parser.add_argument("--output", metavar="FILE",
                        help="write a standalone file instead of $CODEX_HOME/config.toml "
                        "(the seed's [model_providers.ollama] table)")
    parser.add_argument("--format", choices=("auto", "codex", "seed"), default="auto",
                        help="seed: only [model_providers.ollama]; codex: what the Codex "
                        "release reads; auto (default): seed with --output, else codex")
    parser.add_argument("--codex-version", metavar="X.Y.Z",
                        help="write for this Codex release (default: `codex --version`, "
                        "else the newest)")
    parser.add_argument("--profile", default="ollama", metavar="NAME",
                        help="profile to write (default: ollama): `codex --profile NAME`")
    parser.add_argument("--provider-id", metavar="ID",
                        help="provider id (default: Codex's built-in `ollama` for "
                        "http://localhost:11434, else ollama-<host>)")
    parser.add_argument("--set-default", action="store_true",
                        help="make Ollama Codex's default (top-level model/model_provider) "
                        "instead of writing a profile")
    parser.add_argument("--codex-home", metavar="DIR",
                        help="Codex's directory (default: $CODEX_HOME, else ~/.codex)")
    parser.add_argument("--env-key", metavar="VAR",
                        help="NAME of the environment variable holding the server's API key")
    parser.add_argument("--env-header", action="append", default=[], metavar="HEADER=VAR",
                        help="send HEADER with the value of environment variable VAR "
                        "(repeatable)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the diff of what would change; write nothing")
    parser.add_argument("--no-validate", action="store_true",
                        help="do not ask the installed codex whether it loads the result")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.client != "codex" or args.embedding_model:
        return _run_client(args)  # other clients (an embedding model is not for Codex)
    # Imported here, not at the top: `--help` and argument errors stay instant.
    from provision.clients.codex import CodexConfigRequest, configure_codex, parse_env_header
    from provision.output import Output

    out = Output(json_mode=args.json, quiet=args.quiet)
    request = CodexConfigRequest(
        model=args.model, host=args.host,
        output=Path(args.output) if args.output else None, format=args.format,
        codex_version=args.codex_version, profile=args.profile,
        provider_id=args.provider_id, set_default=args.set_default,
        codex_home=Path(args.codex_home) if args.codex_home else None,
        env_key=args.env_key,
        env_http_headers=tuple(parse_env_header(h) for h in args.env_header),
        dry_run=args.dry_run, validate=not args.no_validate,
    )
    result = configure_codex(request)
    if args.json:
        out.emit_result(to_result(result))
    else:
        _render(result, out)
    for warning in result.warnings:
        out.warn(warning)
    if result.validation.status in ("fail", "rolled-back"):
        out.error(f"Codex does not load the config: {result.validation.message}")
    return result.exit_code


def to_result(result: CodexConfigResult) -> CommandResult:
    server = result.server
    return CommandResult("config", result.exit_code, {
        "changed": result.changed and not result.dry_run,
        "dry_run": result.dry_run,
        "form": result.form,
        "provider_id": result.provider_id,
        "wire_api": result.wire_api,
        "base_url": result.base_url,
        "reason": result.reason,
        "profile": result.profile,
        "profile_style": result.profile_style,
        "set_default": result.set_default,
        "model": result.model,
        "usage": result.usage or None,
        "codex": {
            "version": result.codex.version,
            "source": result.codex.source,
            "binary": result.codex.binary,
            "installed_version": result.codex.installed_version,
        },
        "server": {
            "url": server.address.url,
            "reachable": server.reachable,
            "version": server.version,
            "responses_api": server.responses_api,
        },
        "files": [
            {"path": f.path, "role": f.role, "status": f.status, "backup": f.backup,
             "diff": f.diff}
            for f in result.files
        ],
        "migrations": list(result.migrations),
        "validation": {
            "status": result.validation.status,
            "message": result.validation.message,
            "checks": [{"check": v.check, "status": v.status, "message": v.message}
                       for v in result.validation.checks],
        },
        "warnings": list(result.warnings),
    })


_FORMS = {
    "seed": "[model_providers.ollama] (the seed's standalone table)",
    "ollama-table": "[model_providers.ollama]",
    "builtin": "Codex's built-in `ollama` provider",
    "custom": "[model_providers.{id}]",
}


def _render(result: CodexConfigResult, out: Output) -> None:
    codex = result.codex
    release = f"Codex {codex.version}" if codex.version else "the newest Codex"
    source = {"flag": "--codex-version", "detected": "installed", "newest": "none installed"}
    server = result.server
    ollama = (f"Ollama {server.version or '(version unknown)'}" if server.reachable
              else "Ollama (unreachable)")
    out.info(f"for {release} ({source[codex.source]}) and {ollama} at {server.address.url}")
    form = _FORMS[result.form].format(id=result.provider_id)
    wire = f', wire_api = "{result.wire_api}"' if result.wire_api else ""
    out.line(f"provider: {form}{wire}")
    out.info(f"  because {result.reason}")
    if result.dry_run:
        for f in result.files:
            if f.changed:
                out.line(f.diff.rstrip("\n"))
    for f in result.files:
        if f.status == "unchanged" and not Path(f.path).exists():
            continue  # not needed, not written (an empty config.toml beside a profile)
        backup = f" (backup: {short_path(f.backup)})" if f.backup else ""
        out.line(f"{f.status}: {short_path(f.path)}{backup}")
    for migration in result.migrations:
        out.line(f"migrated: {migration}")
    validation = result.validation
    if validation.status == "ok":
        checks = ", ".join(v.check for v in validation.checks)
        out.line(f"codex: config loads ({checks})")
        for verdict in validation.checks:
            if "Codex warns" in verdict.message:
                out.info(f"  {verdict.message}")
    elif validation.status == "skipped":
        out.info(f"not checked with codex: {validation.message}")
    elif validation.status == "error":
        out.warn(f"could not ask codex: {validation.message}")
    if result.usage and result.exit_code == 0 and not result.dry_run:
        out.line(f"use it: {result.usage}")


# --- `config --client NAME`: the clients other than Codex ---------------------------------


def _run_client(args: argparse.Namespace) -> int:
    """One request to the client, one outcome, rendered as lines or one JSON document."""
    from provision.clients import ConfigRequest, config_client
    from provision.output import Output
    from provision.server import resolve_host

    client = config_client(args.client)
    if client.configure is None:
        raise UsageError(f"--embedding-model is not for --client {client.name}")
    given = [k for k, unset in _CODEX_ONLY.items() if getattr(args, k) != unset]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise UsageError(f"{flag} is for --client codex, not {client.name}")
    out = Output(json_mode=args.json, quiet=args.quiet)
    address = resolve_host(args.host)
    for note in address.notes:
        out.warn(note)
    outcome = client.configure(ConfigRequest(
        address=address, model=args.model, embedding_model=args.embedding_model,
        output=args.output, set_default=args.set_default, dry_run=args.dry_run,
        environ=os.environ))
    if args.json:
        out.emit_result(client_result(outcome, address.url))
    else:
        _render_client(outcome, out, address.url)
    for warning in outcome.warnings:
        out.warn(warning)
    return EXIT_OK


def client_result(outcome: ConfigOutcome, url: str) -> CommandResult:
    f = outcome.file
    return CommandResult("config-client", EXIT_OK, {
        "client": outcome.client, "changed": outcome.changed and not outcome.dry_run,
        "dry_run": outcome.dry_run, "server": {"url": url}, "models": dict(outcome.models),
        "usage": outcome.usage,
        "files": [{"path": f.path, "role": f.role, "status": f.status, "backup": f.backup,
                   "diff": f.diff}],
        "warnings": list(outcome.warnings),
    })


def _render_client(outcome: ConfigOutcome, out: Output, url: str) -> None:
    models = ", ".join(f"{role} {model}" for role, model in outcome.models)
    out.info(f"for {outcome.client} ({models}) and Ollama at {url}")
    f = outcome.file
    if outcome.dry_run and f.changed:
        out.line(f.diff.rstrip("\n"))
    backup = f" (backup: {short_path(f.backup)})" if f.backup else ""
    out.line(f"{f.status}: {short_path(f.path)}{backup}")
    if not outcome.dry_run:
        out.line(f"use it: {outcome.usage}")
