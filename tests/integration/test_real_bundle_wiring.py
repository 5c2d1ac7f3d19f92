"""`pull --bundle`, `apply --bundle` (`[pull] bundle` in the manifest) and `fleet --bundle`
against real servers, with no registry at all.

The bundles are made from the real registry, which is then stopped before any test
runs: the tool is pointed at it (`OLLAMA_PROVISION_REGISTRY`) and every server and the
tool have proxies at a closed loopback port, so whatever reaches for a registry fails.
What a provisioned server ends up with is compared with a server that pulled the same
models while the registry was up: weights digest, template, system prompt, parameters,
licence, details, capabilities; and a generation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.integration.conftest import ACTIVE
from tests.integration.wiring import (
    LICENSE_TEXT,
    SYSTEM_PROMPT,
    create_tiny,
    drift_states,
    inventory,
    other_weights,
    run_json,
    statuses,
)
from tests.real import (
    RealOllama,
    Registry,
    cli_env,
    closed_proxies,
    free_port,
    model_facts,
    one_error,
    run_cli,
    shared_ollama,
)

TINY, SYS = "tiny:latest", "tiny:sys"  # in the bundles under these names, as pulled


@pytest.fixture(scope="module")
def made(ollama_dist: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[SimpleNamespace]:
    """`v1.tar` (`tiny`, and `tiny:sys`: the same weights with a system prompt and a
    licence), `v2.tar` (the same two after `tiny` was republished with other weights),
    a server that pulled v1 from the registry (`reference`), and the environment of a
    user whose registry is gone (`env`)."""
    root = tmp_path_factory.mktemp("bundles")
    with contextlib.ExitStack() as stack:
        registry = Registry(root / "registry").start()
        stack.callback(registry.stop)
        publisher = RealOllama(ollama_dist, root / "publisher",
                               models_from=shared_ollama() / "models").start()
        stack.callback(publisher.stop)
        reference = RealOllama(ollama_dist, root / "reference").start()
        stack.callback(reference.stop)
        ACTIVE.append(reference)
        stack.callback(ACTIVE.remove, reference)
        create_tiny(publisher, "tiny-sys", root, system=True)
        pulled = {TINY: publisher.publish("tiny", registry, "library/tiny:latest"),
                  SYS: publisher.publish("tiny-sys", registry, "library/tiny:sys")}
        for name in pulled.values():
            answer = reference.api("/api/pull", {"model": name, "insecure": True,
                                                 "stream": False}, timeout=120)
            assert answer["status"] == "success"
        env = cli_env(root / "home", OLLAMA_PROVISION_REGISTRY=f"http://{registry.host}",
                      **closed_proxies())
        v1, v2 = root / "v1.tar", root / "v2.tar"
        bundled = run_cli(env, "bundle", "create", "tiny", "tiny:sys", "-o", str(v1))
        assert bundled.returncode == 0, bundled.stderr
        create_tiny(publisher, "tiny-v2", root, gguf=other_weights(root))
        publisher.publish("tiny-v2", registry, "library/tiny:latest")
        bundled = run_cli(env, "bundle", "create", "tiny", "tiny:sys", "-o", str(v2))
        assert bundled.returncode == 0, bundled.stderr
        weights = (publisher.weights("tiny"), publisher.weights("tiny-v2"))
        assert weights[0] != weights[1]
        publisher.stop()
        registry.stop()  # from here on, no registry: where the tool looks, nothing answers
        yield SimpleNamespace(v1=v1, v2=v2, v1_weights=weights[0], v2_weights=weights[1],
                              reference=reference, pulled=pulled, env=env)


def for_server(made: SimpleNamespace, server: RealOllama) -> dict[str, str]:
    return {**made.env, "OLLAMA_HOST": server.host}


# --- pull --bundle ------------------------------------------------------------------------


def test_pull_bundle_gives_a_fresh_server_the_models_as_if_pulled(made, start_server) -> None:
    server = start_server()
    env = for_server(made, server)
    code, doc, err = run_json(env, "pull", "--bundle", str(made.v1), "tiny", "tiny:sys")
    assert code == 0, err
    assert statuses(doc) == {TINY: "pulled", SYS: "pulled"}  # pull's own words
    assert server.blob_posts() == 1  # the weights, shared by both tags, uploaded once
    for name, pulled in made.pulled.items():
        facts = model_facts(server.show(name))
        assert facts == model_facts(made.reference.show(pulled))
        assert facts["weights"] == made.v1_weights
        assert server.generate(name)["eval_count"] > 0
    shown = server.show(SYS)
    assert (shown["system"], shown["license"]) == (SYSTEM_PROMPT, LICENSE_TEXT)
    assert shown["capabilities"] == ["completion", "tools"]

    again = run_cli(env, "pull", "--bundle", str(made.v1), "tiny", "tiny:sys")
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert f"{TINY}: present" in lines and f"{SYS}: present" in lines
    assert server.blob_posts() == 1  # nothing sent


def test_pull_bundle_replaces_other_weights_only_with_upgrade(made, start_server) -> None:
    server = start_server(tiny=True)  # the shared tiny: v1's weights
    env = for_server(made, server)
    assert server.weights(TINY) == made.v1_weights

    code, doc, err = run_json(env, "pull", "--bundle", str(made.v2), "tiny")
    assert code == 0, err
    assert statuses(doc) == {TINY: "present"}  # as `pull` leaves a present model
    assert server.weights(TINY) == made.v1_weights
    assert server.blob_posts() == 0
    said = run_cli(env, "pull", "--bundle", str(made.v2), "tiny")
    assert said.returncode == 0, said.stderr
    assert f"{TINY}: present (other weights than in v2.tar; --upgrade replaces them)" \
        in said.stdout.splitlines()

    code, doc, err = run_json(env, "pull", "--upgrade", "--bundle", str(made.v2), "tiny")
    assert code == 0, err
    assert statuses(doc) == {TINY: "updated"}
    assert server.weights(TINY) == made.v2_weights
    assert server.blob_posts() == 1
    assert list(server.tags()) == [TINY]
    assert server.generate(TINY)["eval_count"] > 0


def test_pull_bundle_refuses_bad_input_in_one_line_and_changes_nothing(
        made, start_server, tmp_path) -> None:
    server = start_server()
    env = for_server(made, server)

    done = run_cli(env, "pull", "--bundle", str(made.v1), "tiny", "nosuch:7b")
    assert done.returncode == 2
    line = one_error(done.stderr)
    assert "nosuch:7b" in line and str(made.v1) in line
    assert f"{TINY}, {SYS}" in line  # what it has instead
    assert server.tags() == {} and server.blob_files() == []  # tiny not sent either

    missing = tmp_path / "missing.tar"
    done = run_cli(env, "pull", "--bundle", str(missing), "tiny")
    assert done.returncode == 2 and str(missing) in one_error(done.stderr)

    cut = tmp_path / "cut.tar"
    cut.write_bytes(made.v1.read_bytes()[:150_000])
    done = run_cli(env, "pull", "--bundle", str(cut), "tiny")
    assert done.returncode == 1
    assert "is truncated: 150,000 of" in one_error(done.stderr)
    assert server.tags() == {} and server.blob_files() == []

    nobody = {**env, "OLLAMA_HOST": f"127.0.0.1:{free_port()}"}
    done = run_cli(nobody, "pull", "--bundle", str(made.v1), "tiny")
    assert done.returncode == 3 and "Traceback" not in done.stderr


# --- apply --------------------------------------------------------------------------------


def write_manifest(folder: Path, server: RealOllama, *, models: tuple[str, ...] = ("tiny",),
                   pull: str = "") -> Path:
    """A manifest with `models`, a custom model made from tiny, Codex in `folder`."""
    path = folder / "manifest.toml"
    declared = "".join(f'[[models]]\nname = "{m}"\n\n' for m in models)
    path.write_text(f"""\
