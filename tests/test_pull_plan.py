"""`pull --dry-run` and the up-front disk check: sizes from the registry, before any byte.

The test double is also the registry (`OLLAMA_PROVISION_REGISTRY`); the local server's
models directory is `OLLAMA_MODELS` in a temporary directory.
"""

from __future__ import annotations

import json

import pytest

from provision.cli import main
from tests.double import OllamaTestServer, make_catalog_model

WEIGHTS = "application/vnd.ollama.image.model"


pytestmark = pytest.mark.usefixtures("pull_env")


@pytest.fixture
def srv(make_ollama, monkeypatch: pytest.MonkeyPatch) -> OllamaTestServer:
    server = make_ollama(installed=["qwen2.5:0.5b"])
    monkeypatch.setenv("OLLAMA_PROVISION_REGISTRY", server.url)
    return server


def run(capsys, srv: OllamaTestServer, *args: str) -> tuple[int, str, str]:
    code = main(["pull", "--host", srv.url, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def plan(capsys, srv: OllamaTestServer, *args: str) -> tuple[int, dict]:
    code, out, _ = run(capsys, srv, "--dry-run", "--json", *args)
    return code, json.loads(out)


def size_of(srv: OllamaTestServer, name: str) -> int:
    manifest = srv.manifest(name)
    return manifest["config"]["size"] + sum(x["size"] for x in manifest["layers"])


def unique_size(srv: OllamaTestServer, *names: str) -> int:
    blobs = {}
    for name in names:
        manifest = srv.manifest(name)
        for blob in [manifest["config"], *manifest["layers"]]:
            blobs[blob["digest"]] = blob["size"]
    return sum(blobs.values())


def huge_model(srv: OllamaTestServer) -> str:
    """A model far bigger than any test machine's disk (about 150 TB)."""
    srv.add_model(make_catalog_model(
        "huge:test", params="70B", embedding_length=2**21, feed_forward_length=2**23,
        head_count=16384, head_count_kv=8, block_count=4))
    return "huge:test"


def test_dry_run_lists_sizes_details_and_free_disk(capsys, srv, tmp_path) -> None:
    code, doc = plan(capsys, srv, "llama3.2:1b", "llama3.1:8b", "qwen2.5:0.5b")
    assert code == 0
    assert doc["schema"] == "ollama-provision.pull-plan/1"
    models = {m["name"]: m for m in doc["models"]}
    small = models["llama3.2:1b"]
    assert small["will_pull"] is True and small["present"] is False
    assert small["size"] == small["download"] == size_of(srv, "llama3.2:1b")
    assert small["quantization"] == "Q8_0"
    assert small["parameter_size"] == srv.catalog_model("llama3.2:1b").param_size
    assert models["llama3.1:8b"]["quantization"] == "Q4_K_M"
    assert models["qwen2.5:0.5b"]["will_pull"] is False  # present: nothing to download
    # Both share small blobs (the same template, params...): those download once.
    assert doc["download"] == unique_size(srv, "llama3.2:1b", "llama3.1:8b")
    assert doc["download"] < size_of(srv, "llama3.2:1b") + size_of(srv, "llama3.1:8b")
    assert doc["disk"]["path"] == str(tmp_path / "models")
    assert doc["disk"]["source"] == "OLLAMA_MODELS"
    assert doc["disk"]["free"] > 0 and doc["disk"]["fits"] is True
    assert srv.requests_to("/api/pull") == []  # nothing was downloaded


def test_dry_run_text(capsys, srv, tmp_path) -> None:
    code, out, _ = run(capsys, srv, "--dry-run", "llama3.2:1b", "qwen2.5:0.5b")
    assert code == 0
    assert "dry run: 1 of 2 models would be pulled (nothing downloaded)" in out
    blobs = len(srv.manifest("llama3.2:1b")["layers"]) + 1
    params = srv.catalog_model("llama3.2:1b").param_size
    assert f"llama3.2:1b      1.3 GB  {params} Q8_0  ({blobs} blobs)" in out
    assert "qwen2.5:0.5b  present, nothing to download" in out
    assert "total: 1.3 GB to download\n" in out
    assert f"free at {tmp_path / 'models'} (OLLAMA_MODELS here, a guess): fits" in out


def test_dry_run_with_force_counts_present_models(capsys, srv) -> None:
    code, doc = plan(capsys, srv, "--force", "qwen2.5:0.5b")
    assert code == 0
    assert doc["models"][0]["will_pull"] is True
    assert doc["download"] == size_of(srv, "qwen2.5:0.5b")


def test_blobs_already_on_disk_or_shared_are_counted_once(capsys, srv, tmp_path) -> None:
    # llama3.2:latest and llama3.2:3b are the same model: the same blobs.
    both = plan(capsys, srv, "llama3.2:3b", "llama3.2:latest")[1]
    assert both["download"] == size_of(srv, "llama3.2:3b")
    # A blob the local server already stores is not downloaded again.
    weights = next(x for x in srv.manifest("llama3.2:3b")["layers"] if x["mediaType"] == WEIGHTS)
    blobs = tmp_path / "models" / "blobs"
    blobs.mkdir(parents=True)
    with open(blobs / weights["digest"].replace(":", "-"), "wb") as f:
        f.truncate(weights["size"])  # sparse: the right size, no real bytes
    after = plan(capsys, srv, "llama3.2:3b")[1]
    assert after["download"] == size_of(srv, "llama3.2:3b") - weights["size"]


def test_dry_run_unknown_model_fails_with_the_reason(capsys, srv) -> None:
    code, out, err = run(capsys, srv, "--dry-run", "llama3.2:99b", "llama3.2:1b")
    assert code == 1
    assert "llama3.2:99b  cannot tell: llama3.2:99b is not in the registry" in out
    assert "error: llama3.2:99b is not in the registry" in err


def test_dry_run_says_when_it_does_not_fit(capsys, srv) -> None:
    code, out, err = run(capsys, srv, "--dry-run", huge_model(srv))
    assert code == 1
    assert "DOES NOT FIT" in out
    assert "not enough disk space at" in err


def test_real_pull_is_refused_up_front_when_the_disk_cannot_hold_it(capsys, srv,
                                                                     tmp_path) -> None:
    code, out, err = run(capsys, srv, "llama3.2:1b", huge_model(srv))
    assert code == 1
    assert "error: not enough disk space: this pull needs 148.0 TB" in err
    assert f"free at {tmp_path / 'models'}" in err
    assert "nothing was downloaded" in err
    assert srv.requests_to("/api/pull") == []


def test_refusal_still_prints_the_json_document(capsys, srv) -> None:
    code, out, err = run(capsys, srv, "--json", "llama3.2:1b", huge_model(srv))
    doc = json.loads(out)
    assert code == 1 and doc["exit_code"] == 1 and doc["ready"] is False
    assert doc["error"]["message"].startswith("not enough disk space")
    assert srv.requests_to("/api/pull") == []


def test_no_disk_check_pulls_anyway(capsys, srv) -> None:
    name = huge_model(srv)
    srv.add_fault("error_line", after_bytes=10**9,
                  message="write /m/blobs/sha256-{hex}-partial: no space left on device")
    code, out, _ = run(capsys, srv, "--json", "--no-disk-check", name)
    doc = json.loads(out)
    assert code == 1
    assert doc["models"][0]["error"]["kind"] == "disk-full"
    assert len(srv.requests_to("/api/pull")) == 1


def test_registry_bearer_token_challenge(capsys, make_ollama, monkeypatch) -> None:
    server = make_ollama(registry_auth=True)
    monkeypatch.setenv("OLLAMA_PROVISION_REGISTRY", server.url)
    code, doc = plan(capsys, server, "llama3.2:1b")
    assert code == 0 and doc["models"][0]["size"] == size_of(server, "llama3.2:1b")


def test_insecure_for_a_plain_http_registry_in_the_name(capsys, make_ollama) -> None:
    server = make_ollama()
    name = f"127.0.0.1:{server.port}/team/tiny:latest"
    server.add_model(make_catalog_model(name, arch="llama", params="1B"))
    code, out, err = run(capsys, server, "--dry-run", name)
    assert code == 1
    assert "--insecure" in err  # https:// against a plain-HTTP registry
    code, doc = plan(capsys, server, "--insecure", name)
    assert code == 0 and doc["models"][0]["size"] == size_of(server, name)
    code, out, err = run(capsys, server, "--insecure", name)
    assert code == 0
    assert server.requests_to("/api/pull")[0].json["insecure"] is True
