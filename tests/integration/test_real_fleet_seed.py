"""`fleet --seed` against real servers and the real registry: each model is taken from
the registry once into a local cache, whatever the number of hosts, and uploaded from
there to every host that lacks it.

Counted, not assumed: the registry's own log gives the blob downloads it served
(`Registry.blob_gets`), each server's log the blob uploads it received, a throttling
front the bytes that crossed it (tests/integration/throttle.py). The cache lives where
XDG_CACHE_HOME says, a folder of the test's own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.integration.conftest import watched_servers
from tests.integration.throttle import ThrottledFront, UploadLog
from tests.integration.wiring import (
    SYSTEM_PROMPT,
    create_tiny,
    files_bytes,
    inventory,
    manifest_blobs,
    manifest_weights,
    run_json,
    seed_bytes,
    summary_bytes,
    usage_error,
)
from tests.real import (
    RealOllama,
    Registry,
    closed_proxies,
    free_port,
    interrupt_when,
    run_cli,
    start_cli,
)
from tests.real.gguf import padded_tiny

PAD = 8_000_000  # bytes of padding in `pad-a` and `pad-b`
BIG = 40_000_000  # in `big`: long enough to interrupt at the throttled rates below
INSECURE = "[pull]\ninsecure = true\n"


@pytest.fixture(scope="module")
def published(real_server: RealOllama, registry: Registry,
              tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """In the real registry under `seedtest/`: `tiny` and `tiny:sys` (the same weights,
    with a system prompt), `pad-a` and `pad-b` (8 MB each, other weights), `big` (40 MB).
    Per model (`tiny`, `tiny-sys`, `pad-a`, ...): `repo` (its name there, without the
    registry's address), `blobs` (digest -> size) and `weights` (digest, size)."""
    pytest.importorskip("gguf", reason="the gguf package writes the padded models")
    root = tmp_path_factory.mktemp("seed-models")
    create_tiny(real_server, "tiny-sys", root, system=True)
    repos = {"tiny": "seedtest/tiny:latest", "tiny-sys": "seedtest/tiny:sys"}
    for model, size, value in (("pad-a", PAD, 3), ("pad-b", PAD, 5), ("big", BIG, 7)):
        gguf = padded_tiny(root / f"{model}.gguf", size, value)
        (root / f"{model}.Modelfile").write_text(f"FROM {gguf}\n")
        real_server.ollama("create", model, "-f", str(root / f"{model}.Modelfile"))
        gguf.unlink()
        repos[model] = f"seedtest/{model}:latest"
    models = {}
    for model, repo in repos.items():
        real_server.publish(model, registry, repo)
        manifest = registry.manifest(repo)
        models[model] = SimpleNamespace(repo=repo, blobs=manifest_blobs(manifest),
                                        weights=manifest_weights(manifest))
    return SimpleNamespace(**{m.replace("-", "_"): v for m, v in models.items()})


@pytest.fixture(scope="module")
def seed_hosts(ollama_dist: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RealOllama]]:
    """Four empty servers, offline (nothing of theirs leaves loopback)."""
    with watched_servers(ollama_dist, tmp_path_factory.mktemp("seed-hosts"), 4,
                         with_tiny=False, **closed_proxies()) as found:
        yield found


def named(urls: list[str]) -> list[tuple[str, str]]:
    return [(f"host-{i}", url) for i, url in enumerate(urls)]


def seed_env(user_env: dict[str, str], cache_home: Path) -> dict[str, str]:
    return {**user_env, "XDG_CACHE_HOME": str(cache_home), **closed_proxies()}


def blobs_of(*models: SimpleNamespace) -> dict[str, int]:
    """Every blob of the models, each once (models share blobs)."""
    return {d: s for m in models for d, s in m.blobs.items()}


