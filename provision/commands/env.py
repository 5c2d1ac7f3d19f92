"""`ollama-provision env`: the server's address in the variables each tool reads."""

from __future__ import annotations

import argparse
import os

from provision.commands import common_options
from provision.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "env",
        parents=[common_options()],
        help="print the variables other tools read to find this server (for eval, "
        ".env files, $GITHUB_ENV)",
        description="Print the environment variables that point each tool at this Ollama "
        "server, in the form it reads: eval \"$(ollama-provision env)\". Does not contact "
        "the server (`check` does). A variable already set here to another value is kept "
        "and reported, never silently overwritten. Exit 0 all written, 1 some kept "
        "(a clash, reported), 2 input error (bad flag, two clients wanting one variable "
        "differently, --format github outside GitHub Actions).",
    )
    parser.add_argument("--client", action="append", default=[], metavar="NAME",
                        help="a tool to write for (repeatable): ollama (OLLAMA_HOST), "
                        "base-url (OLLAMA_BASE_URL, OLLAMA_API_BASE), openai "
                        "(OPENAI_BASE_URL, OPENAI_API_KEY), g4f (OLLAMA_HOST + OLLAMA_PORT); "
                        "default: ollama, base-url, openai")
    parser.add_argument("--format", choices=("sh", "dotenv", "json", "github"),
                        help="sh: export lines for eval (default); dotenv: NAME=value; "
                        "json: one document; github: appended to $GITHUB_ENV for later "
                        "workflow steps")
    parser.add_argument("--override", action="store_true",
                        help="replace variables already set here to other values "
                        "(default: keep them and report the clash)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `--help` and argument errors stay instant.
    from provision.clients import env_client, env_clients, env_result, plan_env, render_env
    from provision.output import Output
    from provision.server import resolve_host

    fmt = "json" if args.json else (args.format or "sh")
    if args.json and args.format not in (None, "json"):
        raise UsageError(f"--json and --format {args.format}: choose one")
    out = Output(json_mode=fmt == "json", quiet=args.quiet)
    github_env = os.environ.get("GITHUB_ENV")
    if fmt == "github" and not github_env:
        raise UsageError("--format github appends to $GITHUB_ENV, which is not set here",
                         hint="run it in a GitHub Actions step; elsewhere use --format sh "
                         "or dotenv")
    address = resolve_host(args.host)
    for note in address.notes:
        out.warn(note)
    names = list(dict.fromkeys(args.client)) or [
        n for n, c in env_clients().items() if c.default]
    plan = plan_env(address, [env_client(n) for n in names], os.environ,
                    override=args.override)
    result = env_result(plan)
    if fmt == "json":
        out.emit_result(result)
    elif fmt == "github":
        assert github_env is not None
        try:
            with open(github_env, "a", encoding="utf-8") as f:
                f.write(render_env(plan, fmt))
        except OSError as exc:
            raise UsageError(f"cannot append to $GITHUB_ENV ({github_env}): "
                             f"{exc.strerror}") from None
        for var in plan.variables:
            out.line(f"{var.name}={var.value} (for later steps, from $GITHUB_ENV)")
    else:
        out.stdout.write(render_env(plan, fmt))
        out.stdout.flush()
    for note in plan.notes:
        out.info(f"note: {note}")
    for clash in plan.clashes:
        out.warn(clash.message)
    return result.exit_code
