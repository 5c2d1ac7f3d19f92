"""Showing a fleet run: a live table on a terminal, plain periodic lines otherwise.

Both read the hosts' live HostStatus objects (written by the hosts' threads) and are
driven from the main thread (`tick`, `finished`). The terminal table has one row per
host; when there are more hosts than lines, the busy and failing hosts are shown first
and the rest are counted. Plain output (CI logs) gets a line per host as it finishes
and a fleet summary every `interval` seconds.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable

from provision.fleet.host import FINAL_STATES, HostResult, HostState, HostStatus
from provision.fleet.run import FleetResult
from provision.live import LineLog, LiveView
from provision.output import counted, human_bytes, wrap_line

if TYPE_CHECKING:  # rich is imported where a terminal is drawn (tens of ms otherwise)
    from rich.console import Console, RenderableType

_STYLE = {"ready": "green", "not-ready": "bold red", "unreachable": "bold red",
          "timed-out": "bold red", "interrupted": "yellow", "waiting": "dim"}


def _facts(result: HostResult, *, sync_dry_run: bool = False) -> list[str]:
    """What was done or found on a host, in a few words each (`sync_dry_run`: the models
    `--sync` would remove are said so)."""
    facts = []
    for verb, statuses in (("pulled", ("pulled",)), ("updated", ("updated",)),
                           ("created", ("created",)), ("would pull", ("pull", "pull again")),
                           ("would create", ("create",)),
                           ("would push", ("push", "push again"))):
        names = [m.name for m in result.models if m.action in statuses]
        if names:
            facts.append(f"{verb} {', '.join(names)}")
    if result.sent_bytes:
        facts.append(f"{human_bytes(result.sent_bytes)} sent")
    stale = [m.name for m in result.models if m.drift == "stale" and m.action is None]
    if stale:
        facts.append(f"stale {', '.join(stale)}")
    if result.removed:
        facts.append(f"removed {', '.join(result.removed)}")
    elif result.undeclared:
        verb = "would remove" if sync_dry_run else "undeclared"
        facts.append(f"{verb} {', '.join(result.undeclared)}")
    return facts


def describe(result: HostResult, *, sync_dry_run: bool = False) -> str:
    """One line about a finished host: its state, what changed, the first problem."""
    counts = Counter(m.status for m in result.models)
    facts = _facts(result, sync_dry_run=sync_dry_run)
    if result.models:
        facts.insert(0, f"{counts['ok'] + counts['changed']}/{len(result.models)} models ok")
    line = f"{result.name}: {result.state}"
    if facts:
        line += f" ({'; '.join(facts)})"
    if result.errors:
        line += f": {result.errors[0]}" + (f" (+{len(result.errors) - 1} more)"
                                           if len(result.errors) > 1 else "")
    return line


def summary_line(statuses: Sequence[HostStatus], results: dict[str, HostResult]) -> str:
    states = Counter(results[s.host.name].state if s.host.name in results else s.state
                     for s in statuses)
    done = sum(states[s] for s in FINAL_STATES)
    parts = [f"{done}/{len(statuses)} hosts done"]
    finals = [f"{states[s]} {s}" for s in FINAL_STATES if states[s]]
    if finals:
        parts[0] += f" ({', '.join(finals)})"
    busy = {k: v for k, v in states.items() if k not in FINAL_STATES and k != HostState.WAITING}
    if busy:
        parts.append(", ".join(f"{v} {k}" for k, v in sorted(busy.items())))
        percents = [m.percent for s in statuses if s.host.name not in results
                    for m in list(s.models.values()) if m.status == "pulling"
                    and m.percent is not None]
        if percents:
            parts[-1] += f" ({len(percents)} pulls, {sum(percents) / len(percents):.0f}% avg)"
    if states[HostState.WAITING]:
        parts.append(f"{states[HostState.WAITING]} waiting")
    return "fleet: " + "; ".join(parts)


class PlainView(LineLog):
    def __init__(self, statuses: Sequence[HostStatus], stream: IO[str], *,
                 interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(stream)
        self.statuses = statuses
        self.interval = interval
        self.clock = clock
        self.results: dict[str, HostResult] = {}
        self._next = clock() + interval

    def tick(self) -> None:
        now = self.clock()
        if now >= self._next and len(self.results) < len(self.statuses):
            self._next = now + self.interval
            self._write(summary_line(self.statuses, self.results))

    def finished(self, result: HostResult) -> None:
        """That it finished, as it happens; what it did is the report's line for it."""
        self.results[result.name] = result
        self._write(f"{result.name}: finished in {result.duration:.1f} s")


