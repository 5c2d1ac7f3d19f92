"""The Ollama test double (tests/double/) behaves like a real Ollama: excerpts of a real
0.12.9's answers below, the real 0.32.15 in tests/integration/test_contract.py. Plain httpx
against the double, real HTTP on loopback."""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.double import (
    CATALOG,
    GIB,
    MIB,
    CatalogModel,
    Fault,
    NotOllamaServer,
    OllamaTestServer,
    go_json,
    human_bytes2,
    make_catalog_model,
)

ROOT = Path(__file__).resolve().parent.parent

# One-line excerpts of raw captures of a real Ollama 0.12.9's answers (the workplace's
# reference captures, outside this repository), kept here so the tests run anywhere.
CAPTURED_TAGS_MODEL = json.loads(
    '{"name":"tiny:latest","model":"tiny:latest","modified_at":"2026-11-21T07:51:15.796224701Z",'
    '"size":85311,"digest":"b0c9214d3340c124934ebc584612bcfaf4942a50f4cc0e756276a942ea5073ca",'
    '"details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],'
    '"parameter_size":"38K","quantization_level":"F16"}}')
CAPTURED_SHOW_KEYS = ["modelfile", "parameters", "template", "details", "model_info", "tensors",
                      "capabilities", "modified_at"]
CAPTURED_TINY_MODEL_INFO = json.loads(
    '{"general.architecture":"llama","general.file_type":1,"general.parameter_count":38240,'
    '"llama.attention.head_count":4,"llama.attention.head_count_kv":4,'
    '"llama.attention.layer_norm_rms_epsilon":0.00001,"llama.block_count":2,'
    '"llama.context_length":256,"llama.embedding_length":32,"llama.feed_forward_length":64,'
    '"llama.rope.dimension_count":8,"llama.rope.freq_base":10000,"llama.vocab_size":275,'
    '"tokenizer.ggml.add_bos_token":true,"tokenizer.ggml.add_eos_token":false,'
    '"tokenizer.ggml.bos_token_id":1,"tokenizer.ggml.eos_token_id":2,'
    '"tokenizer.ggml.model":"llama","tokenizer.ggml.scores":null,'
    '"tokenizer.ggml.token_type":null,"tokenizer.ggml.tokens":null,'
    '"tokenizer.ggml.unknown_token_id":0}')
CAPTURED_TINY_BLOCK0 = [
    ("blk.0.attn_norm.weight", "F32", [32]), ("blk.0.attn_q.weight", "F16", [32, 32]),
    ("blk.0.attn_k.weight", "F16", [32, 32]), ("blk.0.attn_v.weight", "F16", [32, 32]),
    ("blk.0.attn_output.weight", "F16", [32, 32]), ("blk.0.ffn_norm.weight", "F32", [32]),
    ("blk.0.ffn_gate.weight", "F16", [32, 64]), ("blk.0.ffn_up.weight", "F16", [32, 64]),
    ("blk.0.ffn_down.weight", "F16", [64, 32])]
CAPTURED_PS_KEYS = ["name", "model", "size", "digest", "details", "expires_at", "size_vram",
                    "context_length"]
CAPTURED_STREAM_TOKEN_KEYS = ["model", "created_at", "response", "done"]
CAPTURED_STREAM_FINAL_KEYS = ["model", "created_at", "response", "done", "done_reason", "context",
                              "total_duration", "load_duration", "prompt_eval_count",
                              "prompt_eval_duration", "eval_count", "eval_duration"]
CAPTURED_PULL_LINE_KEYS = ["status", "digest", "total", "completed"]


def lines_of(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def pull(srv: OllamaTestServer, model: str, **extra: Any) -> list[dict[str, Any]]:
    r = httpx.post(srv.url + "/api/pull", json={"model": model, **extra}, timeout=10)
    assert r.status_code == 200, r.text
    return lines_of(r)


def blob_lines(lines: list[dict[str, Any]], digest: str) -> list[dict[str, Any]]:
    return [x for x in lines if x.get("digest") == digest]


# ---- a GGUF reader independent of the module under test ------------------------------------

_TYPE_SIZES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
               8: (32, 34), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
               14: (256, 210), 30: (1, 2)}
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}


class _RangeReader:
    def __init__(self, fetch: Callable[[int, int], bytes]) -> None:
        self.fetch, self.buf, self.pos, self.fetches = fetch, bytearray(), 0, 0

    def take(self, n: int) -> bytes:
        while len(self.buf) < self.pos + n:
            chunk = self.fetch(len(self.buf), 2 * MIB)
            self.fetches += 1
            assert chunk, "blob ended inside the header"
            self.buf += chunk
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("Q")).decode()

    def value(self, vtype: int) -> Any:
        if vtype == 8:
            return self.string()
        if vtype == 9:
            elem, count = self.unpack("I"), self.unpack("Q")
            return [self.value(elem) for _ in range(count)]
        return self.unpack(_SCALARS[vtype])


