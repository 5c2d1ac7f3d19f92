"""`ollama-provision fleet` end to end: several test doubles as hosts, one as the registry,
real HTTP throughout. What a user sees: every host ready, idempotence, failures contained
to their host and named, --sync, exit codes."""

from __future__ import annotations

import pytest

from provision.fleet.inventory import load_inventory
from provision.fleet.run import FleetInterrupted, FleetOptions, run_fleet
from tests.double import GIB
from tests.fleet_support import (  # noqa: F401 - fixtures
    SMALL,
    TINY,
    closed_port_url,
    fleet_env_fixture,
    fleet_fixture,
    host,
    model,
    pulls,
    run_fleet_json,
    run_fleet_text,
)


def test_fresh_fleet_becomes_ready_and_a_second_run_changes_nothing(fleet, capsys) -> None:  # noqa: ANN001
    a, b, c = fleet.host(), fleet.host(installed=[SMALL]), fleet.host()
    inv = fleet.inventory({"a": a, "b": b, "c": c}, models=(SMALL, TINY))

    code, doc, _ = run_fleet_json(capsys, "-i", inv)

    assert code == 0 and doc["ready"] and doc["changed"]
    assert doc["schema"] == "ollama-provision.fleet/1" and doc["failing_hosts"] == []
    for name, srv in (("a", a), ("b", b), ("c", c)):
        assert sorted(srv.installed_names()) == sorted([SMALL, TINY])
        h = host(doc, name)
        assert h["state"] == "ready" and h["changed"]
        assert all(m["verification"]["ok"] for m in h["models"])
    assert model(host(doc, "b"), SMALL)["action"] is None  # it had it: not pulled again
    assert model(host(doc, "b"), TINY)["action"] == "pulled"
    assert pulls(b) == [TINY]

    before = {srv: len(srv.requests_to("/api/pull")) for srv in (a, b, c)}
    code, doc, _ = run_fleet_json(capsys, "-i", inv)
    assert code == 0 and doc["ready"] and not doc["changed"]
    assert all(not h["changed"] for h in doc["hosts"])
    assert {srv: len(srv.requests_to("/api/pull")) for srv in (a, b, c)} == before


def test_dead_slow_and_failing_hosts_do_not_change_the_others_outcome(fleet, capsys) -> None:  # noqa: ANN001
    good1, good2 = fleet.host(), fleet.host()
    silent = fleet.host()
    silent.add_fault("slow_headers", endpoint=None, seconds=3, times=None)
    broken = fleet.host()
    broken.add_fault("registry_unreachable", times=None)  # its pulls can never work
    inv = fleet.inventory(
        {"good1": good1, "dead": closed_port_url(), "silent": silent, "broken": broken,
         "good2": good2},
        host_extra={"silent": "read_timeout = 0.3"})

    code, doc, err = run_fleet_json(capsys, "-i", inv)

    assert code == 1 and not doc["ready"]
    assert sorted(doc["failing_hosts"]) == ["broken", "dead", "silent"]
    for name, srv in (("good1", good1), ("good2", good2)):
        assert host(doc, name)["state"] == "ready"
        assert srv.installed_names() == [SMALL]
    assert host(doc, "dead")["state"] == "unreachable"
    assert host(doc, "dead")["diagnosis"]
    assert host(doc, "silent")["state"] == "unreachable"
    assert host(doc, "broken")["state"] == "not-ready"
    assert "cannot reach the registry" in host(doc, "broken")["errors"][0]
    assert model(host(doc, "broken"), SMALL)["status"] == "failed"
    # The failing hosts are named on stderr, in one line.
    assert "3 of 5 hosts not ready" in err
    assert "dead (unreachable)" in err and "broken (not-ready)" in err
    assert "Traceback" not in err


def test_a_host_past_its_time_limit_is_given_up_without_holding_up_the_rest(fleet, capsys) -> None:  # noqa: ANN001
    stuck, fine = fleet.host(), fleet.host()
    stuck.add_fault("stall", after_bytes=1000, seconds=None)  # silent until the client goes
    inv = fleet.inventory({"stuck": stuck, "fine": fine},
                          host_extra={"stuck": "host_timeout = 1"},
                          extra="[pull]\nstall_timeout = 60\n")

    code, doc, err = run_fleet_json(capsys, "-i", inv)

    assert code == 1 and doc["failing_hosts"] == ["stuck"]
    assert host(doc, "fine")["state"] == "ready"
    stuck_doc = host(doc, "stuck")
    assert stuck_doc["state"] == "timed-out"
    assert "time limit of 1 s" in stuck_doc["errors"][0]
    assert "pulling" in stuck_doc["errors"][0]  # says where it was


