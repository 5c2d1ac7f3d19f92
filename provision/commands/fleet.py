"""`ollama-provision fleet -f INVENTORY.toml`: the declared models on every host."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision.commands import positive_float, whole_number
from provision.output import counted
from provision.result import CommandResult

if TYPE_CHECKING:  # the real imports happen inside run(): `--help` stays instant
    from provision.fleet import FleetInventory, FleetResult, HostResult
    from provision.models import Verification


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: '{text}'")
    return value


def _size(text: str) -> int:
    # Imported here: the bundle package (httpx) stays off `--help`.
    from provision.bundle import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise argparse.ArgumentTypeError(f"not a size: '{shown}' (bytes, or decimal units "
                                         "like 500M, 100G, 1.5T)") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="the same declared models on every server of an inventory; drift shown",
        description="Check, plan, pull and verify the inventory's models on every host "
        "at once (each host with its own timeouts), and show where the weights drifted "
        "from the registry and from the other hosts. Exit 0 every host ready, 1 a host is "
        "not ready (named), 2 input error, 3 no host reachable, 130 interrupted.",
    )
    parser.add_argument("-f", "--file", "-i", "--inventory", dest="inventory", required=True,
                        metavar="FILE", help="the fleet inventory (TOML): hosts, groups and "
                        "their models (-i/--inventory: the older spelling)")
    parser.add_argument("--concurrency", type=_at_least_one, metavar="N",
                        help="hosts worked on at once (default: [fleet].concurrency, 256)")
    parser.add_argument("--host-timeout", type=positive_float, metavar="SECONDS",
                        help="give up on a host whose whole run takes longer "
                        "(default: [fleet].host_timeout; 0: no limit)")
    parser.add_argument("--upgrade", action="store_true",
                        help="pull again the models whose weights differ from the registry's")
    parser.add_argument("--sync", action="store_true",
                        help="remove models a host has but the inventory does not declare "
                        "(they are listed first)")
    parser.add_argument("-y", "--yes", action="store_true",
                        help="do not ask before --sync removes models (needed when not "
                        "interactive)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check and plan every host, show the drift, change nothing")
    parser.add_argument("--no-verify", action="store_true",
                        help="do not load and try each model after pulling")
    parser.add_argument("--bundle", type=Path, metavar="FILE",
                        help="upload the models from this bundle (hosts need no registry); "
                        "drift is against the bundle (default: [pull] bundle)")
    parser.add_argument("--seed", action="store_true",
                        help="download each model once into this machine's cache and upload "
                        "it from there to every host that needs it ([seed] enabled)")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="the seed cache (default: [seed] cache_dir, else "
                        "$XDG_CACHE_HOME/ollama-provision or ~/.cache/ollama-provision)")
    parser.add_argument("--cache-size", type=_size, metavar="SIZE",
                        help="the seed cache's budget, like 100G (default: [seed] "
                        "cache_size, 100G; 0 keeps nothing after the run)")
    parser.add_argument("--uploads", type=whole_number(1, 10_000), metavar="N",
                        help="blob uploads from this machine at once, all hosts together "
                        "(default: [fleet] uploads, 4)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `--help` and argument errors stay instant.
    from provision.errors import UsageError
    from provision.fleet import (
        FleetInterrupted,
        FleetOptions,
        NullView,
        load_inventory,
        run_fleet,
    )
    from provision.fleet.view import make_view, render_plain, render_rich
    from provision.output import Output, short_path, stream_is_live

    _check_source_flags(args)
    inventory = load_inventory(args.inventory)
    _check_proxies(inventory)
    interactive = sys.stdin.isatty() and stream_is_live(sys.stderr)
    if args.sync and not args.yes and not args.dry_run and not interactive:
        raise UsageError("--sync removes models: add --yes to allow that without a prompt",
                         hint="--sync --dry-run lists what would be removed")
    out = Output(json_mode=args.json, quiet=args.quiet)
    options = FleetOptions(upgrade=args.upgrade, sync=args.sync, dry_run=args.dry_run,
                           verify=not args.no_verify, concurrency=args.concurrency,
                           host_timeout=args.host_timeout, bundle=args.bundle,
                           seed=True if args.seed else None, cache_dir=args.cache_dir,
                           cache_size=args.cache_size, uploads=args.uploads)
    concurrency = min(options.concurrency or inventory.concurrency, len(inventory.hosts))
    _allow_sockets(concurrency)
    count = len(inventory.hosts)
    out.info(f"fleet: {counted(count, 'host')} from "
             f"{short_path(inventory.source)}, {concurrency} at once"
             + (" (dry run)" if args.dry_run else ""))
    terminal = stream_is_live(sys.stderr)
    confirm = _prompt if args.sync and not args.yes and interactive else None
    try:
        result = run_fleet(inventory, options, confirm=confirm,
                           view=lambda s: make_view(s, quiet=args.quiet, terminal=terminal,
                                                    stream=sys.stderr) or NullView())
    except FleetInterrupted as stop:
        result = stop.result
        out.error("interrupted: the servers stopped downloading and keep what they have",
                  "run the same command again to continue where it stopped")
    if args.json:
        out.emit_result(to_result(result))
    elif not args.quiet:
        if out.terminal:
            render_rich(result, out.console)
        else:
            render_plain(result, out.line)
    if result.failing and not result.cancelled:
        names = ", ".join(f"{h.name} ({h.state})" for h in result.failing[:20])
        more = len(result.failing) - 20
        out.error(f"{len(result.failing)} of {len(result.hosts)} hosts not ready: {names}"
                  + (f" and {more} more" if more > 0 else ""))
    return result.exit_code


def _check_source_flags(args: argparse.Namespace) -> None:
    """Where the models come from is one choice: refused before anything is touched."""
    from provision.errors import UsageError

    if args.seed and args.bundle is not None:
        raise UsageError("--seed and --bundle cannot be combined",
                         hint="--seed takes the models from the registry through this "
                         "machine's cache, --bundle from a bundle file")
    if not args.seed:
        for flag, value in (("--cache-size", args.cache_size), ("--cache-dir", args.cache_dir)):
            if value is not None:
                raise UsageError(f"{flag} is for the seed cache: it needs --seed")


def _check_proxies(inventory: FleetInventory) -> None:
    """A proxy setting that cannot be used is an input error before any host starts (in a
    host's thread it would be that host's failure, hundreds of times)."""
    from provision.http import proxy_for

    for host in inventory.hosts:
        if not host.address.is_loopback:
            proxy_for(host.address.url, os.environ)


def _prompt(removals: list[tuple[str, tuple[str, ...]]]) -> bool:
    count = sum(len(models) for _, models in removals)
    print(f"--sync would remove {counted(count, 'undeclared model')}:",
          file=sys.stderr)
    for host, models in removals:
        print(f"  {host}: {', '.join(models)}", file=sys.stderr)
    try:
        answer = input("remove them? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _allow_sockets(concurrency: int) -> None:
    """A few sockets per host at once: raise the soft open-files limit when it is lower
    (commonly 1024) and the hard limit allows it."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    want = 64 + 8 * concurrency
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        # On failure keep the limit: hosts beyond it fail with a clear connect error.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _verification(v: Verification | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {"ok": v.ok, "placement": v.placement, "tokens_per_second": v.tokens_per_second,
            "load_seconds": v.load_seconds, "error": v.error}