def test_seed_takes_each_blob_from_the_registry_once_and_the_cache_serves_the_next_run(
        published, seed_hosts, registry, user_env, tmp_path) -> None:
    tiny, tiny_sys = published.tiny, published.tiny_sys
    names = [f"{registry.host}/{m.repo}" for m in (tiny, tiny_sys)]
    blobs = blobs_of(tiny, tiny_sys)  # the weights, template and parameters are shared
    weights, weights_size = tiny.weights
    cache_home = tmp_path / "cache"
    env = seed_env(user_env, cache_home)
    extra = INSECURE + "\n[verify]\nnum_predict = 4\n"
    hosts = seed_hosts[:3]
    inv = str(inventory(tmp_path / "three.toml", named([h.url for h in hosts]), names, extra))

    gets = registry.blob_gets()
    done = run_cli(env, "fleet", "-i", inv, "--seed", timeout=300)
    assert done.returncode == 0, done.stderr
    assert registry.blob_gets() - gets == len(blobs)  # for three hosts: each blob once
    taken, sent, to_hosts = summary_bytes(done.stdout)
    assert taken == pytest.approx(sum(blobs.values()), rel=2e-3)
    assert (sent, to_hosts) == (pytest.approx(3 * weights_size, rel=2e-3), 3)
    for host in hosts:
        assert host.weights(names[0]) == host.weights(names[1]) == weights
        assert host.show(names[1])["system"] == SYSTEM_PROMPT
        assert host.generate(names[1])["eval_count"] > 0
    assert [h.blob_posts() for h in hosts] == [1, 1, 1]
    assert files_bytes(cache_home / "ollama-provision") >= sum(blobs.values())

    # a fourth host, another day: everything from the cache, nothing from the registry
    inv = str(inventory(tmp_path / "four.toml", named([h.url for h in seed_hosts]), names,
                        extra))
    gets = registry.blob_gets()
    code, doc, err = run_json(env, "fleet", "-i", inv, "--seed")
    assert code == 0, err
    assert registry.blob_gets() == gets
    assert seed_bytes(doc) == (0, weights_size)
    assert seed_hosts[3].weights(names[0]) == weights
    assert [h.blob_posts() for h in seed_hosts] == [1, 1, 1, 1]


def test_the_seed_cache_keeps_to_its_size_budget_and_reuses_what_it_kept(
        published, seed_hosts, registry, user_env, tmp_path) -> None:
    pads = (published.pad_a, published.pad_b)
    names = [f"{registry.host}/{m.repo}" for m in pads]
    blobs = blobs_of(*pads)
    budget = 12_000_000  # room for one model, not for both
    assert max(sum(m.blobs.values()) for m in pads) < budget < sum(blobs.values())
    cache = tmp_path / "cache" / "ollama-provision"
    env = seed_env(user_env, tmp_path / "cache")
    hosts = seed_hosts[:3]
    inv = str(inventory(tmp_path / "three.toml", named([h.url for h in hosts]), names,
                        INSECURE))

    gets = registry.blob_gets()
    # padded models are created but cannot be loaded: no verification
    code, doc, err = run_json(env, "fleet", "-i", inv, "--seed", "--cache-size", "12M",
                              "--no-verify")
    assert code == 0, err
    assert registry.blob_gets() - gets == len(blobs)  # each once, though both do not fit
    assert files_bytes(cache) <= budget + 65536  # blobs within it; bookkeeping aside
    for host in hosts:
        assert [host.weights(n) for n in names] == [m.weights[0] for m in pads]

    inv = str(inventory(tmp_path / "four.toml", named([h.url for h in seed_hosts]), names,
                        INSECURE))
    code, doc, err = run_json(env, "fleet", "-i", inv, "--seed", "--cache-size", "12M",
                              "--no-verify")
    assert code == 0, err
    taken, sent = seed_bytes(doc)
    assert 0 < taken < sum(blobs.values())  # what the cache kept was not fetched again
    assert sent == sum(m.weights[1] for m in pads)  # to the fourth host only
    assert files_bytes(cache) <= budget + 65536
    assert [seed_hosts[3].weights(n) for n in names] == [m.weights[0] for m in pads]


