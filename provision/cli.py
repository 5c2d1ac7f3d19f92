"""The command line (`ollama-provision`, or `python -m provision`): a thin layer that
parses arguments and runs one command module.

Each command lives in `provision/commands/<name>.py` with `register(subparsers)` and
`run(args) -> int`. Heavy imports happen inside `run`, so `--help` and argument
errors stay instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from provision import __version__
from provision.errors import EXIT_INTERRUPTED, ProvisionError
from provision.interrupts import signals_interrupt
from provision.output import Output, print_wrapped
from provision.result import CommandResult

COMMANDS = ("check", "pull", "config", "env", "hardware", "apply", "fleet", "bundle")


class _Parser(argparse.ArgumentParser):
    commands: dict[str, argparse.ArgumentParser]  # each command's own parser


def build_parser(only: str | None = None) -> _Parser:
    """The parser; with `only`, just that command's (scripts call one command in loops:
    importing the other command modules would cost more than the whole `check`)."""
    parser = _Parser(
        prog="ollama-provision",
        description="Make this machine, a CI runner or a fleet ready to run local LLMs "
        "with Ollama.",
        epilog="Exit codes: 0 ready, 1 not ready (missing or failed models), 2 usage or "
        "input error, 3 server unreachable, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in (only,) if only in COMMANDS else COMMANDS:
        importlib.import_module(f"provision.commands.{name}").register(subparsers)
    parser.commands = subparsers.choices
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser: its usage, not the top level's
        command = parser.commands.get(getattr(args, "command", None) or "", parser)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.DEBUG, format="debug: %(name)s: %(message)s")
    try:
        with signals_interrupt():
            return int(args.run(args))
    except ProvisionError as exc:
        print_wrapped(f"error: {exc.message}", sys.stderr)
        if exc.hint:
            print_wrapped(f"hint: {exc.hint}", sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if getattr(args, "json", False):  # the commands with partial results print their own
            Output(json_mode=True).emit_result(
                CommandResult(args.command, EXIT_INTERRUPTED, {"interrupted": True}))
        print("\ninterrupted: run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