def _cell_models(status: HostStatus, result: HostResult | None) -> tuple[str, str, str]:
    """(ok, missing, pulling) cells of a host's row."""
    if result is not None:
        counts = Counter(m.status for m in result.models)
        ok = counts["ok"] + counts["changed"]
        missing = counts["failed"] + counts["pending"]
        return (str(ok) if result.models else "", str(missing) if missing else "", "")
    models = list(status.models.items())
    ok = sum(1 for _, m in models if m.status == "ok")
    # every model the host does not have yet, those downloading now included
    missing = sum(1 for _, m in models if m.status in ("missing", "failed", "pulling"))
    pulling = []
    for name, m in models:
        if m.status == "pulling":
            pct = m.percent
            pulling.append(f"{name} {pct:.0f}%" if pct is not None else name)
    return (str(ok) if models else "", str(missing) if missing else "", ", ".join(pulling))


class TerminalView(LiveView):
    """rich live table, redrawn a few times a second; it vanishes at the end (the final
    table replaces it)."""

    def __init__(self, statuses: Sequence[HostStatus], console: Console, *,
                 refresh_per_second: float = 4.0) -> None:
        self.statuses = statuses
        self.console = console
        self.refresh_per_second = refresh_per_second
        self.results: dict[str, HostResult] = {}

    def tick(self) -> None:
        pass  # rich redraws on its own thread

    def finished(self, result: HostResult) -> None:
        self.results[result.name] = result

    def _order(self) -> list[HostStatus]:
        """Busy and failing hosts first, then waiting ones, then ready ones."""
        def rank(s: HostStatus) -> int:
            result = self.results.get(s.host.name)
            if result is None:
                return 1 if s.state == HostState.WAITING else 0
            return 3 if result.state == HostState.READY else 0
        return sorted(self.statuses, key=rank)

    def __rich__(self) -> RenderableType:
        from rich.table import Table  # tens of ms: only when a terminal is drawn
        from rich.text import Text  # tens of ms: only when a terminal is drawn

        table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False,
                      expand=False)
        for column in ("host", "state", "ok", "missing", "pulling", "errors"):
            table.add_column(column, no_wrap=True, overflow="ellipsis",
                             min_width=len(column) if column != "host" else None)
        room = max(3, self.console.size.height - 4)
        shown = self.statuses if len(self.statuses) <= room else self._order()[: room - 1]
        for status in shown:
            result = self.results.get(status.host.name)
            state = result.state if result else status.state
            ok, missing, pulling = _cell_models(status, result)
            note = result.errors[0] if result and result.errors else status.note
            table.add_row(status.host.name, Text(state, style=_STYLE.get(state, "cyan")),
                          ok, missing, pulling, Text(note or "", style="red" if result
                                                     and not result.ready else ""))
        hidden = len(self.statuses) - len(shown)
        if hidden:
            table.add_row(Text(f"… {hidden} more", style="dim"), "", "", "", "",
                          Text(summary_line(self.statuses, self.results), style="dim"))
        return table


def make_view(statuses: Sequence[HostStatus], *, quiet: bool, terminal: bool,
              stream: IO[str]) -> PlainView | TerminalView | None:
    if quiet:
        return None
    if terminal:
        from rich.console import Console  # tens of ms: only when a terminal is drawn

        return TerminalView(statuses, Console(file=stream, force_terminal=True,
                                              highlight=False))
    return PlainView(statuses, stream)


# --- the final report ------------------------------------------------------------------


def drift_lines(result: FleetResult) -> list[str]:
    lines = []
    for d in result.drift:
        stale, outliers, unknown = d.with_state("stale"), d.outliers, d.with_state("unknown")
        if not (stale or outliers or unknown):
            continue
        parts = []
        if stale:
            has = ("the bundle has" if result.models_from.kind == "bundle"
                   else "the registry serves")
            parts.append(f"stale on {_hosts(stale)} ({has} {_short(d.reference_digest)})")
        if outliers:
            parts.append(f"differs from the majority ({_short(d.majority_digest)}) on "
                         f"{_hosts(outliers)}")
        if unknown:
            why = d.reference_error or "weights digest unreadable"
            parts.append(f"not checked on {_hosts(unknown)} ({why})")
        lines.append(f"drift: {d.model}: " + "; ".join(parts))
    if result.drift and not lines:
        lines.append("drift: none (every host has the registry's weights of every model)")
    return lines


