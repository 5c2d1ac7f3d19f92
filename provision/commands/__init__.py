"""One module per command (like pipx): each has `register(subparsers)` and `run(args)`."""

from __future__ import annotations

import argparse


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


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: '{text}'")
    return value
