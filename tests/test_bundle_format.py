"""The bundle file itself: a tar any tar reads, byte-identical for the same models,
checked member by member; and what the progress display shows.

No server here: bundles are written with the writer from bytes made in the test and
read back with the reader, Python's tarfile and the system's `tar`. The real round trip
(registry → bundle → real servers) is tests/test_bundle.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from rich.console import Console

from provision.bundle.format import (
    FORMAT,
    BundleError,
    build_index,
    manifest_member,
    member_header,
    parse_index,
)
from provision.bundle.reader import BundleReader
from provision.bundle.recipe import check_recreatable, recipe, small_layers
from provision.bundle.writer import BlobDigestMismatch, BundleWriter
from provision.cli import main
from provision.models.progress import PlainReporter, TerminalReporter
from provision.models.pull import (
    UPLOADING,
    BlobProgress,
    ErrorKind,
    ModelFinished,
    ModelStarted,
    PullError,
    Retrying,
)
from provision.models.registry import parse_manifest
from provision.names import parse_name

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
P = "application/vnd.ollama.image."


def digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def make_model(name: str, blobs: dict[str, bytes]) -> tuple:
    """(name, manifest bytes, [(digest, size)]) for layers {media type suffix: bytes}."""
    config = json.dumps({"model_format": "gguf", "model_family": "llama",
                         "model_type": "121K", "file_type": "F16"}).encode()
    layers = [{"mediaType": P + kind, "digest": digest(data), "size": len(data)}
              for kind, data in blobs.items()]
    raw = json.dumps({"schemaVersion": 2, "config": {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "digest": digest(config), "size": len(config)}, "layers": layers}).encode()
    contents = {digest(config): config, **{digest(d): d for d in blobs.values()}}
    return parse_name(name), raw, contents


def write_bundle(path: Path, models: list[tuple]) -> BundleReader:
    contents: dict[str, bytes] = {}
    entries = []
    for name, raw, blobs in models:
        contents.update(blobs)
        manifest = parse_manifest(name, raw)
        entries.append((name, raw, [(x.digest, x.size)
                                    for x in (manifest.config, *manifest.layers)]))
    index = build_index(entries)
    writer = BundleWriter(path, index, {manifest_member(n): raw for n, raw, _ in models})
    writer.start()
    for blob in index.blobs:
        sink = writer.sink(blob)
        sink.write(contents[blob.digest])
        sink.finish()
    writer.finish()
    return BundleReader(path)


WEIGHTS = b"GGUF" + bytes(range(256)) * 40
TINY = ("tiny:latest", {"model": WEIGHTS, "template": b"{{ .Prompt }}",
                        "params": b'{"num_predict":24}'})
TINY_SYS = ("tiny:sys", {"model": WEIGHTS, "template": b"{{ .Prompt }}",
                         "system": b"You are terse.", "params": b'{"num_predict":24}'})


def models(*specs: tuple) -> list[tuple]:
    return [make_model(name, blobs) for name, blobs in specs]


# --- the archive ------------------------------------------------------------------------


def test_a_bundle_is_a_plain_tar_index_first_each_blob_once(tmp_path: Path) -> None:
    reader = write_bundle(tmp_path / "b.tar", models(TINY, TINY_SYS))
    with tarfile.open(tmp_path / "b.tar") as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())
        weights = tar.extractfile(f"blobs/{digest(WEIGHTS).replace(':', '-')}").read()
    assert names[0] == "index.json"
    assert names[1:3] == ["manifests/registry.ollama.ai/library/tiny/latest",
                          "manifests/registry.ollama.ai/library/tiny/sys"]
    assert all(n.startswith("blobs/sha256-") for n in names[3:])
    assert names.count(f"blobs/{digest(WEIGHTS).replace(':', '-')}") == 1  # shared: once
    assert weights == WEIGHTS
    assert index["format"] == FORMAT
    assert [m["name"] for m in index["models"]] == ["registry.ollama.ai/library/tiny:latest",
                                                   "registry.ollama.ai/library/tiny:sys"]
    assert reader.index.blob_bytes == sum(b["size"] for b in index["blobs"])
    assert (tmp_path / "b.tar").stat().st_size == reader.expected_size
    assert not (tmp_path / "b.tar.partial").exists()


def test_the_system_tar_extracts_an_ollama_models_folder(tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("no tar command on this machine")
    write_bundle(tmp_path / "b.tar", models(TINY))
    folder = tmp_path / "models"
    folder.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "b.tar"), "-C", str(folder),
                    "--exclude=index.json"], check=True)
    manifest = json.loads((folder / "manifests/registry.ollama.ai/library/tiny/latest")
                          .read_text())
    for layer in manifest["layers"]:
        blob = folder / "blobs" / layer["digest"].replace(":", "-")
        assert digest(blob.read_bytes()) == layer["digest"]


def test_same_models_give_the_same_bytes_whatever_the_order(tmp_path: Path) -> None:
    write_bundle(tmp_path / "a.tar", models(TINY, TINY_SYS))
    write_bundle(tmp_path / "b.tar", models(TINY_SYS, TINY))
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_long_names_and_huge_sizes_use_pax_headers_that_tar_reads(tmp_path: Path) -> None:
    host = "h" * 200 + ".example"
    name = parse_name(f"{host}/library/tiny:latest")
    member = manifest_member(name)
    big = 9 << 30  # past ustar's 8 GiB
    archive = tmp_path / "pax.tar"
    with archive.open("wb") as out:
        out.write(member_header(member, 3) + b"abc" + b"\0" * 509)
        out.write(member_header("blobs/sha256-big", big))
        out.seek(big + (-big % 512), 1)  # a sparse member: no 9 GiB written
        out.write(b"\0" * 1024)
    with tarfile.open(archive) as tar:
        found = [(m.name, m.size) for m in tar.getmembers()]
    assert found == [(member, 3), ("blobs/sha256-big", big)]


def test_an_index_is_checked_before_it_is_trusted() -> None:
    def error(document: object) -> str:
        with pytest.raises(BundleError) as info:
            parse_index(json.dumps(document).encode(), where="b.tar")
        return info.value.message

    good = json.loads(build_index([make_model(*TINY)[:2] + (
        [(digest(WEIGHTS), len(WEIGHTS))],)]).to_bytes())
    assert parse_index(json.dumps(good).encode(), where="b.tar").models
    assert "unknown format" in error({**good, "format": "something/9"})
    bad_path = json.loads(json.dumps(good))
    bad_path["models"][0]["manifest"] = "../../etc/passwd"
    assert "not where it belongs" in error(bad_path)
    bad_digest = json.loads(json.dumps(good))
    bad_digest["blobs"][0]["digest"] = "sha256:../../x"
    assert "malformed" in error(bad_digest)
    with pytest.raises(BundleError, match="not JSON"):
        parse_index(b"\xff\xfe", where="b.tar")


# --- the writer: resume -----------------------------------------------------------------


def test_an_interrupted_write_keeps_what_it_wrote_and_continues(tmp_path: Path) -> None:
    spec = models(TINY)
    name, raw, contents = spec[0]
    manifest = parse_manifest(name, raw)
    index = build_index([(name, raw, [(x.digest, x.size)
                                      for x in (manifest.config, *manifest.layers)])])
    first = BundleWriter(tmp_path / "b.tar", index, {manifest_member(name): raw})
    first.start()
    sink = first.sink(index.blobs[0])
    sink.write(contents[index.blobs[0].digest])
    sink.finish()
    sink = first.sink(index.blobs[1])
    sink.write(WEIGHTS[:1000])  # stopped here (Ctrl-C)
    first.close()

    again = BundleWriter(tmp_path / "b.tar", index, {manifest_member(name): raw})
    resumed = again.start()
    assert resumed.complete == {index.blobs[0].digest}
    assert resumed.partial == (digest(WEIGHTS), 1000)
    for blob in index.blobs[1:]:
        sink = again.sink(blob)
        sink.write(contents[blob.digest][sink.written:])
        sink.finish()
    again.finish()
    write_bundle(tmp_path / "fresh.tar", spec)
    assert (tmp_path / "b.tar").read_bytes() == (tmp_path / "fresh.tar").read_bytes()


def test_a_sink_refuses_bytes_that_are_not_the_blob(tmp_path: Path) -> None:
    name, raw, contents = models(TINY)[0]
    manifest = parse_manifest(name, raw)
    index = build_index([(name, raw, [(x.digest, x.size)
                                      for x in (manifest.config, *manifest.layers)])])
    writer = BundleWriter(tmp_path / "b.tar", index, {manifest_member(name): raw})
    writer.start()
    sink = writer.sink(index.blobs[0])
    sink.write(b"x" * index.blobs[0].size)
    with pytest.raises(BlobDigestMismatch):
        sink.finish()
    with pytest.raises(BlobDigestMismatch):
        sink.write(b"one byte too many")
    writer.close()


# --- the reader: corruption and truncation ----------------------------------------------


def test_a_corrupt_blob_is_never_delivered_whole(tmp_path: Path) -> None:
    reader = write_bundle(tmp_path / "b.tar", models(TINY))
    weights = reader.index.blob(digest(WEIGHTS))
    member = next(m for m in reader.members if m.name == weights.member)
    data = bytearray((tmp_path / "b.tar").read_bytes())
    data[member.data_offset + len(WEIGHTS) - 5] ^= 0xFF
    (tmp_path / "b.tar").write_bytes(bytes(data))
    got = bytearray()
    with pytest.raises(BundleError, match="corrupt"):
        for chunk in BundleReader(tmp_path / "b.tar").stream_blob(weights, chunk=4096):
            got += chunk
    assert 0 < len(got) < len(WEIGHTS)  # the last chunk was held back
    result = BundleReader(tmp_path / "b.tar").verify()
    stored = bytes(data[member.data_offset:member.data_offset + len(WEIGHTS)])
    assert result.problems == (f"blob {digest(WEIGHTS)} does not match its digest (sha256 "
                               f"of its bytes: {digest(stored)})",)


def test_a_truncated_bundle_is_named_before_anything_is_read(tmp_path: Path) -> None:
    reader = write_bundle(tmp_path / "b.tar", models(TINY))
    (tmp_path / "cut.tar").write_bytes((tmp_path / "b.tar").read_bytes()[:5000])
    cut = BundleReader(tmp_path / "cut.tar")
    with pytest.raises(BundleError, match=r"truncated: 5,000 of [\d,]+ bytes"):
        cut.check_length()
    assert cut.expected_size == reader.expected_size
    assert "truncated" in cut.verify().problems[0]


def test_the_cli_names_a_bad_bundle_in_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("not a bundle\n" * 100)
    assert main(["bundle", "inspect", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'notes.txt'} is not a model bundle")
    assert "Traceback" not in err
    assert main(["bundle", "verify", str(tmp_path / "missing.tar")]) == 2
    assert "no such file" in capsys.readouterr().err


# --- the create request -----------------------------------------------------------------


def test_a_manifest_becomes_the_create_request_that_rebuilds_it() -> None:
    projector = b"GGUF-projector"
    name, raw, contents = make_model("vision:latest", {
        "model": WEIGHTS, "projector": projector, "template": b"{{ .Prompt }}",
        "system": b"You see.", "license": b"MIT", "params": b'{"stop":["<end>"]}',
        "messages": b'[{"role":"user","content":"hi"}]'})
    manifest = parse_manifest(name, raw)
    plan = recipe(manifest, {x.digest: contents[x.digest] for x in small_layers(manifest)})
    assert [x.digest for x in plan.uploads] == [digest(WEIGHTS), digest(projector)]
    assert plan.request == {
        "files": {"00-model.gguf": digest(WEIGHTS), "01-projector.gguf": digest(projector)},
        "template": "{{ .Prompt }}", "system": "You see.", "license": "MIT",
        "parameters": {"stop": ["<end>"]}, "messages": [{"role": "user", "content": "hi"}]}
    assert check_recreatable(manifest) is None


def test_layers_the_create_api_cannot_rebuild_are_refused_up_front() -> None:
    name, raw, _ = make_model("imagegen:latest", {"model": WEIGHTS, "tensor": b"t"})
    assert check_recreatable(parse_manifest(name, raw)) == (
        "layers of type tensor cannot be rebuilt through Ollama's create API")
    name, raw, _ = make_model("cloud:latest", {"template": b"x"})
    assert "no weights layer" in check_recreatable(parse_manifest(name, raw))


# --- what a person sees -----------------------------------------------------------------


def _upload_events(reporter, total: int = 4_700_000_000) -> None:
    """An upload as `bundle push` reports it, with the same reporters as a pull."""
    name = "127.0.0.1:5000/library/qwen2.5-coder:14b"
    reporter.handle(ModelStarted(name, total, UPLOADING))
    for done in range(0, total + 1, total // 20):
        reporter.handle(BlobProgress(name, "sha256:" + "ab" * 32, total, done))
    reporter.handle(Retrying(name, 1, 5, 1.0, PullError(
        ErrorKind.UPLOAD_FAILED, "the upload was cut off", retryable=True)))
    reporter.handle(ModelFinished(name, True, "created: 4.7 GB sent (85.0 MB/s)",
                                  moved=total, duration=55.3))


def test_a_terminal_shows_bars_within_80_columns() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=80, color_system=None)
    reporter = TerminalReporter(console)
    with reporter:
        reporter.handle(ModelStarted("qwen2.5-coder:14b", 9_400_000_000, UPLOADING))
        reporter.handle(BlobProgress("qwen2.5-coder:14b", "sha256:" + "ab" * 32,
                                     4_700_000_000, 2_100_000_000))
        console.print(reporter)  # one frame, as the live display draws it
        _upload_events(reporter)
    lines = [x for x in re.split(r"[\r\n]", ANSI.sub("", buffer.getvalue())) if x.strip()]
    assert any(re.search(r"uploading ababababab.. +44% ▕[█ ]+▏ 2\.1/4\.7 GB", x)
               for x in lines)
    assert any(re.search(r"total +22% ▕[█ ]+▏ 2\.1/9\.4 GB", x) for x in lines)
    assert "✓ 127.0.0.1:5000/library/qwen2.5-coder:14b: created: 4.7 GB sent (85.0 MB/s)" \
        in lines
    assert max(len(x) for x in lines) <= 80


def test_a_log_gets_a_start_line_periodic_lines_and_an_end_line() -> None:
    stream = io.StringIO()
    _upload_events(PlainReporter(stream, interval=3600))
    lines = stream.getvalue().splitlines()
    name = "127.0.0.1:5000/library/qwen2.5-coder:14b"
    assert lines[0] == f"uploading {name}"
    steps = [x for x in lines if re.match(rf"{re.escape(name)}: \d+% \(", x)]
    assert 9 <= len(steps) <= 11  # about every 10 %
    assert lines[-2:] == [f"{name}: the upload was cut off; retry 1/5 in 1s",
                          f"{name}: created: 4.7 GB sent (85.0 MB/s)"]