def test_no_reachable_host_at_all_exits_3(fleet, capsys) -> None:  # noqa: ANN001
    inv = fleet.inventory({"x": closed_port_url(), "y": closed_port_url()})
    code, doc, err = run_fleet_json(capsys, "-i", inv)
    assert code == 3 and doc["exit_code"] == 3
    assert doc["summary"]["unreachable"] == 2


def test_groups_by_name_and_label_give_each_host_its_own_model_set(fleet, capsys) -> None:  # noqa: ANN001
    gpu, cpu = fleet.host(), fleet.host()
    inv = fleet.tmp_path / "fleet.toml"
    inv.write_text(f"""
[[hosts]]
name = "gpu-1"
url = "{gpu.url}"
labels = {{ role = "gpu" }}

[[hosts]]
name = "cpu-1"
url = "{cpu.url}"

[groups.everyone]
[[groups.everyone.models]]
name = "{TINY}"

[groups.gpu]
match = {{ role = "gpu" }}
[[groups.gpu.models]]
name = "{SMALL}"
""")
    code, doc, _ = run_fleet_json(capsys, "-i", str(inv))
    assert code == 0
    assert sorted(gpu.installed_names()) == sorted([SMALL, TINY])
    assert cpu.installed_names() == [TINY]
    assert host(doc, "gpu-1")["groups"] == ["everyone", "gpu"]
    assert host(doc, "gpu-1")["labels"] == {"role": "gpu"}


