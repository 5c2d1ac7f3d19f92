"""`ollama-provision hardware`: needs from the server and the registry, verdicts, output.

Every model comes from the test double over real HTTP: `/api/show` for installed ones,
the double's registry (manifest + GGUF header by Range) for the others. Machines are
described with `--assume`, so the expected numbers are the same on any test machine.
Expected memory figures are computed by hand from the published architecture.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from provision.cli import main
from provision.hardware import fit_model, from_registry, model_needs, parse_assume
from provision.models import RegistryClient
from provision.names import parse_name
from provision.server import OllamaServer, parse_host
from tests.double import OllamaTestServer, free_port, make_catalog_model, tensor_nbytes

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
BUDGET_BYTES, BUDGET_REQUESTS = 4 * MIB, 4

# Llama-3.1-8B: 32 blocks, 8 KV heads of dimension 128, f16 (2 bytes), K and V:
KV_PER_TOKEN = 2 * 32 * 8 * 128 * 2
assert KV_PER_TOKEN == 128 * KIB
# Ollama's graph formula for llama (batch 512, embedding 4096, 32 heads, vocab 128256):
GRAPH_FULL_4K = 4 * 512 * (1 + 4 * 4096 + 4096 * (1 + 32))  # 310,380,544
GRAPH_PARTIAL_128K = 4 * 512 * 4096 + (
    4 * 512 * (1 + 4096 + 131072) + 4096 * 4096 * 9 // 16 + 4 * 131072 * (512 * 32 + 128 * 8))


@pytest.fixture
def registry_env(ollama: OllamaTestServer, monkeypatch: pytest.MonkeyPatch) -> OllamaTestServer:
    """The tool's registry is the double's; its server is the double too."""
    monkeypatch.setenv("OLLAMA_PROVISION_REGISTRY", ollama.url)
    monkeypatch.setenv("OLLAMA_HOST", ollama.url)
    for var in ("OLLAMA_CONTEXT_LENGTH", "OLLAMA_NUM_PARALLEL", "OLLAMA_KV_CACHE_TYPE",
                "OLLAMA_FLASH_ATTENTION", "OLLAMA_GPU_OVERHEAD", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    return ollama


def hardware(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    code = main(["hardware", "--json", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def one(doc: dict) -> dict:
    (model,) = doc["models"]
    return model


def needs_of(srv: OllamaTestServer, name: str, **kwargs):
    with RegistryClient(environ={"OLLAMA_PROVISION_REGISTRY": srv.url}) as registry:
        return from_registry(parse_name(name), registry, **kwargs)


def catalog_blocks(srv: OllamaTestServer, name: str) -> list[int]:
    model = srv.catalog_model(name)
    sizes = [0] * model.block_count
    for tensor, shape, kind in model.tensors:
        if tensor.startswith("blk."):
            sizes[int(tensor.split(".")[1])] += tensor_nbytes(shape, kind)
    return sizes


def catalog_bytes(srv: OllamaTestServer, name: str, prefix: str) -> int:
    return sum(tensor_nbytes(s, k) for t, s, k in srv.catalog_model(name).tensors
               if t.startswith(prefix))


# -- hand-computed memory for Llama-3.1-8B Q4_K_M -----------------------------------------


def test_llama31_8b_kv_cache_is_128_kib_per_token(registry_env: OllamaTestServer) -> None:
    needs = needs_of(registry_env, "llama3.1:8b")
    gpu24 = parse_assume(["ram=64G,gpu=24G"]).machine
    at_4k = fit_model(needs, gpu24, 4096, "0.13.5")
    assert at_4k.kv_cache == 512 * MIB
    assert (at_4k.verdict, at_4k.graph) == ("gpu", GRAPH_FULL_4K)
    at_128k = fit_model(needs, gpu24, 131072, "0.13.5")
    assert at_128k.kv_cache == 16 * GIB
    # 16 GiB of cache alone nearly fills the card: part of the model goes to the CPU.
    assert at_128k.verdict == "partial" and at_128k.graph == GRAPH_PARTIAL_128K
    assert 0 < at_128k.layers_on_gpu < at_128k.layers_total == 33


def test_llama31_8b_on_a_24g_card_memory_adds_up_exactly(
        registry_env: OllamaTestServer, capsys) -> None:
    """Installed: /api/show lists every tensor, so each layer's size is exact."""
    registry_env.install("llama3.1:8b")
    code, doc, _ = hardware(capsys, "--assume", "ram=64G,gpu=24G:RTX 4090", "--host",
                            registry_env.url, "llama3.1:8b", "--num-ctx", "4096")
    m = one(doc)
    assert (code, m["source"], m["verdict"], m["exact_layers"]) == (0, "installed", "gpu", True)
    blocks = catalog_blocks(registry_env, "llama3.1:8b")
    kv_layer = 4096 * KV_PER_TOKEN // 32
    output = catalog_bytes(registry_env, "llama3.1:8b", "output")  # output + output_norm
    # Ollama's placement: per-GPU minimum (457 MiB), one layer held back as a buffer,
    # every layer with its share of the cache, the output layer, the full-offload graph.
    expected_vram = (457 * MIB + blocks[0] + kv_layer + sum(blocks) + 32 * kv_layer + output
                     + GRAPH_FULL_4K)
    assert m["memory"]["vram"] == expected_vram
    assert m["memory"]["kv_cache"] == 512 * MIB and m["memory"]["graph"] == GRAPH_FULL_4K
    assert m["layers"] == {"on_gpu": 33, "total": 33}
    assert m["placements"] == [{"gpu": 0, "name": "RTX 4090", "layers": 33,
                                "vram": expected_vram, "free": 24 * GIB}]
    assert m["headroom"]["vram"] == 24 * GIB - expected_vram
    # The token embeddings stay in system RAM.
    assert m["memory"]["ram"] == catalog_bytes(registry_env, "llama3.1:8b", "token_embd") + \
        catalog_bytes(registry_env, "llama3.1:8b", "rope_freqs")
    low, high = m["tokens_per_second"]
    assert 60 < low < high < 250  # 1008 GB/s over ~4.6 GiB of weights


