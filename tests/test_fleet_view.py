"""What the fleet shows while it runs: a live table on a terminal (one row per host, with
pulls in percent), plain periodic lines in CI logs."""

from __future__ import annotations

import io

from rich.console import Console

from provision.fleet import HostModelResult, HostResult, HostStatus, parse_inventory
from provision.fleet.view import PlainView, TerminalView


def _statuses(count: int) -> list[HostStatus]:
    hosts = "".join(f'[[hosts]]\nname = "h{i}"\nurl = "http://10.0.0.{i}:11434"\n'
                    for i in range(count))
    inventory = parse_inventory(hosts + '[groups.all]\n[[groups.all.models]]\nname = "a:1b"\n',
                                "f.toml")
    return [HostStatus(h) for h in inventory.hosts]


def _pulling(status: HostStatus, model: str, done: int, total: int) -> None:
    status.state = "pulling"
    status.model(model, "pulling").blobs["sha256:x"] = (done, total)


def _console(height: int = 40) -> Console:
    return Console(file=io.StringIO(), width=140, height=height, force_terminal=False)


def _render(view: TerminalView) -> str:
    view.console.print(view)
    return view.console.file.getvalue()


def _ready(status: HostStatus) -> HostResult:
    h = status.host
    return HostResult(name=h.name, url=h.address.url, labels=(), groups=("all",),
                      state="ready", models=(HostModelResult(name="a:1b", required=True),))


def test_the_live_table_has_a_row_per_host_with_state_and_pull_percent() -> None:
    statuses = _statuses(3)
    _pulling(statuses[0], "a:1b", 450, 1000)
    statuses[1].state = "checking"
    statuses[1].model("b:1b", "missing")
    view = TerminalView(statuses, _console())
    view.finished(_ready(statuses[2]))
    text = _render(view)
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "pulling" in rows["h0"] and "a:1b 45%" in rows["h0"]
    assert "checking" in rows["h1"] and rows["h1"].split()[3] == "1"  # 1 missing
    assert "ready" in rows["h2"]


def test_more_hosts_than_lines_shows_busy_ones_first_and_counts_the_rest() -> None:
    statuses = _statuses(50)
    view = TerminalView(statuses, _console(height=12))
    for status in statuses[:45]:
        view.finished(_ready(status))
    _pulling(statuses[49], "a:1b", 10, 100)
    text = _render(view)
    assert "h49" in text and "a:1b 10%" in text  # the busy host is on screen
    assert "more" in text and "45 ready" in text
    assert len(text.splitlines()) <= 12


def test_plain_lines_per_finished_host_and_a_summary_every_interval() -> None:
    statuses = _statuses(3)
    now = [0.0]
    out = io.StringIO()
    view = PlainView(statuses, out, interval=10, clock=lambda: now[0])
    view.tick()
    assert out.getvalue() == ""  # nothing before the first interval
    view.finished(_ready(statuses[0]))
    _pulling(statuses[1], "a:1b", 1, 4)
    now[0] = 10.5
    view.tick()
    lines = out.getvalue().splitlines()
    assert lines[0] == "h0: finished in 0.0 s"  # what it did: the report's line
    assert lines[1] == ("fleet: 1/3 hosts done (1 ready); 1 pulling (1 pulls, 25% avg); "
                        "1 waiting")
    view.tick()
    assert len(out.getvalue().splitlines()) == 2  # the next summary waits 10 s more
