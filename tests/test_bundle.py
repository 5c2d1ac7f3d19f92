"""Model bundles end to end, with real components only: the real Ollama 0.32.15 and the
real OCI registry from ../shared/ollama, and the CLI run as its own process.

A bundle made from the registry provisions fresh servers that never talk to a registry;
what they end up with is compared with a server that pulled the same models. Bad
bundles, a full disk and a model the server cannot load each fail in one line and leave
nothing on the server; interrupted uploads and downloads continue where they stopped.
Skipped (with the reason) where the real server cannot run; OLLAMA_PROVISION_REQUIRE_OLLAMA=1
turns that into a failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.real import RealOllama, Registry, shared_ollama
from tests.real.gguf import padded_tiny

REPO = Path(__file__).resolve().parents[1]
SHARED = shared_ollama()
SYSTEM_PROMPT = "You answer in one word."
LICENSE_TEXT = "Tiny test licence: use it for anything."
BIG = 100_000_000  # bytes of padding in each synthetic model: long enough to interrupt


@pytest.fixture
def servers(ollama_dist: Path, tmp_path: Path) -> Iterator[Callable[..., RealOllama]]:
    """Fresh real servers: `servers()` an empty one, `servers(seed=True)` one that has
    `tiny` (a copy of the shared models folder)."""
    started: list[RealOllama] = []

    def start(seed: bool = False, **kwargs) -> RealOllama:
        server = RealOllama(ollama_dist, tmp_path / f"server{len(started)}",
                            models_from=SHARED / "models" if seed else None, **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def published(ollama_dist: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[SimpleNamespace]:
    """A real registry holding `tiny:latest` and `tiny:sys` (tiny with a system prompt
    and a licence: the same weights), pushed there by a real server."""
    root = tmp_path_factory.mktemp("published")
    registry = Registry(root / "registry").start()
    seed = None
    try:
        seed = RealOllama(ollama_dist, root / "seed", models_from=SHARED / "models").start()
        # made from the GGUF file, as registry models are (one made FROM another model
        # carries `from` notes in its manifest that no create request can reproduce)
        modelfile = (SHARED / "Modelfile").read_text().replace(
            "FROM ./tiny.gguf", f"FROM {SHARED / 'tiny.gguf'}")
        (root / "Modelfile").write_text(
            f'{modelfile}\nSYSTEM "{SYSTEM_PROMPT}"\nLICENSE """{LICENSE_TEXT}"""\n')
        seed.ollama("create", "tiny-sys", "-f", str(root / "Modelfile"))
        yield SimpleNamespace(
            registry=registry, seed=seed, root=root,
            tiny=seed.publish("tiny", registry, "library/tiny:latest"),
            tiny_sys=seed.publish("tiny-sys", registry, "library/tiny:sys"))
    finally:
        if seed is not None:
            seed.stop()
        registry.stop()


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """ollama-provision as its own process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "provision", *args], cwd=REPO,
                          env=_env(env), capture_output=True, text=True, timeout=timeout)


def cli_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    done = cli(*args, "--json", env=env)
    return done.returncode, json.loads(done.stdout), done.stderr


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (
        "OLLAMA_HOST", "OLLAMA_PROVISION_REGISTRY", "FORCE_COLOR", "HTTP_PROXY",
        "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")}
    env["OLLAMA_PROVISION_RETRY_BASE"] = "0.05"
    return {**env, **(extra or {})}


def one_error(stderr: str) -> str:
    """The single `error:` line a failure must print (and no traceback)."""
    assert "Traceback" not in stderr
    errors = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def weights_of(show: dict) -> str | None:
    from provision.names import parse_name
    from provision.server import parse_show

    return parse_show(parse_name("m"), show).weights


def comparable(show: dict) -> dict:
    """What a user can tell about a model: weights, prompt, parameters, licence, abilities."""
    return {"weights": weights_of(show), "template": show.get("template"),
            "system": show.get("system"), "parameters": show.get("parameters"),
            "license": show.get("license"), "capabilities": show.get("capabilities"),
            "details": show.get("details")}


# --- the proof: a bundle provisions servers as a pull would ----------------------------