# -- reading the registry within budget -----------------------------------------------------

REGISTRY_MODELS = ["llama3.2:1b", "llama3.2:3b", "llama3.2", "llama3.1:8b", "llama3.1",
                   "llama3.1:70b", "qwen2.5:14b", "qwen2.5:0.5b", "nomic-embed-text", "tiny"]


@pytest.mark.parametrize("name", REGISTRY_MODELS)
def test_registry_estimate_stays_within_4_mib_and_4_requests(
        registry_env: OllamaTestServer, name: str) -> None:
    before = len(registry_env.requests)
    needs = needs_of(registry_env, name)
    served = [r for r in registry_env.requests[before:] if r.path.startswith("/v2/")]
    assert len(served) == needs.requests <= BUDGET_REQUESTS
    assert sum(r.bytes_sent for r in served) == needs.bytes_read <= BUDGET_BYTES
    truth = registry_env.catalog_model(name).artifacts()
    data = truth.weights.size - truth.weights.header_size
    assert needs.download == truth.size
    # Weights: exact when the whole header was read, else the blob size less the header.
    assert abs(needs.weights - data) <= (0 if needs.exact_layers else data // 500)
    assert sum(needs.layers) + needs.output + needs.cpu_only == needs.weights


def test_small_headers_are_read_whole_for_exact_layers(registry_env: OllamaTestServer) -> None:
    needs = needs_of(registry_env, "nomic-embed-text")
    assert needs.exact_layers and needs.header_size == \
        registry_env.catalog_model("nomic-embed-text").artifacts().weights.header_size
    assert list(needs.layers) == catalog_blocks(registry_env, "nomic-embed-text")
    assert needs.arch.name == "nomic-bert" and needs.arch.embedding_model
    assert needs.num_ctx_param == 8192  # from the params blob


def test_large_headers_stop_at_the_architecture(registry_env: OllamaTestServer) -> None:
    """A Llama-3 header is ~7.5 MiB of tokenizer: read 256 KiB, derive the layer split."""
    needs = needs_of(registry_env, "llama3.1:8b")
    assert not needs.exact_layers and needs.bytes_read < 300 * KIB
    assert needs.arch.block_count == 32 and needs.arch.vocab_size == 128256
    assert needs.arch.head_count_kv == (8,) * 32 and needs.arch.key_length == 128
    assert needs.quantization == "Q4_K_M" and needs.parameter_size == "8.0B"
    true_blocks = catalog_blocks(registry_env, "llama3.1:8b")
    average = sum(true_blocks) / len(true_blocks)
    assert abs(needs.layers[0] - average) / average < 0.02
    assert "derived" in needs.detail


def test_full_header_gives_exact_layers_for_any_size(registry_env: OllamaTestServer) -> None:
    needs = needs_of(registry_env, "llama3.1:8b", header_budget=1 << 30)
    assert needs.exact_layers and list(needs.layers) == catalog_blocks(registry_env,
                                                                       "llama3.1:8b")
    assert needs.parameter_count == registry_env.catalog_model("llama3.1:8b").parameter_count


def test_registry_with_bearer_auth(make_ollama, monkeypatch) -> None:
    srv = make_ollama(registry_auth=True)
    needs = needs_of(srv, "llama3.2:1b")
    blob_reads = [r for r in srv.requests if "/blobs/" in r.path and r.status == 206]
    assert needs.arch.block_count == 16 and sum(r.bytes_sent for r in blob_reads) <= BUDGET_BYTES


def test_installed_models_come_from_api_show(registry_env: OllamaTestServer, capsys) -> None:
    registry_env.install("qwen2.5:14b")
    before = len(registry_env.requests)
    code, doc, _ = hardware(capsys, "--assume", "ram=32G", "--host", registry_env.url,
                            "qwen2.5:14b")
    m = one(doc)
    assert (m["source"], m["installed"], m["download"], m["exact_layers"]) == (
        "installed", True, 0, True)
    assert not [r for r in registry_env.requests[before:] if r.path.startswith("/v2/")]
    assert m["architecture"] == "qwen2" and m["parameter_size"] == "14.8B"


# -- the context Ollama will use ---------------------------------------------------------


@pytest.mark.parametrize("version, gpu, expected, source", [
    ("0.6.6", "24G", 2048, "default (Ollama < 0.6.7)"),
    ("0.13.5", "24G", 4096, "default (Ollama 0.6.7-0.15.4)"),
    ("0.15.5", "8G", 4096, "default for 8 GiB VRAM (Ollama >= 0.15.5)"),
    ("0.15.5", "24G", 32768, "default for 24 GiB VRAM (Ollama >= 0.15.5)"),
    ("0.15.5", "2x24G", 131072, "default for 48 GiB VRAM (Ollama >= 0.15.5)"),  # 262144, capped
])
def test_default_context_follows_the_server_version(
        registry_env: OllamaTestServer, capsys, version: str, gpu: str, expected: int,
        source: str) -> None:
    registry_env.set_version(version)
    _, doc, _ = hardware(capsys, "--assume", f"ram=64G,gpu={gpu}", "--host", registry_env.url,
                         "llama3.1:8b")
    m = one(doc)
    assert doc["server"]["version"] == version
    assert (m["context"]["num_ctx"], m["context"]["source"]) == (expected, source)
    assert m["memory"]["kv_cache"] == expected * KV_PER_TOKEN


def test_context_precedence(registry_env: OllamaTestServer, capsys, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_CONTEXT_LENGTH", "8192")
    _, doc, _ = hardware(capsys, "--assume", "ram=64G,ollama=0.13.5", "llama3.1:8b",
                         "nomic-embed-text")
    llama, nomic = doc["models"]
    assert (llama["context"]["num_ctx"], llama["context"]["source"]) == (
        8192, "OLLAMA_CONTEXT_LENGTH")
    # The model's own PARAMETER num_ctx (8192) wins, then the trained 2048 caps it.
    assert nomic["context"]["source"] == "the model's PARAMETER num_ctx"
    assert nomic["context"]["num_ctx"] == 2048 and nomic["context"]["trained"] == 2048
    _, doc, _ = hardware(capsys, "--assume", "ram=64G", "llama3.1:8b", "--num-ctx", "1000")
    assert one(doc)["context"]["num_ctx"] == 1000
    assert one(doc)["memory"]["kv_cache"] == 1000 * KV_PER_TOKEN


def test_parallel_requests_multiply_the_cache(registry_env, capsys, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "4")
    _, doc, _ = hardware(capsys, "--assume", "ram=64G", "llama3.1:8b", "--num-ctx", "4096")
    assert one(doc)["context"]["parallel"] == 4
    assert one(doc)["memory"]["kv_cache"] == 2 * GIB


def test_quantized_kv_cache_needs_flash_attention(registry_env, capsys, monkeypatch) -> None:
    """Before 0.30 flash attention is off unless OLLAMA_FLASH_ATTENTION=1; from 0.30 it is
    `auto` (on), so a quantized cache applies without it."""
    monkeypatch.setenv("OLLAMA_KV_CACHE_TYPE", "q8_0")
    old = "ram=64G,ollama=0.13.5"
    _, doc, _ = hardware(capsys, "--assume", old, "llama3.1:8b", "--num-ctx", "4096")
    m = one(doc)
    assert m["context"]["kv_cache_type"] == "f16" and m["memory"]["kv_cache"] == 512 * MIB
    assert any("needs flash attention" in n for n in m["notes"])
    # q8_0 stores 32 values in 34 bytes: 512 MiB x 34/64.
    _, doc, _ = hardware(capsys, "--assume", "ram=64G,ollama=0.32.15", "llama3.1:8b",
                         "--num-ctx", "4096")
    assert one(doc)["memory"]["kv_cache"] == 512 * MIB * 34 // 64
    monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", "1")
    _, doc, _ = hardware(capsys, "--assume", old, "llama3.1:8b", "--num-ctx", "4096")
    assert one(doc)["memory"]["kv_cache"] == 512 * MIB * 34 // 64
    monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", "0")
    _, doc, _ = hardware(capsys, "--assume", "ram=64G,ollama=0.32.15", "llama3.1:8b",
                         "--num-ctx", "4096")
    assert one(doc)["memory"]["kv_cache"] == 512 * MIB


# -- verdicts -------------------------------------------------------------------------------


def test_verdict_cpu_without_gpu(registry_env, capsys) -> None:
    code, doc, _ = hardware(capsys, "--assume", "ram=16G,disk=100G", "llama3.1:8b")
    m = one(doc)
    assert (code, m["verdict"], m["where"], m["layers"]["on_gpu"]) == (0, "cpu", "CPU", 0)
    assert m["headroom"]["disk"] == 100 * GIB - m["download"]
    assert m["memory"]["ram"] == m["memory"]["total"] and m["memory"]["vram"] == 0


def test_verdict_partial_on_a_small_card(registry_env, capsys) -> None:
    code, doc, _ = hardware(capsys, "--assume", "ram=32G,gpu=4G", "llama3.1:8b",
                            "--num-ctx", "4096")
    m = one(doc)
    on_gpu = m["layers"]["on_gpu"]
    assert (code, m["verdict"]) == (0, "partial") and 0 < on_gpu < 33
    assert m["where"] == f"{on_gpu}/33 layers on GPU"
    assert m["placements"][0]["vram"] <= 4 * GIB and m["headroom"]["vram"] >= 0
    # The weights alone (4.6 GiB) exceed the card: no smaller context puts it all there.
    assert m["would_fit"] is None


def test_require_gpu_fails_a_partial_fit(registry_env, capsys) -> None:
    code, doc, _ = hardware(capsys, "--assume", "ram=32G,gpu=4G", "llama3.1:8b",
                            "--require", "gpu")
    assert code == 1 and not doc["ready"] and one(doc)["meets_requirement"] is False


def test_largest_context_that_fits_on_the_gpu(registry_env, capsys) -> None:
    args = ["--assume", "ram=64G,gpu=20G", "llama3.1:8b"]
    _, doc, _ = hardware(capsys, *args, "--num-ctx", "131072")
    m = one(doc)
    assert m["verdict"] == "partial"
    ctx = m["would_fit"]["num_ctx"]
    assert ctx % 256 == 0 and 32768 < ctx < 131072
    assert one(hardware(capsys, *args, "--num-ctx", str(ctx))[1])["verdict"] == "gpu"
    assert one(hardware(capsys, *args, "--num-ctx", str(ctx + 256))[1])["verdict"] == "partial"


def test_no_fit_names_ram_and_a_smaller_size_that_fits(registry_env, capsys) -> None:
    code, doc, err = hardware(capsys, "--assume", "ram=16G,gpu=8G,disk=500G", "llama3.1:70b")
    m = one(doc)
    assert (code, m["verdict"], m["where"]) == (1, "no-fit", "-")
    kinds = {r["kind"]: r for r in m["reasons"]}
    assert set(kinds) == {"vram", "ram"}
    assert kinds["ram"]["have"] == 16 * GIB and kinds["ram"]["need"] > 16 * GIB
    assert m["alternatives"][0]["name"] == "llama3.1:8b"
    assert m["alternatives"][0]["kind"] == "size" and m["alternatives"][0]["verdict"] == "gpu"


def test_no_fit_suggests_a_smaller_quantization(registry_env, capsys) -> None:
    registry_env.add_model(make_catalog_model("llama3.1:70b-instruct-q2_K", params="70B",
                                              quant="Q2_K"))
    _, doc, _ = hardware(capsys, "--assume", "ram=32G,disk=500G", "llama3.1:70b")
    alternatives = {a["kind"]: a for a in one(doc)["alternatives"]}
    quant = alternatives["quantization"]
    assert quant["name"] == "llama3.1:70b-instruct-q2_K" and quant["verdict"] == "cpu"
    truth = registry_env.catalog_model("llama3.1:70b-instruct-q2_K").artifacts()
    assert quant["download"] == truth.size


def test_no_fit_on_disk(registry_env, capsys) -> None:
    code, doc, _ = hardware(capsys, "--assume", "ram=64G,disk=2G", "llama3.1:8b")
    m = one(doc)
    assert (code, m["verdict"]) == (1, "no-fit")
    (reason,) = m["reasons"]
    assert (reason["kind"], reason["have"], reason["need"]) == ("disk", 2 * GIB, m["download"])


def test_two_cards_share_a_large_model(registry_env, capsys) -> None:
    code, doc, _ = hardware(capsys, "--assume", "ram=64G,gpu=2x24G", "llama3.1:70b",
                            "--num-ctx", "4096")
    m = one(doc)
    assert (code, m["verdict"]) == (0, "gpu")
    assert [p["gpu"] for p in m["placements"]] == [0, 1]
    assert sum(p["layers"] for p in m["placements"]) == 81


def test_apple_unified_memory(registry_env, capsys) -> None:
    _, doc, _ = hardware(capsys, "--assume", "ram=16G,gpu=apple:M2", "llama3.1:8b",
                         "--num-ctx", "4096")
    m = one(doc)
    gpu = doc["machine"]["gpus"][0]
    assert doc["machine"]["os"] == "darwin" and gpu["unified"] and gpu["total"] == 16 * GIB * 2 // 3
    assert m["verdict"] == "gpu"
    low, high = m["tokens_per_second"]
    assert 8 < low < high < 25  # 100 GB/s over ~4.6 GiB


def test_loaded_models_are_mentioned(registry_env, capsys) -> None:
    registry_env.install("llama3.2:1b")
    registry_env.load("llama3.2:1b")
    _, doc, _ = hardware(capsys, "--assume", "ram=32G", "--host", registry_env.url)
    assert any("models loaded now hold" in w for w in doc["warnings"])


# -- when the registry cannot tell ---------------------------------------------------------


def test_unknown_model_is_exit_1_with_the_reason(registry_env, capsys) -> None:
    code, doc, err = hardware(capsys, "--assume", "ram=64G", "llama3.1:9000b", "llama3.2:1b")
    unknown, known = doc["models"]
    assert code == 1 and unknown["verdict"] == "unknown" and known["verdict"] == "cpu"
    assert "is not in the registry" in unknown["error"]
    assert "error: llama3.1:9000b is not in the registry" in err


def test_unreachable_registry_falls_back_to_a_rough_estimate(capsys, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_PROVISION_REGISTRY", f"http://127.0.0.1:{free_port()}")
    code, doc, err = hardware(capsys, "--assume", "ram=16G", "llama3.1:8b", "mystery")
    rough, nothing = doc["models"]
    assert rough["source"] == "rough" and rough["verdict"] == "cpu"
    assert "rough (registry unreachable): 8.0B parameters at Q4_K_M" in rough["detail"]
    assert 4.5e9 < rough["weights"] < 5.2e9 and rough["memory"]["kv_cache"] == 512 * MIB
    assert (code, nothing["verdict"]) == (1, "unknown")
    assert "the tag names no size" in nothing["error"]


def test_offline_asks_no_registry(registry_env, capsys) -> None:
    before = len(registry_env.requests)
    _, doc, _ = hardware(capsys, "--offline", "--assume", "ram=16G", "qwen2.5:0.5b",
                         "llama3.1:70b-instruct-q3_K_M")
    small, big = doc["models"]
    assert not [r for r in registry_env.requests[before:] if r.path.startswith("/v2/")]
    assert small["source"] == "rough" and small["quantization"] == "Q4_K_M"
    assert big["quantization"] == "Q3_K_M" and big["verdict"] == "no-fit"
    assert big["alternatives"] == []  # offline: nothing looked up


# -- input errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec, message", [
    ("ram=lots", "--assume: 'lots' is not a RAM like 16G, 512M or 1.5T"),
    ("ram=16G,gpu=fast", "--assume: gpu='fast' has no memory size"),
    ("ram=16G,cpuz=4", "--assume: unknown key 'cpuz'"),
    ("gpu=24G", "--assume needs ram=SIZE (the other machine's RAM)"),
    ("ram=16G,ram-free=32G", "--assume: ram-free is larger than ram"),
    ("no-such-profile.toml", "--assume: cannot read profile no-such-profile.toml"),
])
def test_bad_assume_is_one_line_and_exit_2(capsys, spec: str, message: str) -> None:
    code = main(["hardware", "--assume", spec, "tiny"])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines()[0].startswith(f"error: {message}")
    assert "Traceback" not in err


def test_bad_profile_file_is_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("ram = [unclosed\n")
    assert main(["hardware", "--assume", str(bad)]) == 2
    assert re.match(r"error: --assume: .*bad.toml is not valid TOML or JSON",
                    capsys.readouterr().err)


@pytest.mark.parametrize("args", [["--num-ctx", "0"], ["--num-ctx", "lots"],
                                  ["--require", "tpu"]])
def test_bad_flags_exit_2(capsys, args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["hardware", *args])
    assert exc.value.code == 2


def test_invalid_model_name_exit_2(capsys) -> None:
    assert main(["hardware", "--assume", "ram=8G", "bad name!"]) == 2
    assert capsys.readouterr().err.startswith("error: invalid model name 'bad name!'")


# -- profiles and the table ---------------------------------------------------------------


def test_toml_profile_with_gpus(registry_env, tmp_path: Path, capsys) -> None:
    profile = tmp_path / "runner.toml"
    profile.write_text('os = "linux"\nram = "32G"\nram_free = "28G"\ndisk = "200G"\n'
                       'ollama = "0.15.5"\n\n[[gpu]]\nvendor = "nvidia"\nname = "Tesla T4"\n'
                       'memory = "15G"\nfree = "14.5G"\ncompute = "7.5"\ncount = 2\n')
    code, doc, _ = hardware(capsys, "--assume", str(profile), "llama3.1:8b")
    machine = doc["machine"]
    assert [(g["name"], g["total"], g["free"], g["compute"], g["bandwidth_gbs"])
            for g in machine["gpus"]] == [("Tesla T4", 15 * GIB, int(14.5 * GIB), "7.5", 320)] * 2
    assert machine["memory"]["available"] == 28 * GIB and machine["disk"]["free"] == 200 * GIB
    m = one(doc)
    # 30 GiB of VRAM in all: Ollama >= 0.15.5 picks a 32k context.
    assert (code, m["context"]["num_ctx"], doc["server"]["version"]) == (0, 32768, "0.15.5")


def test_json_profile(registry_env, tmp_path: Path, capsys) -> None:
    profile = tmp_path / "box.json"
    profile.write_text(json.dumps({"ram": "8G", "gpu": [{"vendor": "amd", "memory": "16G",
                                                          "name": "Radeon RX 7800 XT"}]}))
    _, doc, _ = hardware(capsys, "--assume", str(profile), "llama3.2:1b")
    (gpu,) = doc["machine"]["gpus"]
    assert (gpu["vendor"], gpu["library"], gpu["bandwidth_gbs"]) == ("amd", "rocm", 624)
    assert one(doc)["verdict"] == "gpu"


def test_table_output(registry_env, capsys) -> None:
    code = main(["hardware", "--assume", "ram=16G,gpu=8G:RTX 4060,disk=100G", "llama3.1:8b",
                 "llama3.1:70b"])
    out = capsys.readouterr().out
    assert code == 1
    assert "machine: linux x86_64 - assumed" in out
    assert "  gpu0: RTX 4060 (8.0 GiB, 8.0 GiB free)" in out
    header = next(line for line in out.splitlines() if line.startswith("model"))
    assert header.split() == ["model", "source", "size", "context", "memory", "where",
                              "verdict", "tokens/s"]
    row = next(line for line in out.splitlines() if line.startswith("llama3.1:8b "))
    assert row.split()[:4] == ["llama3.1:8b", "registry", "4.9", "GB"]
    assert row.split()[-2] == "gpu"
    big = next(line for line in out.splitlines() if line.startswith("llama3.1:70b "))
    assert " no-fit " in big
    assert "    would fit: llama3.1:8b (size; gpu," in out


def test_model_needs_prefers_the_installed_model(registry_env) -> None:
    registry_env.install("tiny")
    with OllamaServer(parse_host(registry_env.url, source="flag")) as server:
        inventory = server.tags()
        needs = model_needs(parse_name("tiny"), server, inventory=inventory)
        registry = model_needs(parse_name("llama3.2:1b"), server, inventory=inventory)
    assert needs.source == "installed" and needs.exact_layers and needs.num_ctx_param == 256
    assert registry.source == "registry"