def read_gguf(fetch: Callable[[int, int], bytes]) -> tuple[dict[str, Any], list[Any], int, int]:
    """(kv, tensors [(name, dims, type, offset)], header size, data size)."""
    r = _RangeReader(fetch)
    assert r.take(4) == b"GGUF"
    assert r.unpack("I") == 3
    n_tensors, n_kv = r.unpack("Q"), r.unpack("Q")
    kv = {}
    for _ in range(n_kv):
        key = r.string()
        kv[key] = r.value(r.unpack("I"))
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        dims = [r.unpack("Q") for _ in range(r.unpack("I"))]
        tensors.append((name, dims, r.unpack("I"), r.unpack("Q")))
    header = -(-r.pos // 32) * 32
    data = 0
    for name, dims, ggml_type, offset in tensors:
        assert offset == data, name
        block, size = _TYPE_SIZES[ggml_type]
        rows = 1
        for d in dims[1:]:
            rows *= d
        data += -(-(rows * -(-dims[0] // block) * size) // 32) * 32
    return kv, tensors, header, data


# ---- basics ---------------------------------------------------------------------------------


def test_root_version_and_unknown_paths(ollama: OllamaTestServer) -> None:
    r = httpx.get(ollama.url + "/")
    assert (r.status_code, r.text) == (200, "Ollama is running")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "server" not in r.headers
    r = httpx.head(ollama.url + "/")
    assert r.status_code == 200 and r.content == b""
    assert httpx.get(ollama.url + "/api/version").json() == {"version": "0.13.5"}
    ollama.set_version("0.12.9")
    assert httpx.get(ollama.url + "/api/version").json() == {"version": "0.12.9"}
    for method, path in [("GET", "/nope"), ("GET", "/api/pull"), ("POST", "/api/tags")]:
        r = httpx.request(method, ollama.url + path)
        assert (r.status_code, r.text) == (404, "404 page not found"), (method, path)
    assert ollama.url.startswith("http://127.0.0.1:") and not ollama.url.endswith("/")


def test_fixtures_and_requests_are_recorded(make_ollama: Callable[..., OllamaTestServer],
                                            ollama: OllamaTestServer) -> None:
    other = make_ollama(version="0.6.0", installed=["tiny"])
    assert httpx.get(other.url + "/api/version").json()["version"] == "0.6.0"
    assert other.installed_names() == ["tiny:latest"]
    httpx.post(ollama.url + "/api/show", json={"model": "x"}, headers={"X-Test": "1"})
    rec = ollama.requests[-1]
    assert (rec.method, rec.path, rec.json, rec.status) == ("POST", "/api/show", {"model": "x"},
                                                            404)
    assert rec.headers["x-test"] == "1" and rec.body == b'{"model":"x"}'
    assert ollama.requests_to("/api/show") == [rec]


def test_go_json_encoding() -> None:
    assert go_json({"a": "<|eot_id|> & x", "b": 10000.0, "c": 1e-5, "d": [1, None, True]}) == (
        '{"a":"\\u003c|eot_id|\\u003e \\u0026 x","b":10000,"c":0.00001,"d":[1,null,true]}')
    assert go_json(1e-7) == "1e-7" and go_json(1e21) == "1e+21" and go_json(0.5) == "0.5"
    assert human_bytes2(int(5.6 * GIB)) == "5.6 GiB" and human_bytes2(512 * MIB) == "512.0 MiB"


# ---- tags / show / ps -------------------------------------------------------------------------


def test_tags_like_capture(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(installed=["llama3.2:1b", "tiny"])
    r = httpx.get(srv.url + "/api/tags")
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    models = r.json()["models"]
    assert [m["name"] for m in models] == ["tiny:latest", "llama3.2:1b"]  # newest first
    assert list(models[0]) == list(CAPTURED_TAGS_MODEL)
    assert list(models[0]["details"]) == list(CAPTURED_TAGS_MODEL["details"])
    assert models[0]["details"] == CAPTURED_TAGS_MODEL["details"]
    assert abs(models[0]["size"] - CAPTURED_TAGS_MODEL["size"]) < 100  # 85310 vs 85311
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", models[0]["modified_at"])
    manifest = httpx.get(srv.url + "/v2/library/llama3.2/manifests/1b")
    entry = models[1]
    assert entry["digest"] == hashlib.sha256(manifest.content).hexdigest()
    m = manifest.json()
    assert entry["size"] == sum(x["size"] for x in m["layers"]) + m["config"]["size"]
    assert entry["details"]["parameter_size"] == "1.2B"
    assert entry["details"]["quantization_level"] == "Q8_0"
    assert 1.30e9 < entry["size"] < 1.34e9  # Ollama ships llama3.2:1b as 1.3 GB


def test_show_like_capture_on_0_12_9(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(version="0.12.9", installed=["tiny"])
    r = httpx.post(srv.url + "/api/show", json={"model": "tiny"})
    show = r.json()
    assert list(show) == CAPTURED_SHOW_KEYS
    assert show["model_info"] == CAPTURED_TINY_MODEL_INFO
    assert '"llama.attention.layer_norm_rms_epsilon":0.00001' in r.text
    assert '"llama.rope.freq_base":10000,' in r.text
    assert show["parameters"] == "num_ctx                        256"
    assert show["template"] == "{{ .Prompt }}" and show["capabilities"] == ["completion"]
    weights = srv.manifest("tiny")["layers"][0]["digest"].split(":")[1]
    assert show["modelfile"].splitlines()[4] == f"FROM /root/.ollama/models/blobs/sha256-{weights}"
    assert show["modelfile"].endswith("TEMPLATE {{ .Prompt }}\nPARAMETER num_ctx 256\n")
    tensors = [(t["name"], t["type"], t["shape"]) for t in show["tensors"]]
    assert tensors[:3] == [("token_embd.weight", "F16", [32, 275]),
                           ("output_norm.weight", "F32", [32]),
                           ("output.weight", "F16", [32, 275])]
    assert tensors[3:12] == CAPTURED_TINY_BLOCK0 and len(tensors) == 21


def test_show_versions_verbose_and_errors(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(installed=["llama3.2:1b", "llama3.1:8b", "nomic-embed-text"])
    info = httpx.post(srv.url + "/api/show", json={"model": "llama3.2:1b"}).json()["model_info"]
    # Long arrays are null unless verbose (the 0.12.9 captures and a real 0.32.15 agree).
    assert info["tokenizer.ggml.tokens"] is None and info["tokenizer.ggml.merges"] is None
    assert info["llama.attention.key_length"] == 64 and info["llama.block_count"] == 16
    info8 = httpx.post(srv.url + "/api/show", json={"model": "llama3.1:8b"}).json()
    mi = info8["model_info"]
    assert "llama.attention.key_length" not in mi
    assert (mi["llama.attention.head_count_kv"], mi["llama.embedding_length"],
            mi["llama.feed_forward_length"], mi["llama.context_length"],
            mi["general.parameter_count"]) == (8, 4096, 14336, 131072, 8030261312)
    assert info8["capabilities"] == ["completion", "tools"] and "license" in info8
    verbose = httpx.post(srv.url + "/api/show", json={"model": "llama3.2:1b", "verbose": True})
    tokens = verbose.json()["model_info"]["tokenizer.ggml.tokens"]
    assert len(tokens) == 128256 and tokens[128009] == "<|eot_id|>"
    embed = httpx.post(srv.url + "/api/show", json={"model": "nomic-embed-text"}).json()
    assert embed["capabilities"] == ["embedding"]
    assert embed["details"]["family"] == "nomic-bert"
    r = httpx.post(srv.url + "/api/show", json={"model": "llama3:8b"})
    assert (r.status_code, r.json()) == (404, {"error": "model 'llama3:8b' not found"})
    r = httpx.post(srv.url + "/api/show", content=b"")
    assert r.status_code == 400


def test_generate_load_unload_ps_and_placement(make_ollama: Callable[..., OllamaTestServer]
                                               ) -> None:
    srv = make_ollama(installed=["llama3.1:8b", "llama3.1:70b"], vram=[8 * GIB],
                      memory=64 * GIB)
    r = httpx.post(srv.url + "/api/generate", json={"model": "llama3.1:8b"})
    body = r.json()
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert list(body) == ["model", "created_at", "response", "done", "done_reason"]
    assert (body["response"], body["done"], body["done_reason"]) == ("", True, "load")
    ps = httpx.get(srv.url + "/api/ps").json()["models"]
    assert [list(m) for m in ps] == [CAPTURED_PS_KEYS]
    assert ps[0]["size_vram"] == ps[0]["size"] > 4.9e9 and ps[0]["context_length"] == 4096
    tags = {m["name"]: m["digest"] for m in httpx.get(srv.url + "/api/tags").json()["models"]}
    assert ps[0]["digest"] == tags["llama3.1:8b"]
    r = httpx.post(srv.url + "/api/generate", json={"model": "llama3.1:70b", "keep_alive": "1h"})
    assert r.status_code == 200
    big = next(m for m in httpx.get(srv.url + "/api/ps").json()["models"]
               if m["name"] == "llama3.1:70b")
    assert 0 < big["size_vram"] < big["size"]  # partial offload: proportional share
    r = httpx.post(srv.url + "/api/generate", json={"model": "llama3.1:8b", "keep_alive": 0})
    assert r.json()["done_reason"] == "unload"
    assert srv.loaded_names() == ["llama3.1:70b"]
    r = httpx.post(srv.url + "/api/generate", json={"model": "llama3:8b"})
    assert (r.status_code, r.json()["error"]) == (
        404, "model 'llama3:8b' not found, try pulling it first")


def test_memory_error_and_cpu_only(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(installed=["llama3.1:70b", "llama3.1:8b"], vram=[], memory=16 * GIB)
    r = httpx.post(srv.url + "/api/generate", json={"model": "llama3.1:70b"})
    assert r.status_code == 500
    assert re.fullmatch(r"model requires more system memory \(\d+\.\d GiB\) than is available "
                        r"\(16\.0 GiB\)", r.json()["error"])
    httpx.post(srv.url + "/api/generate", json={"model": "llama3.1:8b"})
    assert httpx.get(srv.url + "/api/ps").json()["models"][0]["size_vram"] == 0
    cpu = httpx.post(srv.url + "/api/generate",
                     json={"model": "llama3.1:8b", "prompt": "hi", "stream": False}).json()
    gpu_srv = make_ollama(installed=["llama3.1:8b"], vram=[24 * GIB])
    gpu = httpx.post(gpu_srv.url + "/api/generate",
                     json={"model": "llama3.1:8b", "prompt": "hi", "stream": False}).json()
    cpu_tps = cpu["eval_count"] / cpu["eval_duration"] * 1e9
    gpu_tps = gpu["eval_count"] / gpu["eval_duration"] * 1e9
    assert 3 < cpu_tps < 15 and 25 < gpu_tps < 150 and gpu_tps > 4 * cpu_tps


def test_generate_stream_like_capture(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(installed=["tiny"], tokens_per_second=100.0)
    r = httpx.post(srv.url + "/api/generate",
                   json={"model": "tiny", "prompt": "hello", "options": {"num_predict": 4}})
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.headers["transfer-encoding"] == "chunked"
    objs = lines_of(r)
    assert len(objs) == 5
    assert all(list(o) == CAPTURED_STREAM_TOKEN_KEYS for o in objs[:-1])
    assert list(objs[-1]) == CAPTURED_STREAM_FINAL_KEYS
    final = objs[-1]
    assert (final["done_reason"], final["eval_count"]) == ("length", 4)
    assert final["eval_duration"] == 40_000_000  # 4 tokens at 100 tokens/s
    assert final["total_duration"] >= final["load_duration"] + final["eval_duration"]
    r = httpx.post(srv.url + "/api/chat", json={"model": "tiny", "stream": False,
                                                "messages": [{"role": "user", "content": "x"}]})
    assert r.json()["message"]["role"] == "assistant" and r.json()["done"] is True
    srv2 = make_ollama(installed=["nomic-embed-text"])
    r = httpx.post(srv2.url + "/api/generate", json={"model": "nomic-embed-text", "prompt": "x"})
    assert r.status_code == 400
    r = httpx.post(srv2.url + "/api/embed", json={"model": "nomic-embed-text", "input": ["a"]})
    assert len(r.json()["embeddings"][0]) == 768


# ---- pull -------------------------------------------------------------------------------------


def test_pull_stream_fresh_then_cached(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(download_rate=20e9, tick=0.005)  # 1.3 GB in ~65 ms of real time
    r = httpx.post(srv.url + "/api/pull", json={"model": "llama3.2:1b"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert r.headers["transfer-encoding"] == "chunked"
    lines = lines_of(r)
    assert lines[0] == {"status": "pulling manifest"}
    assert [x["status"] for x in lines[-3:]] == ["verifying sha256 digest", "writing manifest",
                                                 "success"]
    manifest = srv.manifest("llama3.2:1b")
    blobs = [*manifest["layers"], manifest["config"]]
    seen = [x["digest"] for x in lines if "digest" in x]
    assert list(dict.fromkeys(seen)) == [b["digest"] for b in blobs]  # layers then config
    weights = blob_lines(lines, blobs[0]["digest"])
    assert len(weights) >= 5  # repeated lines, one per tick
    assert "completed" not in weights[0]  # left out when 0
    assert all(list(x) == CAPTURED_PULL_LINE_KEYS for x in weights[1:])
    completed = [x.get("completed", 0) for x in weights]
    assert completed == sorted(completed) and completed[-1] == blobs[0]["size"]
    assert weights[0]["status"] == "pulling " + blobs[0]["digest"][7:19]
    assert srv.installed_names() == ["llama3.2:1b"] and srv.partial == {}
    again = pull(srv, "llama3.2:1b")
    assert [x["status"] for x in again if "digest" not in x] == [
        "pulling manifest", "verifying sha256 digest", "writing manifest", "success"]
    for b in blobs:  # like pull_stream_cached_f32.ndjson: completed == total at once
        assert blob_lines(again, b["digest"]) == [{
            "status": "pulling " + b["digest"][7:19], "digest": b["digest"],
            "total": b["size"], "completed": b["size"]}]
    r = httpx.post(srv.url + "/api/pull", json={"name": "llama3.2:1b", "stream": False})
    assert r.json() == {"status": "success"}
    assert r.headers["content-type"] == "application/json"  # set before gin writes it


def test_pull_errors(ollama: OllamaTestServer) -> None:
    r = httpx.post(ollama.url + "/api/pull", json={"model": "llama3.2:99b"})
    assert r.status_code == 200
    assert lines_of(r) == [{"status": "pulling manifest"},
                           {"error": "pull model manifest: file does not exist"}]
    r = httpx.post(ollama.url + "/api/pull", json={"model": "nope", "stream": False})
    assert (r.status_code, r.json()) == (500, {"error": "pull model manifest: file does not exist"})
    for bad in ["a//b", "", "bad name", ":tag"]:
        r = httpx.post(ollama.url + "/api/pull", json={"model": bad})
        assert (r.status_code, r.json()) == (400, {"error": "invalid model name"}), bad
    assert ollama.installed_names() == []


def test_drop_keeps_partial_and_pull_resumes(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(download_rate=20e9)
    srv.faults.append(Fault("drop", after_bytes=300_000_000, model="llama3.2:1b"))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(srv.url + "/api/pull", json={"model": "llama3.2:1b"})
    weights = srv.manifest("llama3.2:1b")["layers"][0]["digest"]
    assert srv.partial == {weights: 300_000_000}
    assert srv.installed_names() == []
    lines = pull(srv, "llama3.2:1b")
    first = blob_lines(lines, weights)[0]
    assert first["completed"] == 300_000_000  # resumed where it stopped
    assert lines[-1] == {"status": "success"} and srv.partial == {}


def test_stall_client_timeout_and_prompt_stop(make_ollama: Callable[..., OllamaTestServer]
                                              ) -> None:
    srv = make_ollama(download_rate=20e9)
    srv.manifest("llama3.2:1b")  # warm up: the first llama3 header costs ~0.5 s per process
    srv.add_fault("stall", after_bytes=100_000_000, times=None)
    got: list[dict[str, Any]] = []
    with pytest.raises(httpx.ReadTimeout), httpx.stream(
            "POST", srv.url + "/api/pull", json={"model": "llama3.2:1b"},
            timeout=httpx.Timeout(5, read=0.3)) as r:
        for line in r.iter_lines():
            got.append(json.loads(line))
    assert got[-1]["completed"] == 100_000_000
    time.sleep(0.15)  # the server notices the client is gone; partial kept
    assert list(srv.partial.values()) == [100_000_000]
    errors: list[BaseException] = []

    def stalled_pull() -> None:
        try:
            httpx.post(srv.url + "/api/pull", json={"model": "llama3.2:1b"}, timeout=30)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    thread = threading.Thread(target=stalled_pull)
    thread.start()
    time.sleep(0.2)
    srv.stop()
    thread.join(5)
    assert not thread.is_alive()  # stop() ends a stalled stream instead of hanging on it
    assert errors and isinstance(errors[0], httpx.HTTPError)


def test_error_lines_and_digest_mismatch(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama()
    srv.add_fault("error_line", after_bytes=50_000_000,
                  message="write /root/.ollama/models/blobs/sha256-{hex}-partial: "
                          "no space left on device")
    lines = pull(srv, "tiny")  # tiny is smaller than after_bytes: not concerned
    assert lines[-1] == {"status": "success"}
    lines = pull(srv, "llama3.2:1b")
    weights = srv.manifest("llama3.2:1b")["layers"][0]["digest"]
    assert lines[-1] == {"error": f"write /root/.ollama/models/blobs/sha256-{weights[7:]}-partial:"
                                  " no space left on device"}
    assert srv.partial[weights] == 50_000_000
    r = httpx.post(srv.url + "/api/pull", json={"model": "llama3.2:1b", "stream": False})
    assert r.json() == {"status": "success"}
    srv.add_fault("error_line", message="digest mismatch", model="llama3.2:3b")
    lines = pull(srv, "llama3.2:3b")
    assert lines[-2] == {"status": "verifying sha256 digest"}
    want = srv.manifest("llama3.2:3b")["layers"][0]["digest"]
    assert re.fullmatch(rf"digest mismatch, file must be downloaded again: want {want}, got "
                        r"sha256:[0-9a-f]{64}", lines[-1]["error"])
    lines = pull(srv, "llama3.2:3b")  # discarded: downloaded again from 0
    assert "completed" not in blob_lines(lines, want)[0] and lines[-1]["status"] == "success"


def test_other_faults(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(download_rate=20e9, installed=["tiny"])
    srv.add_fault("http_500", endpoint="/api/tags", message="boom")
    r = httpx.get(srv.url + "/api/tags")
    assert (r.status_code, r.json()) == (500, {"error": "boom"})
    assert httpx.get(srv.url + "/api/tags").status_code == 200  # spent
    srv.add_fault("garbage", after_bytes=10_000_000, message="<html>oops</html>")
    r = httpx.post(srv.url + "/api/pull", json={"model": "llama3.2:1b"})
    raw = r.text.splitlines()
    assert "<html>oops</html>" in raw and json.loads(raw[-1]) == {"status": "success"}
    srv.remove("llama3.2:1b")
    srv.add_fault("backwards", after_bytes=200_000_000)
    lines = pull(srv, "llama3.2:1b")
    weights = srv.manifest("llama3.2:1b")["layers"][0]["digest"]
    done = [x.get("completed", 0) for x in blob_lines(lines, weights)]
    drops = [a - b for a, b in zip(done, done[1:]) if b < a]
    assert drops == [200_000_000] and done[-1] == srv.manifest("llama3.2:1b")["layers"][0]["size"]
    srv.add_fault("slow_headers", endpoint="/api/version", seconds=0.3)
    started = time.monotonic()
    assert httpx.get(srv.url + "/api/version").status_code == 200
    assert time.monotonic() - started >= 0.3
    srv.add_fault("registry_unreachable", model="llama3.1:8b")
    assert pull(srv, "llama3.1:8b") == [
        {"status": "pulling manifest"},
        {"error": 'pull model manifest: Get "https://registry.ollama.ai/v2/library/llama3.1/'
                  'manifests/8b": dial tcp: lookup registry.ollama.ai: no such host'}]
    srv.add_fault("drop", endpoint="/api/ps")
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(srv.url + "/api/ps")
    with pytest.raises(ValueError):
        Fault("meteor")


def test_concurrent_pulls_share_one_download(make_ollama: Callable[..., OllamaTestServer]
                                             ) -> None:
    srv = make_ollama(download_rate=2.5e9)  # 1.3 GB: ~0.53 s
    srv.manifest("llama3.2:1b")  # warm up the header outside the timing
    results: dict[int, list[dict[str, Any]]] = {}

    def worker(i: int) -> None:
        results[i] = pull(srv, "llama3.2:1b")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.08)
    for t in threads:
        t.join(10)
    assert len(results) == 2 and all(r[-1] == {"status": "success"} for r in results.values())
    weights = srv.manifest("llama3.2:1b")["layers"][0]["digest"]
    late = blob_lines(results[1], weights)
    assert late[0].get("completed", 0) > 0  # the second pull joined a running download


def test_update_model_removes_unused_layers(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    old = srv.manifest("llama3.2:1b")["layers"][0]["digest"]
    old_tag = httpx.get(srv.url + "/api/tags").json()["models"][0]["digest"]
    new = srv.update_model("llama3.2:1b")
    assert new != old and srv.manifest("llama3.2:1b")["layers"][0]["digest"] == new
    lines = pull(srv, "llama3.2:1b")
    assert blob_lines(lines, new)[-1]["completed"] == srv.manifest("llama3.2:1b")["layers"][0][
        "size"]
    assert [x["status"] for x in lines[-4:]] == ["verifying sha256 digest", "writing manifest",
                                                 "removing unused layers", "success"]
    assert httpx.get(srv.url + "/api/tags").json()["models"][0]["digest"] != old_tag
    show = httpx.post(srv.url + "/api/show", json={"model": "llama3.2:1b"}).json()
    assert f"sha256-{new[7:]}" in show["modelfile"]
    assert "removing unused layers" not in [x["status"] for x in pull(srv, "llama3.2:1b")]


# ---- create / delete / copy -------------------------------------------------------------------


def test_create_delete_copy(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    manifest = srv.manifest("llama3.2:1b")
    r = httpx.post(srv.url + "/api/create", json={"model": "mine", "from": "llama3.2:1b",
                                                  "system": "Be brief.",
                                                  "parameters": {"num_ctx": 8192}})
    lines = lines_of(r)
    assert lines[0] == {"status": f"using existing layer {manifest['layers'][0]['digest']}"}
    assert any(x["status"].startswith("creating new layer sha256:") for x in lines)
    assert [x["status"] for x in lines[-2:]] == ["writing manifest", "success"]
    assert srv.installed_names()[0] == "mine:latest"
    show = httpx.post(srv.url + "/api/show", json={"model": "mine"}).json()
    assert show["system"] == "Be brief." and "num_ctx                        8192" in show[
        "parameters"]
    r = httpx.post(srv.url + "/api/create", json={"model": "x", "from": "nope:1"})
    assert lines_of(r)[-1] == {"error": "pull model manifest: file does not exist"}
    assert httpx.post(srv.url + "/api/copy", json={"source": "mine", "destination": "copy"}
                      ).status_code == 200
    r = httpx.request("DELETE", srv.url + "/api/delete", json={"model": "mine"})
    assert (r.status_code, r.content) == (200, b"")
    r = httpx.request("DELETE", srv.url + "/api/delete", json={"model": "mine"})
    assert (r.status_code, r.json()) == (404, {"error": "model 'mine' not found"})
    assert sorted(srv.installed_names()) == ["copy:latest", "llama3.2:1b"]


# ---- OpenAI compatibility ---------------------------------------------------------------------


def test_openai_endpoints(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(installed=["llama3.2:1b"], version="0.13.3")
    models = httpx.get(srv.url + "/v1/models").json()
    assert models["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in models["data"]] == [
        ("llama3.2:1b", "model", "library")]
    body = {"model": "llama3.2:1b", "input": "Say hi"}
    r = httpx.post(srv.url + "/v1/responses", json=body)
    assert (r.status_code, r.text) == (404, "404 page not found")
    srv.set_version("0.13.4")
    r = httpx.post(srv.url + "/v1/responses", json=body)
    resp = r.json()
    assert (resp["object"], resp["status"], resp["model"]) == ("response", "completed",
                                                               "llama3.2:1b")
    assert resp["output"][0]["content"][0]["type"] == "output_text"
    assert srv.requests_to("/v1/responses")[-1].json == body
    r = httpx.post(srv.url + "/v1/responses", json={**body, "stream": True})
    assert r.headers["content-type"] == "text/event-stream"
    events = re.findall(r"^event: (.+)$", r.text, re.M)
    assert events[0] == "response.created" and events[-1] == "response.completed"
    r = httpx.post(srv.url + "/v1/chat/completions",
                   json={"model": "llama3.2:1b", "messages": [{"role": "user", "content": "x"}]})
    assert r.json()["choices"][0]["message"]["role"] == "assistant"
    r = httpx.post(srv.url + "/v1/chat/completions", json={
        "model": "llama3.2:1b", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert r.text.rstrip().endswith("data: [DONE]")
    r = httpx.post(srv.url + "/v1/chat/completions", json={"model": "nope", "messages": []})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


# ---- registry ---------------------------------------------------------------------------------


def test_registry_manifest_and_blob_ranges(ollama: OllamaTestServer) -> None:
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    r = httpx.get(ollama.url + "/v2/library/llama3.1/manifests/8b", headers=accept)
    m = r.json()
    assert r.headers["content-type"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert r.headers["docker-content-digest"] == "sha256:" + hashlib.sha256(r.content).hexdigest()
    assert (m["schemaVersion"], m["config"]["mediaType"]) == (
        2, "application/vnd.docker.container.image.v1+json")
    assert [x["mediaType"].rsplit(".", 1)[1] for x in m["layers"]] == [
        "model", "template", "license", "params"]
    assert 4.85e9 < m["layers"][0]["size"] < 4.95e9  # llama3.1:8b Q4_K_M is 4.9 GB
    head = httpx.head(ollama.url + "/v2/library/llama3.1/manifests/8b")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(r.content))
    by_digest = httpx.get(ollama.url + "/v2/library/llama3.1/manifests/" +
                          r.headers["docker-content-digest"])
    assert by_digest.content == r.content
    r = httpx.get(ollama.url + "/v2/library/llama3.1/manifests/9000b")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    base = ollama.url + "/v2/library/llama3.1/blobs/"
    config = httpx.get(base + m["config"]["digest"])
    assert config.status_code == 200
    assert hashlib.sha256(config.content).hexdigest() == m["config"]["digest"][7:]
    cfg = config.json()
    assert (cfg["model_format"], cfg["model_family"], cfg["model_type"], cfg["file_type"]) == (
        "gguf", "llama", "8.0B", "Q4_K_M")
    assert cfg["rootfs"]["diff_ids"] == [x["digest"] for x in m["layers"]]
    params = httpx.get(base + m["layers"][3]["digest"]).json()
    assert params == {"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
    weights, size = m["layers"][0]["digest"], m["layers"][0]["size"]
    r = httpx.get(base + weights, headers={"Range": "bytes=0-1048575"})
    assert r.status_code == 206 and len(r.content) == MIB and r.content[:4] == b"GGUF"
    assert r.headers["content-range"] == f"bytes 0-1048575/{size}"
    assert ollama.requests[-1].bytes_sent == MIB
    r = httpx.get(base + weights, headers={"Range": "bytes=-100"})
    assert r.status_code == 206 and r.content == bytes(100)
    r = httpx.get(base + weights, headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    assert httpx.get(base + "sha256:" + "0" * 64).json()["errors"][0]["code"] == "BLOB_UNKNOWN"


@pytest.mark.parametrize("name, arch, blocks, kv_heads", [
    ("llama3.1:8b", "llama", 32, 8),
    ("qwen2.5:14b", "qwen2", 48, 8),
    ("nomic-embed-text", "nomic-bert", 12, None),
])
def test_gguf_header_is_real(ollama: OllamaTestServer, name: str, arch: str, blocks: int,
                             kv_heads: int | None) -> None:
    manifest = ollama.manifest(name)
    layer = manifest["layers"][0]
    repo = CATALOG[f"registry.ollama.ai/library/{name}" + ("" if ":" in name else ":latest")]
    url = f"{ollama.url}/v2/library/{repo.model_name.model}/blobs/{layer['digest']}"
    client = httpx.Client(timeout=60)  # the first header build is slow on a busy machine

    def fetch(offset: int, length: int) -> bytes:
        r = client.get(url, headers={"Range": f"bytes={offset}-{offset + length - 1}"})
        assert r.status_code == 206
        return r.content

    before = ollama.blob_bytes_served
    kv, tensors, header, data = read_gguf(fetch)
    assert header + data == layer["size"]  # tensor infos add up to the declared blob size
    assert 0.5 * MIB < header < 10 * MIB and ollama.blob_bytes_served - before < header + 2 * MIB
    assert kv["general.architecture"] == arch and kv[f"{arch}.block_count"] == blocks
    if kv_heads:
        assert kv[f"{arch}.attention.head_count_kv"] == kv_heads
    assert len(kv["tokenizer.ggml.tokens"]) == len(kv["tokenizer.ggml.token_type"])
    names = {t[0] for t in tensors}
    assert {f"blk.{blocks - 1}.ffn_down.weight", "token_embd.weight"} <= names
    params = sum(math.prod(t[1]) for t in tensors)
    expected = {"llama3.1:8b": 8030261312, "qwen2.5:14b": 14770033664,
                "nomic-embed-text": 136727040}  # real counts (nomic: the real one is ~137M)
    assert params == expected[name]


def test_tiny_blob_hashes_honestly(ollama: OllamaTestServer) -> None:
    layer = ollama.manifest("tiny")["layers"][0]
    r = httpx.get(f"{ollama.url}/v2/library/tiny/blobs/{layer['digest']}")
    assert len(r.content) == layer["size"]
    assert "sha256:" + hashlib.sha256(r.content).hexdigest() == layer["digest"]


def test_registry_auth(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(registry_auth=True)
    url = srv.url + "/v2/library/llama3.2/manifests/1b"
    r = httpx.get(url)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == (
        f'Bearer realm="{srv.url}/token",service="test-registry",'
        'scope="repository:library/llama3.2:pull"')
    token = httpx.get(srv.url + "/token", params={"service": "test-registry",
                                                  "scope": "repository:library/llama3.2:pull"})
    body = token.json()
    assert body["token"] == body["access_token"]
    assert httpx.get(url, headers={"Authorization": f"Bearer {body['token']}"}).status_code == 200
    other = srv.url + "/v2/library/llama3.1/manifests/8b"
    assert httpx.get(other, headers={"Authorization": f"Bearer {body['token']}"}
                     ).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer forged"}).status_code == 401


def test_blob_redirect_to_cdn(make_ollama: Callable[..., OllamaTestServer]) -> None:
    srv = make_ollama(blob_redirect=True)
    digest = srv.manifest("llama3.2:1b")["layers"][0]["digest"]
    url = f"{srv.url}/v2/library/llama3.2/blobs/{digest}"
    r = httpx.get(url, headers={"Range": "bytes=0-3"})
    assert r.status_code == 307 and "/cdn/blobs/sha256/" in r.headers["location"]
    r = httpx.get(url, headers={"Range": "bytes=0-3"}, follow_redirects=True)
    assert (r.status_code, r.content) == (206, b"GGUF")


def test_blob_drop_fault(ollama: OllamaTestServer) -> None:
    digest = ollama.manifest("tiny")["layers"][0]["digest"]
    ollama.add_fault("drop", endpoint="/v2/*/blobs/*", after_bytes=1000)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{ollama.url}/v2/library/tiny/blobs/{digest}")
    assert ollama.requests[-1].bytes_sent == 1000


# ---- catalog, not-Ollama, IPv6, CLI ------------------------------------------------------------


def test_hundred_installed_models(make_ollama: Callable[..., OllamaTestServer]) -> None:
    models = [make_catalog_model(f"bench/m{i}:latest", params="1B", quant="Q4_0")
              for i in range(100)]
    assert isinstance(models[0], CatalogModel) and models[0].block_count == 16
    srv = make_ollama(catalog={**CATALOG, **{m.name: m for m in models}},
                      installed=[m.name for m in models])
    tags = httpx.get(srv.url + "/api/tags", timeout=30).json()["models"]
    assert len(tags) == 100 and tags[0]["name"] == "bench/m99:latest"
    assert tags[0]["details"]["quantization_level"] == "Q4_0"
    qwen = make_catalog_model("q:7b", arch="qwen2", params=7e9)
    assert (qwen.block_count, qwen.head_count_kv, qwen.tokenizer) == (28, 4, "qwen2")


def test_not_ollama(make_not_ollama: Callable[..., NotOllamaServer],
                    not_ollama: NotOllamaServer) -> None:
    r = httpx.get(not_ollama.url + "/")
    assert r.status_code == 200 and "<title>Welcome to nginx!</title>" in r.text
    assert r.headers["server"] == "nginx/1.24.0"
    r = httpx.get(not_ollama.url + "/api/version")
    assert r.status_code == 404 and "nginx" in r.text and r.headers["content-type"] == "text/html"
    raw = make_not_ollama("raw")
    with pytest.raises(httpx.HTTPError):
        httpx.get(raw.url + "/api/version")
    host, port = raw.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as s:
        assert s.recv(100).startswith(b"SSH-2.0-OpenSSH_9.2")
    silent = make_not_ollama("silent")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(silent.url + "/", timeout=httpx.Timeout(2, read=0.2))


def test_ipv6_loopback(make_ollama: Callable[..., OllamaTestServer]) -> None:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    srv = make_ollama(host="::1")
    assert srv.url.startswith("http://[::1]:")
    assert httpx.get(srv.url + "/").text == "Ollama is running"


def test_cli_serves_until_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.double", "--port", "0", "--installed", "tiny",
         "--version", "0.12.9"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert httpx.get(url + "/api/version").json() == {"version": "0.12.9"}
        assert httpx.get(url + "/api/tags").json()["models"][0]["name"] == "tiny:latest"
    finally:
        proc.terminate()
        proc.wait(5)