def _hosts(names: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _short(digest: str | None) -> str:
    return digest.split(":", 1)[-1][:12] if digest else "?"


def source_lines(result: FleetResult) -> list[str]:
    """What a seed or a bundle moved (nothing when the hosts pulled themselves):
    `seed: 254.8 KB from the registry (6 blobs), 0 B from the cache` and
    `seed: 760.1 KB sent to 3 hosts`."""
    source = result.models_from
    if source.kind == "registry":
        return []
    count = result.hosts_sent
    sent = (f"{human_bytes(result.sent_bytes)} sent to {counted(count, 'host')}"
            if result.sent_bytes else "nothing sent (every host had it)")
    if source.cache is None:
        return [f"bundle: {sent} from {Path(source.path or '').name}"]
    c = source.cache
    if not (c.registry_bytes or c.cached_bytes or result.sent_bytes):
        return ["seed: nothing to send (every host had its models)"]
    return [f"seed: {human_bytes(c.registry_bytes)} from the registry "
            f"({counted(c.registry_blobs, 'blob')}), {human_bytes(c.cached_bytes)} "
            "from the cache", f"seed: {sent}"]


def verdict_line(result: FleetResult) -> str:
    ready = sum(1 for h in result.hosts if h.ready)
    line = f"fleet: {ready}/{len(result.hosts)} hosts ready"
    if result.failing:
        line += f"; not ready: {_hosts([h.name for h in result.failing], 20)}"
    if result.cancelled:
        line += " (cancelled: nothing was changed)"
    elif result.options.dry_run:
        line += " (dry run: nothing was changed)"
    elif not result.changed:
        line += " (nothing changed)"
    return line


def render_plain(result: FleetResult, write: Callable[[str], None]) -> None:
    sync_dry_run = result.options.sync and result.options.dry_run
    for host in result.hosts:
        write(describe(host, sync_dry_run=sync_dry_run))
    for line in drift_lines(result):
        write(line)
    stale = any(d.with_state("stale") for d in result.drift)
    if stale and not result.options.upgrade:
        write("hint: --upgrade pulls the stale models again")
    for line in source_lines(result):
        write(line)
    write(verdict_line(result))


def render_rich(result: FleetResult, console: Console) -> None:
    """The report: one table, a row per host (counts); then each host's note (what was
    done, or its first problem) on lines of its own, wrapped to the terminal: a table
    cell would cut it."""
    from rich.table import Table  # tens of ms: only when a terminal is drawn
    from rich.text import Text  # tens of ms: only when a terminal is drawn

    sync_dry_run = result.options.sync and result.options.dry_run
    table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
    for column in ("host", "state", "ok", "changed", "failed", "stale"):
        table.add_column(column, no_wrap=True)
    notes = []
    for host in result.hosts:
        counts = Counter(m.status for m in host.models)
        stale = sum(1 for m in host.models if m.drift == "stale" and m.action is None)
        table.add_row(host.name, Text(host.state, style=_STYLE.get(host.state, "")),
                      str(counts["ok"]), str(counts["changed"] or ""),
                      str((counts["failed"] + counts["pending"]) or ""), str(stale or ""))
        note = host.errors[0] if host.errors else "; ".join(
            _facts(host, sync_dry_run=sync_dry_run))
        if note:
            notes.append((host, note))
    console.print(table)
    for host, note in notes:
        style = "red" if host.errors else ""
        console.print(Text(wrap_line(f"{host.name}: {note}", console.width), style=style))
    for line in drift_lines(result):
        console.print(Text(wrap_line(line, console.width), style="yellow"))
    stale = any(d.with_state("stale") for d in result.drift)
    if stale and not result.options.upgrade:
        console.print("hint: --upgrade pulls the stale models again")
    for line in source_lines(result):
        console.print(Text(wrap_line(line, console.width)))
    mark = "green" if result.ready else "bold red"
    console.print(Text(wrap_line(verdict_line(result), console.width), style=mark))