def test_a_bundle_provisions_fresh_servers_as_if_they_had_pulled(published, servers,
                                                                  tmp_path) -> None:
    names = [published.tiny, published.tiny_sys]
    code, made, err = cli_json("bundle", "create", *names, "--insecure",
                               "-o", str(tmp_path / "tiny.tar"))
    assert code == 0, err
    assert made["status"] == "created"
    with tarfile.open(tmp_path / "tiny.tar") as tar:
        members = tar.getnames()
    weights = published.seed.show("tiny")
    assert members[0] == "index.json"
    assert members.count("blobs/" + weights_of(weights).replace(":", "-")) == 1  # shared

    pulled = servers()
    for name in names:
        assert pulled.api("/api/pull", {"model": name, "insecure": True,
                                        "stream": False})["status"] == "success"
    provisioned = [servers(), servers()]
    for server in provisioned:
        code, doc, err = cli_json("bundle", "push", str(tmp_path / "tiny.tar"),
                                  "--host", server.url)
        assert code == 0, err
        by_name = {m["name"]: m for m in doc["models"]}
        assert [by_name[n]["status"] for n in names] == ["created", "created"]
        # the weights are uploaded once, for the first model; the second finds them there
        assert sorted(m["blobs_sent"] for m in doc["models"]) == [0, 1]
        assert all(m["same_manifest"] for m in doc["models"])  # the registry's manifests
        assert server.blob_posts() == 1
    for name in names:
        reference = comparable(pulled.show(name))
        assert reference["system"] == (SYSTEM_PROMPT if name.endswith(":sys") else None)
        assert reference["capabilities"] == ["completion", "tools"]
        for server in provisioned:
            assert comparable(server.show(name)) == reference
            assert server.generate(name)["eval_count"] > 0
        assert pulled.generate(name)["eval_count"] > 0

    # a second run sends nothing
    server = provisioned[0]
    code, doc, err = cli_json("bundle", "push", str(tmp_path / "tiny.tar"), "--host",
                              server.url)
    assert code == 0, err
    assert [m["status"] for m in doc["models"]] == ["present", "present"]
    assert sum(m["bytes_sent"] for m in doc["models"]) == 0
    assert server.blob_posts() == 1


def test_no_registry_is_needed_on_the_server_side(published, servers, tmp_path) -> None:
    """A server provisioned from a bundle after the registry is gone."""
    registry = Registry(published.root / "private").start()
    try:
        name = published.seed.publish("tiny", registry, "library/tiny:offline")
        assert cli("bundle", "create", name, "--insecure", "-o",
                   str(tmp_path / "b.tar")).returncode == 0
    finally:
        registry.stop()
    server = servers()
    done = cli("bundle", "push", str(tmp_path / "b.tar"), "--host", server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{name}: created: 253.4 KB sent")
    assert server.generate(name)["done"] is True


def test_a_model_with_other_weights_is_replaced_unless_told_not_to(published, servers,
                                                                   tmp_path) -> None:
    """A republished tag: the server's `tiny` has the old weights, the bundle the new."""
    republished = tmp_path / "tiny-v2.gguf"
    data = bytearray((SHARED / "tiny.gguf").read_bytes())
    data[-64:] = bytes(64)  # other tensor data, same model
    republished.write_bytes(bytes(data))
    modelfile = (SHARED / "Modelfile").read_text().replace("FROM ./tiny.gguf",
                                                           f"FROM {republished}")
    (tmp_path / "Modelfile").write_text(modelfile)
    published.seed.ollama("create", "tiny-v2", "-f", str(tmp_path / "Modelfile"))
    registry = Registry(tmp_path / "registry").start()
    try:
        published.seed.publish("tiny-v2", registry, "library/tiny:latest")
        done = cli("bundle", "create", "tiny", "-o", str(tmp_path / "v2.tar"),
                   env={"OLLAMA_PROVISION_REGISTRY": f"http://{registry.host}"})
        assert done.returncode == 0, done.stderr
    finally:
        registry.stop()
    new_weights = weights_of(published.seed.show("tiny-v2"))
    server = servers(seed=True)
    old_weights = weights_of(server.show("tiny"))
    assert old_weights != new_weights

    code, doc, err = cli_json("bundle", "push", str(tmp_path / "v2.tar"), "--no-upgrade",
                              "--host", server.url)
    assert code == 0, err
    assert (doc["models"][0]["status"], doc["models"][0]["stale"]) == ("present", True)
    assert weights_of(server.show("tiny")) == old_weights

    code, doc, err = cli_json("bundle", "push", str(tmp_path / "v2.tar"), "--host",
                              server.url)
    assert code == 0, err
    assert doc["models"][0]["status"] == "updated"
    assert doc["models"][0]["weights"] == new_weights == weights_of(server.show("tiny"))
    assert list(server.tags()) == ["tiny:latest"]
    assert server.generate("tiny")["done"] is True


def test_the_same_models_give_the_same_bytes_and_the_registry_env_is_honoured(
        published, servers, tmp_path) -> None:
    env = {"OLLAMA_PROVISION_REGISTRY": f"http://{published.registry.host}"}
    for out in ("a.tar", "b.tar"):
        done = cli("bundle", "create", "tiny", "-o", str(tmp_path / out), env=env)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    again = cli("bundle", "create", "tiny", "-o", str(tmp_path / "a.tar"), env=env)
    assert again.stdout.startswith(f"{tmp_path / 'a.tar'}: unchanged")

    # what follows index.json is a models folder: a server can use it as it is
    folder = tmp_path / "models"
    folder.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "a.tar"), "-C", str(folder),
                    "--exclude=index.json"], check=True)
    server = servers(models=folder)
    assert "tiny:latest" in server.tags()
    assert server.generate("tiny")["done"] is True


