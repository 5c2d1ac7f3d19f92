"""`python -m tests.double`: serve the double (or something else) until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

from tests.double.catalog import CATALOG
from tests.double.not_ollama import NotOllamaServer
from tests.double.server import OllamaTestServer
from tests.double.wire import GIB, KIB, MIB


def _size(text: str) -> int:
    """`16GiB`, `8G`, `512MiB`, or a number of bytes."""
    match = re.fullmatch(r"\s*([\d.e+]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    unit = {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": 1024 * GIB}[match[2].upper()]
    return int(float(match[1]) * unit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.double",
                                     description="Serve the Ollama test double until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--version", default="0.13.5", help="Ollama version to claim")
    parser.add_argument("--installed", nargs="*", default=[], help="catalog models present")
    parser.add_argument("--rate", default="50e9",
                        help="download bytes per second ('none' = instant)")
    parser.add_argument("--tick", type=float, default=0.06, help="seconds between progress lines")
    parser.add_argument("--memory", type=_size, default=16 * GIB, help="system RAM, e.g. 16GiB")
    parser.add_argument("--vram", type=_size, nargs="*", default=None,
                        help="GPU memory sizes, e.g. 8GiB 24GiB (flag alone: CPU only; "
                             "absent: one 8 GiB GPU)")
    parser.add_argument("--registry-auth", action="store_true")
    parser.add_argument("--blob-redirect", action="store_true")
    parser.add_argument("--not-ollama", choices=["nginx", "raw", "silent"],
                        help="serve something that is not Ollama instead")
    parser.add_argument("--list-catalog", action="store_true", help="print the catalog and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests")
    args = parser.parse_args(argv)
    if args.list_catalog:
        try:
            for model in CATALOG.values():
                arts = model.artifacts()
                print(f"{model.short:50} {model.quant:7} {arts.size:>13,d} B  header "
                      f"{arts.weights.header_size:>10,d} B  {model.param_size}", flush=True)
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    server: OllamaTestServer | NotOllamaServer
    if args.not_ollama:
        server = NotOllamaServer(args.not_ollama, host=args.host, port=args.port)
    else:
        rate = None if args.rate.lower() == "none" else float(args.rate)
        server = OllamaTestServer(
            version=args.version, installed=args.installed, download_rate=rate, tick=args.tick,
            memory=args.memory, vram=args.vram,
            registry_auth=args.registry_auth, host=args.host, port=args.port,
            blob_redirect=args.blob_redirect, verbose=args.verbose)
    server.start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