def test_a_model_that_fails_verification_makes_its_host_not_ready(fleet, capsys) -> None:  # noqa: ANN001
    roomy = fleet.host()
    cramped = fleet.host(memory=GIB // 4, vram=[])  # the model downloads but cannot load
    inv = fleet.inventory({"roomy": roomy, "cramped": cramped})
    code, doc, err = run_fleet_json(capsys, "-i", inv)
    assert code == 1 and doc["failing_hosts"] == ["cramped"]
    failed = model(host(doc, "cramped"), SMALL)
    assert failed["status"] == "failed" and "more system memory" in failed["error"]
    assert host(doc, "roomy")["state"] == "ready"

    # --no-verify: present is ready.
    code, doc, _ = run_fleet_json(capsys, "-i", inv, "--no-verify")
    assert code == 0


def test_optional_models_do_not_fail_a_host(fleet, capsys) -> None:  # noqa: ANN001
    srv = fleet.host()
    inv = fleet.tmp_path / "fleet.toml"
    inv.write_text(f"""
[[hosts]]
url = "{srv.url}"
[groups.all]
[[groups.all.models]]
name = "{SMALL}"
[[groups.all.models]]
name = "no-such-model:1b"
required = false
""")
    code, doc, _ = run_fleet_json(capsys, "-i", str(inv))
    assert code == 0
    h = doc["hosts"][0]
    assert h["name"] == srv.url.split("://")[1]  # the default name: host:port
    assert model(h, "no-such-model:1b")["status"] == "failed"


def test_custom_models_are_created_on_every_host_once(fleet, capsys) -> None:  # noqa: ANN001
    a, b = fleet.host(), fleet.host()
    inv = fleet.inventory({"a": a, "b": b}, models=(), extra=f"""
[[groups.all.models]]
name = "reviewer"
from = "{SMALL}"
system = "You review code."
""")
    code, doc, _ = run_fleet_json(capsys, "-i", inv)
    assert code == 0
    for srv in (a, b):
        assert sorted(srv.installed_names()) == sorted(["reviewer:latest", SMALL])
    assert model(host(doc, "a"), "reviewer:latest")["action"] == "created"
    code, doc, _ = run_fleet_json(capsys, "-i", inv)
    assert code == 0 and not doc["changed"]
    assert model(host(doc, "a"), "reviewer:latest")["action"] == "unchanged"


# --- --sync ---------------------------------------------------------------------------


def test_sync_without_yes_is_refused_when_not_interactive(fleet, capsys) -> None:  # noqa: ANN001
    srv = fleet.host(installed=[SMALL, TINY])
    inv = fleet.inventory({"a": srv})
    code, out, err = run_fleet_text(capsys, "-i", inv, "--sync")
    assert code == 2
    assert err.startswith("error: --sync removes models: add --yes")
    assert srv.requests == []  # refused before any host was asked anything
    assert sorted(srv.installed_names()) == sorted([SMALL, TINY])


def test_sync_dry_run_lists_and_sync_yes_removes_undeclared_models(fleet, capsys) -> None:  # noqa: ANN001
    a, b = fleet.host(installed=[SMALL, TINY]), fleet.host(installed=[SMALL])
    inv = fleet.inventory({"a": a, "b": b})

    code, out, _ = run_fleet_text(capsys, "-i", inv, "--sync", "--dry-run")
    assert code == 0
    assert f"would remove {TINY}" in out  # what --sync would do, in its words
    assert a.requests_to("/api/delete") == []

    code, doc, _ = run_fleet_json(capsys, "-i", inv, "--sync", "--yes")
    assert code == 0 and doc["changed"]
    assert host(doc, "a")["removed"] == [TINY] and host(doc, "b")["removed"] == []
    assert a.installed_names() == [SMALL] and b.installed_names() == [SMALL]


def test_sync_asks_first_and_a_no_changes_nothing(fleet, fleet_env) -> None:  # noqa: ANN001
    a, b = fleet.host(installed=[TINY]), fleet.host()
    inventory = load_inventory(fleet.inventory({"a": a, "b": b}))
    asked: list[list[tuple[str, tuple[str, ...]]]] = []

    def decline(removals: list[tuple[str, tuple[str, ...]]]) -> bool:
        asked.append(removals)
        assert a.requests_to("/api/delete") == [] and pulls(a) == [] and pulls(b) == []
        return False

    result = run_fleet(inventory, FleetOptions(sync=True), confirm=decline)
    assert asked == [[("a", (TINY,))]]
    assert result.cancelled and result.exit_code == 1 and not result.changed
    assert a.installed_names() == [TINY] and b.installed_names() == []
    assert pulls(a) == [] and pulls(b) == []

    result = run_fleet(inventory, FleetOptions(sync=True), confirm=lambda removals: True)
    assert result.exit_code == 0 and result.changed
    assert a.installed_names() == [SMALL] and b.installed_names() == [SMALL]


# --- interruption and output -------------------------------------------------------------


def test_ctrl_c_stops_every_host_and_reports_them_interrupted(fleet, fleet_env) -> None:  # noqa: ANN001
    slow = [fleet.host(download_rate=1e6) for _ in range(2)]  # minutes per model
    inventory = load_inventory(fleet.inventory({f"s{i}": s for i, s in enumerate(slow)}))

    class CtrlC:
        def __init__(self, statuses) -> None:  # noqa: ANN001
            self.statuses = statuses

        def __enter__(self) -> CtrlC:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def tick(self) -> None:
            if all(s.state == "pulling" for s in self.statuses):
                raise KeyboardInterrupt

        def finished(self, result: object) -> None:
            pass

    with pytest.raises(FleetInterrupted) as stop:
        run_fleet(inventory, FleetOptions(), view=CtrlC)
    result = stop.value.result
    assert result.exit_code == 130
    assert [h.state for h in result.hosts] == ["interrupted", "interrupted"]
    assert all("pulling" in h.errors[0] for h in result.hosts)


def test_plain_output_names_each_host_and_the_verdict(fleet, capsys) -> None:  # noqa: ANN001
    a = fleet.host()
    inv = fleet.inventory({"a": a, "dead": closed_port_url()})
    code, out, err = run_fleet_text(capsys, "-i", inv)
    assert code == 1
    assert f"a: ready (1/1 models ok; pulled {SMALL})" in out
    assert "dead: unreachable" in out
    assert out.strip().splitlines()[-1] == "fleet: 1/2 hosts ready; not ready: dead"
    assert "error: 1 of 2 hosts not ready: dead (unreachable)" in err