def test_inspect_and_verify_name_models_sizes_and_digests(published, tmp_path) -> None:
    bundle = tmp_path / "b.tar"
    assert cli("bundle", "create", published.tiny, published.tiny_sys, "--insecure",
               "-o", str(bundle)).returncode == 0
    code, doc, _ = cli_json("bundle", "inspect", str(bundle))
    assert code == 0
    seed = published.seed
    models = {m["name"]: m for m in doc["models"]}
    tiny = models[f"{published.tiny}"]
    assert tiny["weights"] == weights_of(seed.show("tiny"))
    assert tiny["size"] == sum(x["size"] for x in tiny["layers"])
    assert (tiny["family"], tiny["parameter_size"], tiny["quantization"]) == \
        ("llama", "121K", "F16")
    assert doc["shared_bytes"] >= 253_376  # the weights, stored once for both tags
    text = cli("bundle", "inspect", str(bundle)).stdout
    assert f"{published.tiny}  254.8 KB  llama 121K F16" in text
    assert "layers: model 253.4 KB, template 1.2 KB, system 23 B, license 39 B, params" in text
    assert max(len(x) for x in text.splitlines()[1:]) <= 80  # the first names the file

    done = cli("bundle", "verify", str(bundle))
    assert done.returncode == 0
    assert "intact, every digest matches (2 models, 6 blobs" in done.stdout

    corrupt = tmp_path / "corrupt.tar"
    data = bytearray(bundle.read_bytes())
    weights = weights_of(seed.show("tiny"))
    data[data.index(b"GGUF", data.index(b"blobs/" + weights.replace(":", "-").encode()))
         + 100_000] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    code, doc, err = cli_json("bundle", "verify", str(corrupt))
    assert code == 1 and doc["ready"] is False
    assert doc["problems"][0].startswith(f"blob {weights} does not match its digest")
    assert one_error(err) == f"error: {corrupt}: {doc['problems'][0]}"

    cut = tmp_path / "cut.tar"
    cut.write_bytes(bundle.read_bytes()[:200_000])
    done = cli("bundle", "verify", str(cut))
    assert done.returncode == 1
    assert "truncated: 200,000 of" in one_error(done.stderr)
    done = cli("bundle", "inspect", str(cut))
    assert done.returncode == 1 and "is truncated" in one_error(done.stderr)