[server]
host = "{server.url}"

{declared}[[models]]
name = "reviewer"
from = "tiny"
system = "You review code changes."

[pull]
{pull}

[codex]
codex_home = "{folder / 'codex'}"

[verify]
num_predict = 4
""")
    return path


def test_apply_from_the_manifests_bundle_verifies_and_then_changes_nothing(
        made, start_server, tmp_path) -> None:
    server = start_server()
    env = for_server(made, server)
    (tmp_path / "models.tar").symlink_to(made.v1)
    path = write_manifest(tmp_path, server, pull='bundle = "models.tar"')  # beside it

    code, doc, err = run_json(env, "apply", "-f", str(path))
    assert code == 0, err
    assert doc["changed"] is True
    assert server.weights(TINY) == server.weights("reviewer") == made.v1_weights
    assert server.show("reviewer")["system"] == "You review code changes."
    assert server.blob_posts() == 1
    # verified for real (the server has loaded it), and Codex configured
    assert TINY in {m["name"] for m in server.loaded()}
    config = (tmp_path / "codex" / "config.toml").read_bytes()
    assert b"ollama" in config

    code, doc, err = run_json(env, "apply", "-f", str(path))
    assert code == 0, err
    assert doc["changed"] is False
    assert server.blob_posts() == 1
    assert (tmp_path / "codex" / "config.toml").read_bytes() == config


def test_apply_bundle_flag_wins_over_the_manifest(made, start_server, tmp_path) -> None:
    server = start_server()
    env = for_server(made, server)
    path = write_manifest(tmp_path, server, models=("tiny:sys",),
                          pull='bundle = "not-here.tar"')
    code, _, err = run_json(env, "apply", "--bundle", str(made.v1), "--no-verify",
                            "-f", str(path))
    assert code == 0, err
    assert server.weights(SYS) == made.v1_weights
    assert server.show(SYS)["system"] == SYSTEM_PROMPT


def test_apply_refuses_a_bad_bundle_setting_before_changing_anything(
        made, start_server, tmp_path) -> None:
    server = start_server()
    env = for_server(made, server)

    path = write_manifest(tmp_path, server, pull="bundle = 5")
    done = run_cli(env, "apply", "-f", str(path))
    assert done.returncode == 2
    line = one_error(done.stderr)
    assert "pull.bundle" in line and "unknown key" not in line  # a known key, not text

    path = write_manifest(tmp_path, server, pull='bundel = "models.tar"')
    done = run_cli(env, "apply", "-f", str(path))
    assert done.returncode == 2
    assert "did you mean 'bundle'" in one_error(done.stderr)

    path = write_manifest(tmp_path, server, pull='bundle = "not-here.tar"')
    done = run_cli(env, "apply", "-f", str(path))
    assert done.returncode == 2
    assert str(tmp_path / "not-here.tar") in one_error(done.stderr)  # beside the manifest

    path = write_manifest(tmp_path, server, models=("tiny", "nosuch:7b"),
                          pull=f'bundle = "{made.v1}"')
    done = run_cli(env, "apply", "-f", str(path))
    assert done.returncode == 2
    line = one_error(done.stderr)
    assert "nosuch:7b" in line and str(made.v1) in line
    assert server.tags() == {} and server.blob_files() == []
    assert not (tmp_path / "codex" / "config.toml").exists()


# --- fleet --bundle -----------------------------------------------------------------------


def test_fleet_bundle_converges_drift_is_against_the_bundle_and_upgrade_takes_a_newer_one(
        made, start_server, tmp_path) -> None:
    hosts = [start_server(), start_server(), start_server(tiny=True)]
    names = [f"host-{i}" for i in range(3)]
    inv = str(inventory(tmp_path / "fleet.toml", zip(names, (h.url for h in hosts)),
                        ("tiny", "tiny:sys"), "[verify]\nnum_predict = 4\n"))
    env = made.env

    code, doc, err = run_json(env, "fleet", "-i", inv, "--bundle", str(made.v1))
    assert code == 0, err
    assert doc["changed"] is True
    for host in hosts:
        assert host.weights(TINY) == host.weights(SYS) == made.v1_weights
        assert host.show(SYS)["system"] == SYSTEM_PROMPT
    # the weights went once to each host that lacked them; host-2 had them (its tiny)
    assert [h.blob_posts() for h in hosts] == [1, 1, 0]
    # drift against the bundle: the registry is gone, yet every host is known current
    for model in (TINY, SYS):
        assert drift_states(doc, model) == dict.fromkeys(names, "current")

    code, doc, err = run_json(env, "fleet", "-i", inv, "--bundle", str(made.v1))
    assert code == 0, err
    assert doc["changed"] is False
    assert [h.blob_posts() for h in hosts] == [1, 1, 0]

    code, doc, err = run_json(env, "fleet", "-i", inv, "--bundle", str(made.v2),
                              "--dry-run")
    assert drift_states(doc, TINY) == dict.fromkeys(names, "stale")
    assert drift_states(doc, SYS) == dict.fromkeys(names, "current")
    assert doc["changed"] is False
    assert all(h.weights(TINY) == made.v1_weights for h in hosts)

    code, doc, err = run_json(env, "fleet", "-i", inv, "--bundle", str(made.v2),
                              "--upgrade")
    assert code == 0, err
    for host in hosts:
        assert host.weights(TINY) == made.v2_weights
        assert host.weights(SYS) == made.v1_weights  # not in drift: left as it was
    assert [h.blob_posts() for h in hosts] == [2, 2, 1]
    assert hosts[0].generate(TINY)["eval_count"] > 0
    code, doc, err = run_json(env, "fleet", "-i", inv, "--bundle", str(made.v2),
                              "--dry-run")
    assert code == 0, err
    assert drift_states(doc, TINY) == dict.fromkeys(names, "current")


def test_fleet_bundle_without_a_declared_model_touches_no_host(made, start_server,
                                                                tmp_path) -> None:
    host = start_server()
    inv = str(inventory(tmp_path / "fleet.toml", [("only", host.url)],
                        ("tiny", "nosuch:7b")))
    done = run_cli(made.env, "fleet", "-i", inv, "--bundle", str(made.v1))
    assert done.returncode == 2
    line = one_error(done.stderr)
    assert "nosuch:7b" in line and str(made.v1) in line
    assert host.tags() == {} and host.blob_files() == []


def test_fleet_bundle_takes_a_custom_models_base_from_the_host(made, start_server,
                                                               tmp_path) -> None:
    """A custom model whose base the bundle lacks: the host that has the base gets the
    custom model; the one that lacks it is not ready, says why, and is sent nothing."""
    has_base, lacks_base = start_server(tiny=True), start_server()
    has_base.api("/api/copy", {"source": "tiny", "destination": "mybase:v1"})
    custom = ('[[groups.all.models]]\nname = "mine"\nfrom = "mybase:v1"\n'
              'system = "Answer in one word."\n\n[verify]\nnum_predict = 4\n')
    inv = str(inventory(tmp_path / "fleet.toml",
                        [("has-base", has_base.url), ("lacks-base", lacks_base.url)], (),
                        custom))
    code, doc, err = run_json(made.env, "fleet", "-i", inv, "--bundle", str(made.v1))
    assert code == 1, err
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert hosts["has-base"]["ready"] is True, hosts["has-base"]["errors"]
    assert "mine:latest" in has_base.names()
    assert has_base.show("mine")["system"] == "Answer in one word."
    assert hosts["lacks-base"]["ready"] is False
    why, model = hosts["lacks-base"]["errors"]
    assert why == f"{made.v1} has no model mybase:v1 (it has: tiny:latest, tiny:sys)"
    assert model == "mine:latest: its base mybase:v1 is not on the host"
    assert lacks_base.tags() == {} and lacks_base.blob_files() == []

