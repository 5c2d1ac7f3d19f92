"""`config --client NAME` for the clients other than Codex (Codex keeps its own path in
commands/config.py): one request, one outcome, rendered as lines or one JSON document."""

from __future__ import annotations

import argparse
from typing import Any

from provision.errors import EXIT_OK, UsageError

SCHEMA = "ollama-provision.config-client/1"
# config's Codex-only flags, with the value that means "not given".
_CODEX_ONLY = {"format": "auto", "codex_version": None, "profile": "ollama",
               "provider_id": None, "codex_home": None, "env_key": None, "env_header": [],
               "no_validate": False}


def run_config(args: argparse.Namespace) -> int:
    import os

    from provision.clients import ConfigRequest, config_client
    from provision.host import resolve_host
    from provision.output import Output

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
        out.emit_json(to_json(outcome, address.url))
    else:
        render(outcome, out, address.url)
    for warning in outcome.warnings:
        out.warn(warning)
    return EXIT_OK


def to_json(outcome: Any, url: str) -> dict[str, Any]:
    f = outcome.file
    return {
        "schema": SCHEMA, "client": outcome.client, "exit_code": EXIT_OK, "ready": True,
        "changed": outcome.changed and not outcome.dry_run, "dry_run": outcome.dry_run,
        "server": {"url": url}, "models": dict(outcome.models), "usage": outcome.usage,
        "files": [{"path": f.path, "role": f.role, "status": f.status, "backup": f.backup,
                   "diff": f.diff}],
        "warnings": list(outcome.warnings),
    }


def render(outcome: Any, out: Any, url: str) -> None:
    models = ", ".join(f"{role} {model}" for role, model in outcome.models)
    out.info(f"for {outcome.client} ({models}) and Ollama at {url}")
    f = outcome.file
    if outcome.dry_run and f.changed:
        out.line(f.diff.rstrip("\n"))
    backup = f" (backup: {f.backup})" if f.backup else ""
    out.line(f"{f.status}: {f.path}{backup}")
    if not outcome.dry_run:
        out.line(f"use it: {outcome.usage}")
