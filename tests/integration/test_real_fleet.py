"""`fleet` over three real servers pulling from the real registry.

Converge; then the registry's tag is republished with new weights (a few bytes near the
end of tiny.gguf changed, the model created and pushed again, as ../shared/ollama's
README describes); `--dry-run` sees every host stale, `--upgrade` pulls, then all are
current; `--sync --yes` removes a model the inventory does not declare.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import watched_servers
from tests.integration.wiring import inventory
from tests.real import (
    RealOllama,
    Registry,
    create_from_gguf,
    run_cli,
    shared_ollama,
)


@pytest.fixture(scope="module")
def hosts(ollama_dist: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RealOllama]]:
    with watched_servers(ollama_dist, tmp_path_factory.mktemp("fleet"), 3,
                         with_tiny=False) as found:
        yield found


def republish(publisher: RealOllama, registry: Registry, ref: str, tmp: Path) -> None:
    """New weights under the same tag."""
    gguf = tmp / "tiny.gguf"
    shutil.copyfile(shared_ollama() / "tiny.gguf", gguf)
    data = bytearray(gguf.read_bytes())
    data[-64:] = bytes((b + 1) % 256 for b in data[-64:])  # tensor data at the end
    gguf.write_bytes(bytes(data))
    create_from_gguf(publisher, "tiny-v2", gguf)
    publisher.publish("tiny-v2", registry, ref)


def fleet(env: dict[str, str], *args: str) -> tuple[int, dict]:
    result = run_cli(env, "fleet", "--json", *args, timeout=180)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def states(doc: dict, model: str) -> dict[str, str]:
    (entry,) = [d for d in doc["drift"] if d["model"] == model]
    return {h["host"]: h["state"] for h in entry["hosts"]}


def test_fleet_converges_sees_a_republished_tag_upgrades_and_syncs(
        hosts: list[RealOllama], real_server: RealOllama, registry: Registry,
        user_env, tmp_path) -> None:
    ref = real_server.publish("tiny", registry, "fleet/tiny:latest")
    inv = str(inventory(tmp_path / "fleet.toml",
                        ((f"host-{i}", srv.url) for i, srv in enumerate(hosts)), (ref,),
                        "[pull]\ninsecure = true\n\n[verify]\nnum_predict = 4\n"))
    names = {f"host-{i}" for i in range(3)}

    code, doc = fleet(user_env, "-i", inv)
    assert code == 0, doc
    assert doc["ready"] is True and doc["changed"] is True
    assert {h["name"] for h in doc["hosts"] if h["state"] == "ready"} == names
    assert all(srv.names() == [ref] for srv in hosts)
    assert set(states(doc, ref).values()) == {"current"}
    (old,) = {d["registry_digest"] for d in doc["drift"]}

    republish(real_server, registry, "fleet/tiny:latest", tmp_path)
    code, doc = fleet(user_env, "-i", inv, "--dry-run")
    assert set(states(doc, ref).values()) == {"stale"}, doc["drift"]
    (new,) = {d["registry_digest"] for d in doc["drift"]}
    assert new != old
    assert sorted(doc["summary"]["stale"]) == sorted(names)
    assert doc["changed"] is False

    code, doc = fleet(user_env, "-i", inv, "--upgrade")
    assert code == 0, doc
    for host in doc["hosts"]:
        (model,) = host["models"]
        assert (model["digest_before"], model["digest"]) == (old, new), host
    code, doc = fleet(user_env, "-i", inv, "--dry-run")
    assert code == 0
    assert set(states(doc, ref).values()) == {"current"}

    hosts[1].api("/api/copy", {"source": ref, "destination": "undeclared:latest"})
    code, doc = fleet(user_env, "-i", inv, "--sync", "--dry-run")
    assert [h["undeclared"] for h in doc["hosts"] if h["name"] == "host-1"] == \
        [["undeclared:latest"]]
    assert "undeclared:latest" in hosts[1].names()
    code, doc = fleet(user_env, "-i", inv, "--sync", "--yes")
    assert code == 0, doc
    assert [h["removed"] for h in doc["hosts"] if h["name"] == "host-1"] == \
        [["undeclared:latest"]]
    assert hosts[1].names() == [ref]

    without_yes = run_cli(user_env, "fleet", "-i", inv, "--sync")
    assert without_yes.returncode == 2