class CuttingProxy:
    """A TCP relay to a server that cuts the first blob upload through it after `cut`
    bytes of its body, as a flaky network would; everything else passes."""

    def __init__(self, upstream_port: int, cut: int) -> None:
        self.upstream_port, self.cut, self.cuts = upstream_port, cut, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, source, target, watch: bool) -> None:
        seen, body = b"", -1
        try:
            while data := source.recv(65536):
                if watch and body < 0:
                    seen = (seen + data)[-65536:]
                    if b"POST /api/blobs/" in seen:
                        body = 0
                elif watch:
                    body += len(data)
                    with self._lock:
                        if body > self.cut and self.cuts == 0:
                            self.cuts += 1
                            raise ConnectionResetError("cut")
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):  # shutdown wakes the other direction's
                sock.shutdown(socket.SHUT_RDWR)  # recv(), which close alone does not
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_an_upload_cut_off_is_retried_and_the_model_made(published, servers,
                                                          tmp_path) -> None:
    bundle = tmp_path / "b.tar"
    assert cli("bundle", "create", published.tiny, "--insecure", "-o",
               str(bundle)).returncode == 0
    server = servers()
    proxy = CuttingProxy(server.port, cut=100_000)
    try:
        done = cli("bundle", "push", str(bundle), "--host", proxy.url, "--json")
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr
    assert proxy.cuts == 1
    assert "; retry 1/5 in " in done.stderr  # said in the log as it happened
    model = json.loads(done.stdout)["models"][0]
    assert (model["status"], model["retries"], model["blobs_sent"]) == ("created", 1, 1)
    weights = 253_376
    assert weights < model["bytes_sent"] <= 2 * weights  # the cut attempt counts too
    assert weights_of(server.show(published.tiny)) == weights_of(published.seed.show("tiny"))
    assert [f for f in server.blob_files() if not f.startswith("sha256-") or len(f) != 71] == []


# --- bad input leaves nothing on the server ---------------------------------------------


def test_bad_bundles_fail_in_one_line_and_leave_nothing(published, servers, tmp_path) -> None:
    bundle = tmp_path / "b.tar"
    assert cli("bundle", "create", published.tiny, "--insecure", "-o",
               str(bundle)).returncode == 0
    server = servers()
    data = bundle.read_bytes()

    (tmp_path / "cut.tar").write_bytes(data[:150_000])
    done = cli("bundle", "push", str(tmp_path / "cut.tar"), "--host", server.url)
    assert done.returncode == 1
    assert "is truncated: 150,000 of" in one_error(done.stderr)

    weights = weights_of(published.seed.show("tiny"))
    corrupt = bytearray(data)
    corrupt[corrupt.index(b"GGUF", corrupt.index(
        b"blobs/" + weights.replace(":", "-").encode())) + 250_000] ^= 0xFF
    (tmp_path / "corrupt.tar").write_bytes(bytes(corrupt))
    code, doc, err = cli_json("bundle", "push", str(tmp_path / "corrupt.tar"),
                              "--host", server.url)
    assert code == 1
    assert doc["models"][0]["status"] == "failed"
    assert doc["models"][0]["error"]["kind"] == "corrupt-bundle"
    assert "does not match its sha256 digest" in one_error(err)

    done = cli("bundle", "push", str(bundle), "llama3.2:1b", "--host", server.url)
    assert done.returncode == 2
    assert one_error(done.stderr) == (f"error: {bundle} has no model llama3.2:1b (it has: "
                                      f"{published.tiny})")

    (tmp_path / "notes.tar").write_text("hello\n")
    done = cli("bundle", "push", str(tmp_path / "notes.tar"), "--host", server.url)
    assert done.returncode == 2 and "is not a model bundle" in one_error(done.stderr)

    assert server.tags() == {}
    assert server.blob_files() == []  # not even the blob that failed its digest


