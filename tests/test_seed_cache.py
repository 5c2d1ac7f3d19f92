"""The seed cache (`fleet --seed`) on its own: each blob downloaded once whatever the
number of hosts asking at once, kept within its budget (least recently used first,
never what an upload holds), a model larger than the budget passed through, an
interrupted download taken up where it stopped, a blob damaged on disk never sent.

The blobs come from a source that copies bytes held in memory, so that every download
is counted exactly; the real registry, real servers and the CLI are in
tests/integration/test_real_fleet_seed.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from provision.bundle import BundleError, SeedCache, default_cache_dir, parse_bytes
from provision.bundle.writer import BlobSink
from provision.models.registry import ModelManifest, parse_manifest
from provision.names import ModelName, parse_name


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class MemorySource:
    """Blobs by digest; `copy` fills a sink from where it stopped, as the registry's
    Range requests do, and counts what it was asked for."""

    label = "memory"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.copies: list[tuple[str, int]] = []  # (digest, where it started)
        self.lock = threading.Lock()
        self.gate: threading.Event | None = None  # when set: copies wait for it

    def model(self, name: str, *parts: bytes) -> ModelManifest:
        config = b'{"model_format":"gguf"}' + name.encode()
        for data in (config, *parts):
            self.blobs[digest(data)] = data
        raw = json.dumps({"schemaVersion": 2, "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": digest(config), "size": len(config)}, "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": digest(p),
             "size": len(p)} for p in parts]}).encode()
        manifest = parse_manifest(parse_name(name), raw)
        assert manifest is not None
        return manifest

    def copy(self, name: ModelName, sink: BlobSink, progress, say) -> int:
        with self.lock:
            self.copies.append((sink.blob.digest, sink.written))
        if self.gate is not None:
            self.gate.wait(10)
        data = self.blobs[sink.blob.digest][sink.written:]
        sink.write(data)
        progress(len(data))
        sink.finish()
        return len(data)

    def manifest(self, name: ModelName) -> ModelManifest:
        raise AssertionError("the cache reads no manifest: the fleet hands them over")

    def close(self) -> None:
        pass

    def downloads(self, manifest: ModelManifest) -> int:
        wanted = {x.digest for x in (manifest.config, *manifest.layers)}
        return sum(1 for d, _ in self.copies if d in wanted)


def blob_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "blobs").iterdir())


def upload(cache: SeedCache, manifest: ModelManifest) -> bytes:
    """What a host would be sent: every blob of the model, streamed and checked."""
    with cache.pinned(manifest) as store:
        (model,) = store.select([manifest.name])
        found = store.manifest(model)
        return b"".join(b"".join(store.stream_blob(store.blob(x.digest)))
                        for x in found.layers)


def test_sizes_and_the_default_folder() -> None:
    assert [parse_bytes(x) for x in ("12M", "1.5G", "100G", "0", "800k", "2TB", "1000")] \
        == [12_000_000, 1_500_000_000, 100_000_000_000, 0, 800_000, 2 * 10**12, 1000]
    for bad in ("lots", "", "-1", "1e400", "nan", "12Q", "M"):
        with pytest.raises(ValueError):
            parse_bytes(bad)
    assert default_cache_dir({"XDG_CACHE_HOME": "/x/cache", "HOME": "/h"}) == \
        Path("/x/cache/ollama-provision")
    assert default_cache_dir({"XDG_CACHE_HOME": "relative", "HOME": "/h"}, "linux") == \
        Path("/h/.cache/ollama-provision")  # a relative XDG path is ignored, as the spec says
    assert default_cache_dir({"HOME": "/h"}, "darwin") == \
        Path("/h/Library/Caches/ollama-provision")
    assert default_cache_dir({"HOME": "/h", "LOCALAPPDATA": "C:/L"}, "win32") == \
        Path("C:/L/ollama-provision/cache")


def test_each_blob_is_downloaded_once_for_hosts_asking_at_once(tmp_path: Path) -> None:
    source = MemorySource()
    weights = b"w" * 300_000
    model = source.model("m:1", weights)
    cache = SeedCache(tmp_path / "cache", 10**9, source)
    source.gate = threading.Event()
    got: list[bytes] = []
    hosts = [threading.Thread(target=lambda: got.append(upload(cache, model)))
             for _ in range(8)]
    for host in hosts:
        host.start()
    time.sleep(0.2)  # every host is waiting for the one download now
    source.gate.set()
    for host in hosts:
        host.join(10)
    assert got == [weights] * 8
    assert source.downloads(model) == 2  # config and weights, once each
    stats = cache.stats
    assert stats.registry_bytes == len(weights) + model.config.size
    assert stats.registry_blobs == 2 and stats.cached_bytes == 0


def test_the_budget_evicts_the_least_recently_used_and_never_what_is_uploading(
        tmp_path: Path) -> None:
    source = MemorySource()
    old, new, third = (source.model(f"m:{i}", bytes([i]) * 400_000) for i in range(3))
    root = tmp_path / "cache"
    cache = SeedCache(root, 1_000_000, source)
    upload(cache, old)
    time.sleep(0.05)
    with cache.pinned(new):  # uploading `new` while `third` needs room
        upload(cache, third)
        assert not cache.cached(old) and cache.cached(new)  # the older one went
    assert blob_bytes(root) <= 1_000_000
    assert cache.stats.evicted_bytes == old.total_size
    cache.close()
    assert blob_bytes(root) <= 1_000_000


def test_a_download_waits_for_room_an_upload_holds(tmp_path: Path) -> None:
    source = MemorySource()
    first, second = (source.model(f"m:{i}", bytes([i]) * 600_000) for i in range(2))
    cache = SeedCache(tmp_path / "cache", 1_000_000, source)
    uploading, done = threading.Event(), threading.Event()

    def slow_upload() -> None:
        with cache.pinned(first):
            uploading.set()
            time.sleep(0.6)
        done.set()

    host = threading.Thread(target=slow_upload)
    host.start()
    uploading.wait(5)
    assert upload(cache, second) == bytes([1]) * 600_000
    assert done.is_set()  # it got room only once the upload of `first` had ended
    host.join(5)
    assert source.downloads(first) == source.downloads(second) == 2


def test_a_model_larger_than_the_budget_passes_through(tmp_path: Path) -> None:
    source = MemorySource()
    big = source.model("big:1", b"b" * 2_000_000)
    root = tmp_path / "cache"
    cache = SeedCache(root, 1_000_000, source)
    assert upload(cache, big) == b"b" * 2_000_000
    cache.close()
    assert blob_bytes(root) <= 1_000_000


def test_an_interrupted_download_is_taken_up_where_it_stopped(tmp_path: Path) -> None:
    source = MemorySource()
    weights = bytes(range(256)) * 4000
    model = source.model("m:1", weights)
    root = tmp_path / "cache"
    partial = root / "blobs" / (digest(weights).replace(":", "-") + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(weights[:300_000])  # what an interrupted run had written
    cache = SeedCache(root, 10**9, source)
    assert upload(cache, model) == weights
    assert (digest(weights), 300_000) in source.copies
    assert cache.stats.resumed_bytes == 300_000
    assert cache.stats.registry_bytes == len(weights) - 300_000 + model.config.size
    assert not partial.exists()


def test_a_blob_damaged_on_disk_is_never_sent_and_is_fetched_again(tmp_path: Path) -> None:
    source = MemorySource()
    weights = b"x" * 500_000
    model = source.model("m:1", weights)
    root = tmp_path / "cache"
    upload(SeedCache(root, 10**9, source), model)
    path = root / "blobs" / digest(weights).replace(":", "-")
    path.write_bytes(b"y" * len(weights))  # bit rot, same size
    cache = SeedCache(root, 10**9, source)
    sent = bytearray()
    with pytest.raises(BundleError, match="does not match its sha256"), \
            cache.pinned(model) as store:
        for chunk in store.stream_blob(store.blob(digest(weights)), chunk=65536):
            sent += chunk
    assert len(sent) < len(weights)  # the last chunk was held back: never a whole blob
    assert not path.exists()
    assert upload(SeedCache(root, 10**9, source), model) == weights


def test_two_runs_sharing_the_cache_download_a_blob_once(tmp_path: Path) -> None:
    """Another run (here: another SeedCache on the same folder, with its own locks)
    waits for the download under way, says so, and uses what it wrote."""
    first, second = MemorySource(), MemorySource()
    weights = b"s" * 700_000
    model = first.model("m:1", weights)
    second.model("m:1", weights)
    root = tmp_path / "cache"
    first.gate = threading.Event()
    one, other = SeedCache(root, 10**9, first), SeedCache(root, 10**9, second)
    notices: list[str] = []

    class Notes:
        def handle(self, event: object) -> None:
            text = getattr(event, "text", None)
            if text:
                notices.append(text)

    running = threading.Thread(target=lambda: upload(one, model))
    running.start()
    time.sleep(0.2)  # `one` is downloading the config (held at its gate)
    later: list[bytes] = []

    def second_run() -> None:
        with other.pinned(model, Notes()) as store:
            later.append(b"".join(store.stream_blob(store.blob(digest(weights)))))

    waiting = threading.Thread(target=second_run)
    waiting.start()
    time.sleep(0.3)
    assert any("waiting for another run" in n for n in notices)
    first.gate.set()
    running.join(10)
    waiting.join(10)
    assert later == [weights]
    assert second.copies == []  # nothing fetched twice
    assert not list((root / "blobs").glob("*.partial"))