def host_to_json(h: HostResult) -> dict[str, Any]:
    return {
        "name": h.name, "url": h.url, "labels": dict(h.labels), "groups": list(h.groups),
        "state": h.state, "ready": h.ready, "changed": h.changed, "version": h.version,
        "duration": round(h.duration, 3), "diagnosis": h.diagnosis, "errors": list(h.errors),
        "models": [{"name": m.name, "required": m.required, "custom": m.custom,
                    "drift": m.drift, "digest_before": m.digest_before, "digest": m.digest,
                    "action": m.action, "status": m.status, "error": m.error,
                    "sent_bytes": m.sent_bytes, "blobs_sent": m.blobs_sent,
                    "verification": _verification(m.verification)} for m in h.models],
        "sent_bytes": h.sent_bytes,
        "undeclared": list(h.undeclared), "removed": list(h.removed),
    }


def to_result(result: FleetResult) -> CommandResult:
    from provision.fleet import FINAL_STATES
    from provision.models import DriftState, drift_to_json

    states = Counter(h.state for h in result.hosts)
    o = result.options
    models_from = result.models_from
    fields: dict[str, Any] = {"models_from": models_from.to_json()}
    if models_from.kind != "registry":
        moved: dict[str, Any] = {"sent_bytes": result.sent_bytes,
                                 "hosts_sent": result.hosts_sent}
        if models_from.cache is not None:
            c = models_from.cache
            moved = {"registry_bytes": c.registry_bytes, "registry_blobs": c.registry_blobs,
                     "cached_bytes": c.cached_bytes, "resumed_bytes": c.resumed_bytes,
                     "evicted_bytes": c.evicted_bytes, **moved}
        fields[models_from.kind] = moved
    return CommandResult("fleet", result.exit_code, {
        "inventory": result.source,
        **fields,
        "changed": result.changed,
        "cancelled": result.cancelled,
        "options": {"upgrade": o.upgrade, "sync": o.sync, "dry_run": o.dry_run,
                    "verify": o.verify, "concurrency": result.concurrency},
        "duration": round(result.duration, 3),
        "summary": {"hosts": len(result.hosts), **{str(s): states[s] for s in FINAL_STATES},
                    "changed": sum(1 for h in result.hosts if h.changed),
                    "stale": sorted({h for d in result.drift
                                     for h in d.with_state(DriftState.STALE)})},
        "failing_hosts": [h.name for h in result.failing],
        "hosts": [host_to_json(h) for h in result.hosts],
        "drift": drift_to_json(result.drift,
                               "bundle" if models_from.kind == "bundle" else "registry"),
    })