def test_a_model_the_server_cannot_load_is_reported_and_not_left(servers, tmp_path) -> None:
    gguf = pytest.importorskip("gguf", reason="the gguf package writes the test's model")
    import numpy as np

    # a GGUF of an architecture this Ollama does not know: what a bundle made for a
    # newer Ollama looks like to an older one
    path = tmp_path / "future.gguf"
    writer = gguf.GGUFWriter(str(path), "futurearch")
    writer.add_block_count(1)
    writer.add_tensor("blk.0.weight", np.ones((16, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    bundle = _handmade_bundle(tmp_path, "future", path.read_bytes(), {"model_family": "x"})
    server = servers(seed=True)
    code, doc, err = cli_json("bundle", "push", str(bundle), "--host", server.url)
    assert code == 1
    model = doc["models"][0]
    assert (model["name"], model["status"]) == ("future:latest", "failed")
    assert model["error"]["kind"] == "create-failed"
    assert "llama-quantize" in model["error"]["detail"]
    assert one_error(err).startswith("error: future:latest: the server could not make the "
                                     "model of its files: ")
    assert set(server.tags()) == {"tiny:latest"}  # nothing half-made; tiny untouched
    assert server.generate("tiny")["done"] is True


def test_a_model_for_a_newer_ollama_is_refused_before_any_upload(servers, tmp_path) -> None:
    weights = next(p for p in (SHARED / "models" / "blobs").iterdir()
                   if p.stat().st_size > 100_000)
    bundle = _handmade_bundle(tmp_path, "newer", weights.read_bytes(),
                              {"model_family": "llama", "requires": "99.1.0"})
    server = servers()
    code, doc, err = cli_json("bundle", "push", str(bundle), "--host", server.url)
    assert code == 1
    assert doc["models"][0]["error"]["kind"] == "server-too-old"
    assert one_error(err) == ("error: newer:latest: needs Ollama 99.1.0 or newer; the "
                              "server runs 0.32.15")
    assert server.blob_files() == [] and server.tags() == {}


def _handmade_bundle(tmp_path: Path, model: str, weights: bytes, config: dict) -> Path:
    """A bundle written with the bundle writer from a GGUF and a config made here."""
    from provision.bundle.format import build_index, manifest_member
    from provision.bundle.writer import BundleWriter
    from provision.names import parse_name

    blobs = {"model": weights, "params": b'{"num_predict":8}\n',
             "config": json.dumps({"model_format": "gguf", **config}).encode()}
    layer = {k: {"mediaType": "application/vnd.ollama.image." + k,
                 "digest": "sha256:" + hashlib.sha256(v).hexdigest(), "size": len(v)}
             for k, v in blobs.items()}
    layer["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
    raw = json.dumps({"schemaVersion": 2, "config": layer["config"],
                      "layers": [layer["model"], layer["params"]]}).encode()
    name = parse_name(model)
    index = build_index([(name, raw, [(layer[k]["digest"], layer[k]["size"])
                                      for k in ("config", "model", "params")])])
    out = BundleWriter(tmp_path / f"{model}.tar", index, {manifest_member(name): raw})
    out.start()
    by_digest = {layer[k]["digest"]: v for k, v in blobs.items()}
    for blob in index.blobs:
        sink = out.sink(blob)
        sink.write(by_digest[blob.digest])
        sink.finish()
    out.finish()
    return tmp_path / f"{model}.tar"


def _small_filesystem(path: Path) -> list[str]:
    """A command prefix that runs a command with a 128 KiB file system mounted at `path`
    (a mount namespace of its own: no root needed where user namespaces are allowed)."""
    path.mkdir()
    mount = f"mount -t tmpfs -o size=128k tmpfs {path}"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"{mount} && echo ok"],
                           capture_output=True, text=True)
    if probe.stdout.strip() != "ok":
        pytest.skip(f"cannot mount a small file system here (unshare -rm: "
                    f"{probe.stderr.strip()[:80]})")
    return ["unshare", "-rm", "sh", "-c", f'{mount} && mkdir {path}/models && exec "$@"', "sh"]


def test_a_full_disk_on_the_server_is_named_and_nothing_is_left(published, servers,
                                                                 tmp_path) -> None:
    bundle = tmp_path / "b.tar"
    assert cli("bundle", "create", published.tiny, "--insecure", "-o",
               str(bundle)).returncode == 0
    small = tmp_path / "small"  # tiny's weights are 253 KB
    server = servers(models=small / "models", prefix=_small_filesystem(small))
    code, doc, err = cli_json("bundle", "push", str(bundle), "--host", server.url)
    assert code == 1
    model = doc["models"][0]
    assert model["error"]["kind"] == "disk-full"
    assert model["retries"] == 0  # a full disk is not retried
    assert one_error(err).startswith(f"error: {published.tiny}: the server's disk "
                                     f"is full at {small}/models/blobs")
    assert server.tags() == {}
    assert server.blob_files() == []


def test_a_bundle_the_disk_cannot_hold_is_refused_before_downloading(published,
                                                                     tmp_path) -> None:
    small = tmp_path / "small"
    done = subprocess.run(
        [*_small_filesystem(small), sys.executable, "-m", "provision", "bundle", "create",
         published.tiny, "--insecure", "-o", str(small / "b.tar")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert one_error(done.stderr).startswith(f"error: not enough disk space at {small}: "
                                             "the bundle needs 266.2 KB more, ")


# --- interruptions: nothing is fetched or sent twice ------------------------------------


@pytest.fixture(scope="module")
def big_models(published) -> SimpleNamespace:
    """Two synthetic models of 100 MB on the seed server (`big-a`, `big-b`)."""
    pytest.importorskip("gguf", reason="the gguf package writes the synthetic models")
    root, seed = published.root, published.seed
    for seed_value, model in ((3, "big-a"), (5, "big-b")):
        gguf_file = padded_tiny(root / f"{model}.gguf", BIG, seed_value)
        (root / f"{model}.Modelfile").write_text(f"FROM {gguf_file}\n")
        seed.ollama("create", model, "-f", str(root / f"{model}.Modelfile"))
        gguf_file.unlink()
    return SimpleNamespace(names=["big-a:latest", "big-b:latest"], seed=seed)


def _interrupt_when(proc: subprocess.Popen, ready: Callable[[], bool],
                    timeout: float = 120) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "finished before it could be interrupted"
        assert time.monotonic() < deadline, "never got to the point of interruption"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "provision", *args], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_interrupted_push_continues_without_sending_a_blob_twice(big_models, servers,
                                                                     tmp_path) -> None:
    bundle = tmp_path / "big.tar"
    seed = big_models.seed
    code, made, err = cli_json("bundle", "create", *big_models.names, "--from-server",
                               seed.url, "-o", str(bundle))
    assert code == 0, err
    assert made["fetched"] == sum(b["size"] for b in made["blobs"])
    weights = {n: weights_of(seed.show(n)) for n in big_models.names}
    a_blob, b_blob = (weights[n].replace(":", "-") for n in big_models.names)

    def uploading_the_second() -> bool:
        """big-a's weights are in place and the server is receiving big-b's (Ollama
        writes an upload to a temporary `sha256-<random>` file beside the blobs)."""
        files = server.blob_files()
        return a_blob in files and any(
            f.startswith("sha256-") and len(f) != len(a_blob)
            and (server.models / "blobs" / f).stat().st_size > 10e6 for f in files)

    server = servers()
    stopped = _interrupt_when(
        _start("bundle", "push", str(bundle), "--host", server.url, "--limit-rate", "40M"),
        uploading_the_second)
    assert stopped.returncode == 130
    assert "interrupted: run the same command again" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    time.sleep(0.5)  # the server notices the cut-off upload and drops it
    assert b_blob not in server.blob_files()
    assert all(len(f) == len(a_blob) for f in server.blob_files())  # no partial upload left

    code, doc, err = cli_json("bundle", "push", str(bundle), "--host", server.url)
    assert code == 0, err
    by_name = {m["name"]: m for m in doc["models"]}
    assert by_name["big-a:latest"]["blobs_sent"] == 0  # on the server already: not sent
    assert by_name["big-b:latest"]["blobs_sent"] == 1
    b_size = next(b["size"] for b in made["blobs"] if b["digest"] == weights["big-b:latest"])
    assert sum(m["bytes_sent"] for m in doc["models"]) == b_size
    for name in big_models.names:
        assert weights_of(server.show(name)) == weights[name]


def test_an_interrupted_create_continues_with_range_requests(published, big_models,
                                                             tmp_path) -> None:
    name = published.seed.publish("big-a", published.registry, "library/big-a:latest")
    bundle = tmp_path / "r.tar"
    partial = tmp_path / "r.tar.partial"
    stopped = _interrupt_when(
        _start("bundle", "create", name, "--insecure", "-o", str(bundle),
               "--limit-rate", "40M"),
        lambda: partial.exists() and partial.stat().st_size > 30_000_000)
    assert stopped.returncode == 130
    assert "r.tar.partial is kept" in stopped.stderr
    assert not bundle.exists()
    kept_before = partial.stat().st_size

    code, doc, err = cli_json("bundle", "create", name, "--insecure", "-o", str(bundle))
    assert code == 0, err
    total = sum(b["size"] for b in doc["blobs"])
    assert kept_before - 100_000 <= doc["kept"] <= kept_before  # headers aside: all kept
    assert doc["fetched"] == total - doc["kept"]  # Range: only the rest came again
    assert cli("bundle", "verify", str(bundle)).returncode == 0
    assert not partial.exists()