def test_an_interrupted_seed_download_resumes_without_fetching_anything_twice(
        published, registry, start_server, user_env, tmp_path) -> None:
    big = published.big
    size = sum(big.blobs.values())
    host = start_server()
    env = seed_env(user_env, tmp_path / "cache")
    with ThrottledFront(registry.port, 20e6) as front:  # about 2 s for the whole model
        name = f"{front.host}/{big.repo}"
        inv = str(inventory(tmp_path / "fleet.toml", [("only", host.url)], [name], INSECURE))
        stopped = interrupt_when(start_cli(env, "fleet", "-i", inv, "--seed", "--no-verify"),
                                 lambda: front.blob_bytes > size // 3)
        assert stopped.returncode == 130, stopped.stderr
        assert "Traceback" not in stopped.stderr
        time.sleep(0.5)  # what was in flight
        before = front.blob_bytes
        assert before < size * 0.9
        assert host.tags() == {} and host.blob_files() == []  # nothing half-made there

        code, doc, err = run_json(env, "fleet", "-i", inv, "--seed", "--no-verify")
        assert code == 0, err
        again = front.blob_bytes - before
    assert before + again <= size + (4 << 20)  # in flight at Ctrl-C aside: nothing twice
    taken, sent = seed_bytes(doc)
    assert abs(taken - again) <= 65536  # this run's share only: it resumed
    assert sent == big.weights[1]
    assert host.weights(name) == big.weights[0]
    assert host.blob_posts() == 1


def test_an_interrupted_seed_upload_resumes_without_sending_a_blob_twice(
        published, registry, start_server, user_env, tmp_path) -> None:
    pads = (published.pad_a, published.pad_b)
    names = [f"{registry.host}/{m.repo}" for m in pads]
    host = start_server()
    env = seed_env(user_env, tmp_path / "cache")
    with ThrottledFront(host.port, 4e6, uploads=True) as front:  # about 2 s per model
        inv = str(inventory(tmp_path / "fleet.toml", [("slow", front.url)], names, INSECURE))

        def one_sent_and_the_next_going() -> bool:
            uploads = front.log.snapshot()
            return any(u.whole for u in uploads) and \
                any(not u.whole and u.received > 1_000_000 for u in uploads)

        stopped = interrupt_when(start_cli(env, "fleet", "-i", inv, "--seed", "--no-verify"),
                                 one_sent_and_the_next_going)
        assert stopped.returncode == 130, stopped.stderr
        assert "Traceback" not in stopped.stderr
        front.log.wait_idle()
        time.sleep(0.5)  # the server notices the cut-off upload and drops it
        (sent_whole,) = {u.digest for u in front.log.snapshot() if u.whole}
        (cut_off,) = {u.digest for u in front.log.snapshot() if not u.whole}
        files = host.blob_files()
        assert sent_whole.replace(":", "-") in files
        assert cut_off.replace(":", "-") not in files
        assert all(len(f) == len("sha256-") + 64 for f in files)  # no partial upload left

        gets = registry.blob_gets()
        code, doc, err = run_json(env, "fleet", "-i", inv, "--seed", "--no-verify")
        assert code == 0, err
    assert registry.blob_gets() == gets  # the first run's downloads were kept
    assert [u.whole for u in front.log.of(sent_whole)] == [True]  # never sent again
    assert [u.whole for u in front.log.of(cut_off)] == [False, True]  # again, whole
    cut_size = next(m.weights[1] for m in pads if m.weights[0] == cut_off)
    assert seed_bytes(doc) == (0, cut_size)
    assert [host.weights(n) for n in names] == [m.weights[0] for m in pads]


def test_seed_uploads_run_at_most_uploads_at_once(published, seed_hosts, registry, user_env,
                                                  tmp_path) -> None:
    big = published.big
    name = f"{registry.host}/{big.repo}"
    log = UploadLog()
    hosts = seed_hosts[:3]
    env = seed_env(user_env, tmp_path / "cache")
    with contextlib.ExitStack() as stack:
        fronts = [stack.enter_context(ThrottledFront(h.port, 20e6, uploads=True, log=log))
                  for h in hosts]  # about 2 s per upload
        inv = str(inventory(tmp_path / "fleet.toml", named([f.url for f in fronts]), [name],
                            INSECURE))
        code, doc, err = run_json(env, "fleet", "-i", inv, "--seed", "--uploads", "2",
                                  "--no-verify")
    assert code == 0, err
    assert log.most_at_once == 2
    assert [u.whole for u in log.uploads] == [True, True, True]
    assert all(h.weights(name) == big.weights[0] for h in hosts)
    assert seed_bytes(doc) == (sum(big.blobs.values()), 3 * big.weights[1])


def test_seed_flags_are_checked_before_any_host_is_touched(user_env, tmp_path) -> None:
    inv = str(inventory(tmp_path / "fleet.toml", [("nowhere", f"http://127.0.0.1:"
                                                               f"{free_port()}")], ["tiny"]))
    env = seed_env(user_env, tmp_path / "cache")

    line = usage_error(run_cli(env, "fleet", "-i", inv, "--seed", "--bundle",
                               str(tmp_path / "models.tar")))
    assert "--seed" in line and "--bundle" in line
    line = usage_error(run_cli(env, "fleet", "-i", inv, "--cache-size", "10G"))
    assert "--cache-size" in line and "--seed" in line
    line = usage_error(run_cli(env, "fleet", "-i", inv, "--seed", "--cache-size", "lots"))
    assert "lots" in line
    line = usage_error(run_cli(env, "fleet", "-i", inv, "--seed", "--uploads", "0"))
    assert "--uploads" in line
    assert not (tmp_path / "cache").exists()
