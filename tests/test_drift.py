"""Drift: the weights a server has against what the registry serves now and what the
other hosts have; `fleet --upgrade` pulls the stale ones again, and only those."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from provision.cli import main
from provision.models import DriftState, Reference, RegistryClient, check_server
from provision.models.drift import majority
from provision.names import parse_name
from provision.server import OllamaServer, parse_host, parse_show
from tests.fleet_support import (  # noqa: F401 - fixtures
    SMALL,
    TINY,
    closed_port_url,
    fleet_env_fixture,
    fleet_fixture,
    host,
    model,
    pulls,
    registry_weights,
    run_fleet_json,
    run_fleet_text,
    weights_on,
)

HEX = "a" * 64


@pytest.mark.parametrize("modelfile, digest", [
    (f"# Modelfile\nFROM /root/.ollama/models/blobs/sha256-{HEX}\nTEMPLATE x\n",
     f"sha256:{HEX}"),
    (f"FROM C:\\Users\\me\\.ollama\\models\\blobs\\sha256-{HEX.upper()}\r\n", f"sha256:{HEX}"),
    ("# FROM llama3.2:1b\nFROM llama3.2:1b\n", None),  # a name, not a blob: unknown
    ("", None),
])
def test_the_weights_digest_comes_from_the_modelfile_from_line(modelfile, digest) -> None:  # noqa: ANN001
    assert parse_show(parse_name("m"), {"modelfile": modelfile}).weights == digest


def test_majority_needs_a_clear_winner() -> None:
    assert majority(["a", "b", "a"]) == "a"
    assert majority(["a", "b"]) is None
    assert majority([]) is None


def _check(srv, registry_url: str, names: list[str]) -> dict[str, object]:  # noqa: ANN001
    parsed = [parse_name(n) for n in names]
    env = {"OLLAMA_PROVISION_REGISTRY": registry_url}
    with OllamaServer(parse_host(srv.url)) as server, RegistryClient(environ=env) as registry:
        found = check_server(server, parsed, Reference.of_registry(registry))
    return {d.name.short: d for d in found}


def test_one_server_current_stale_missing(fleet) -> None:  # noqa: ANN001
    srv = fleet.host(installed=[SMALL, TINY])
    fleet.registry.update_model(TINY)  # the registry moved on; the server did not
    found = _check(srv, fleet.registry.url, [SMALL, TINY, "llama3.2:3b"])
    assert found[SMALL].state == DriftState.CURRENT
    assert found[TINY].state == DriftState.STALE
    assert found[TINY].digest == weights_on(srv, TINY)
    assert found[TINY].reference_digest == registry_weights(fleet.registry, TINY)
    assert found["llama3.2:3b"].state == DriftState.MISSING


def test_a_new_manifest_with_the_same_weights_is_not_stale(fleet) -> None:  # noqa: ANN001
    """The registry republishes the tag with another template: the manifest digest that
    /api/tags shows changes, the weights do not. Comparing the tags digest would call this
    stale (Ollama's own update check did); the weights comparison does not."""
    srv = fleet.host(installed=[SMALL])
    old = fleet.registry.catalog_model(SMALL)
    fleet.registry.add_model(dataclasses.replace(
        old, template="{{ .System }} {{ .Prompt }}", seed=old.name))
    env = {"OLLAMA_PROVISION_REGISTRY": fleet.registry.url}
    with OllamaServer(parse_host(srv.url)) as server, RegistryClient(environ=env) as registry:
        tags_digest = server.tags().models[0].digest
        served = registry.manifest(parse_name(SMALL)).raw
    assert hashlib.sha256(served).hexdigest() != tags_digest  # what /api/tags would say
    assert registry_weights(fleet.registry, SMALL) == weights_on(srv, SMALL)
    found = _check(srv, fleet.registry.url, [SMALL])
    assert found[SMALL].state == DriftState.CURRENT


def test_an_unreachable_registry_leaves_the_state_unknown(fleet) -> None:  # noqa: ANN001
    srv = fleet.host(installed=[SMALL])
    found = _check(srv, closed_port_url(), [SMALL])
    assert found[SMALL].state == DriftState.UNKNOWN
    assert "cannot reach the registry" in (found[SMALL].error or "")


# --- the fleet --------------------------------------------------------------------------


def test_fleet_flags_stale_hosts_and_upgrade_pulls_only_those(fleet, capsys) -> None:  # noqa: ANN001
    old1, old2 = fleet.host(installed=[SMALL]), fleet.host(installed=[SMALL])
    new_digest = fleet.registry.update_model(SMALL)
    fresh = fleet.host(installed=[SMALL])  # installed after the update: current
    inv = fleet.inventory({"old1": old1, "old2": old2, "fresh": fresh})

    code, doc, _ = run_fleet_json(capsys, "-i", inv)
    assert code == 0 and not doc["changed"]  # stale is flagged, not failed
    (drift,) = doc["drift"]
    assert drift["model"] == SMALL and drift["registry_digest"] == new_digest
    assert drift["stale"] == ["old1", "old2"]
    assert drift["majority_digest"] == weights_on(old1, SMALL) != new_digest
    assert drift["outliers"] == ["fresh"]
    assert doc["summary"]["stale"] == ["old1", "old2"]
    assert model(host(doc, "old1"), SMALL)["drift"] == "stale"
    assert all(pulls(s) == [] for s in (old1, old2, fresh))

    code, out, _ = run_fleet_text(capsys, "-i", inv)
    assert f"drift: {SMALL}: stale on old1, old2" in out
    assert "hint: --upgrade pulls the stale models again" in out

    code, doc, _ = run_fleet_json(capsys, "-i", inv, "--upgrade")
    assert code == 0 and doc["changed"]
    assert pulls(old1) == [SMALL] and pulls(old2) == [SMALL] and pulls(fresh) == []
    for srv in (old1, old2, fresh):
        assert weights_on(srv, SMALL) == new_digest
    upgraded = model(host(doc, "old1"), SMALL)
    assert upgraded["drift"] == "stale" and upgraded["action"] == "updated"
    assert upgraded["digest_before"] != upgraded["digest"] == new_digest
    assert doc["drift"][0]["stale"] == [] and doc["drift"][0]["outliers"] == []


def test_without_the_registry_the_majority_still_shows_the_odd_host(fleet, capsys,  # noqa: ANN001
                                                                    fleet_env) -> None:  # noqa: ANN001
    a, b = fleet.host(installed=[SMALL]), fleet.host(installed=[SMALL])
    fleet.registry.update_model(SMALL)
    odd = fleet.host(installed=[SMALL])
    fleet_env.setenv("OLLAMA_PROVISION_REGISTRY", closed_port_url())
    inv = fleet.inventory({"a": a, "b": b, "odd": odd})
    code, doc, _ = run_fleet_json(capsys, "-i", inv)
    assert code == 0
    (drift,) = doc["drift"]
    assert drift["registry_digest"] is None and "cannot reach" in drift["registry_error"]
    assert drift["unknown"] == ["a", "b", "odd"]
    assert drift["outliers"] == ["odd"]


def test_dry_run_shows_drift_and_plans_without_changing_anything(fleet, capsys) -> None:  # noqa: ANN001
    stale, empty = fleet.host(installed=[SMALL]), fleet.host()
    fleet.registry.update_model(SMALL)
    inv = fleet.inventory({"stale": stale, "empty": empty})
    code, doc, _ = run_fleet_json(capsys, "-i", inv, "--dry-run", "--upgrade")
    assert code == 1 and doc["failing_hosts"] == ["empty"]  # not ready as it is
    assert model(host(doc, "empty"), SMALL)["action"] == "pull"
    assert model(host(doc, "stale"), SMALL)["action"] == "pull again"
    assert not doc["changed"]
    assert pulls(stale) == [] and pulls(empty) == []
    assert stale.requests_to("/api/generate") == []


# --- one server: `pull --upgrade` -----------------------------------------------------


def test_pull_upgrade_pulls_again_only_what_the_registry_replaced(fleet, capsys, tmp_path,  # noqa: ANN001
                                                                  fleet_env) -> None:  # noqa: ANN001
    srv = fleet.host(installed=[SMALL, TINY])
    new_digest = fleet.registry.update_model(TINY)
    fleet_env.setenv("OLLAMA_HOST", srv.url)
    fleet_env.setenv("OLLAMA_MODELS", str(tmp_path / "models"))

    code = main(["pull", "--json", "--upgrade", SMALL, TINY, "llama3.2:3b"])
    doc = json.loads(capsys.readouterr().out)

    assert code == 0
    status = {m["name"]: m["status"] for m in doc["models"]}
    assert status == {SMALL: "present", TINY: "updated", "llama3.2:3b": "pulled"}
    assert {d["name"]: d["state"] for d in doc["drift"]} == {
        SMALL: "current", TINY: "stale", "llama3.2:3b": "missing"}
    assert sorted(pulls(srv)) == sorted([TINY, "llama3.2:3b"])
    assert weights_on(srv, TINY) == new_digest

    # Now everything is current: nothing is pulled.
    code = main(["pull", "--upgrade", SMALL, TINY])
    out = capsys.readouterr().out
    assert code == 0 and f"{TINY}: present" in out
    assert sorted(pulls(srv)) == sorted([TINY, "llama3.2:3b"])


def test_pull_upgrade_with_dry_run_is_a_usage_error(capsys) -> None:  # noqa: ANN001
    assert main(["pull", "--upgrade", "--dry-run", SMALL]) == 2
    assert "error: --upgrade cannot be combined with --dry-run" in capsys.readouterr().err
