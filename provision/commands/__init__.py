"""One module per command (like pipx): each has `register(subparsers)` and `run(args)`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Callable

from provision.names import ModelName, parse_names
from provision.output import Output

if TYPE_CHECKING:  # imported where it runs: the server package (httpx) stays off `--help`
    from provision.server import ServerAddress


def common_options() -> argparse.ArgumentParser:
    """Options every command takes, as an argparse parent."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--host",
        metavar="URL",
        help="Ollama server (default: $OLLAMA_HOST, else http://127.0.0.1:11434)",
    )
    parent.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parent.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parent.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parent


# Seconds and counts beyond these are typos, and would overflow the clocks and waits
# they are handed to (Event.wait(1e300) raises): refused as input errors.
MAX_SECONDS = 10_000_000  # ~4 months
MAX_COUNT = 1_000_000_000


def _quoted(text: str) -> str:
    return f"'{text}'" if len(text) <= 40 else f"'{text[:40]}...'"


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {_quoted(text)}") from None
    if not 0 <= value <= MAX_SECONDS:  # also refuses inf and nan
        raise argparse.ArgumentTypeError(f"must be a number from 0 to {MAX_SECONDS:,} "
                                         f"(seconds): {_quoted(text)}")
    return value


def stall_seconds(text: str) -> float:
    """`--stall-timeout`: seconds, more than 0."""
    value = positive_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: '{text}'")
    return value


def whole_number(minimum: int, maximum: int = MAX_COUNT) -> Callable[[str], int]:
    """An argparse type: an integer from `minimum` to `maximum`."""

    def parse(text: str) -> int:
        try:
            value = int(text) if len(text.strip()) <= 20 else None
        except ValueError:
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"not a whole number: {_quoted(text)}")
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be from {minimum} to {maximum:,}: "
                                             f"{_quoted(text)}")
        return value

    return parse


def server_and_models(args: argparse.Namespace) -> tuple[Output, list[ModelName], ServerAddress]:
    """The start every server command shares: output, names checked before any request
    (an invalid one is exit 2), the resolved address and its notes."""
    from provision.server import resolve_host

    out = Output(json_mode=args.json, quiet=args.quiet)
    names = parse_names(args.models)
    address = resolve_host(args.host)
    for note in address.notes:
        out.warn(note)
    return out, names, address
