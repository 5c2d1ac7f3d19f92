"""`ollama-provision pull`: what gets pulled, and how every failure of the stream ends.

Every test pulls over real HTTP from the Ollama test double (tests/double/),
with its faults standing in for a flaky network, a stuck download or a sick server.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provision.cli import main
from provision.models.pull import PullOptions, pull_models
from provision.names import ModelName, parse_name
from provision.output import human_bytes
from provision.server import OllamaServer, parse_host
from tests.double import OllamaTestServer

REPO = Path(__file__).resolve().parent.parent
FAST = ("--stall-timeout", "0.3", "--retry-base", "0.01")


pytestmark = pytest.mark.usefixtures("pull_env")


def serve(make_ollama, monkeypatch: pytest.MonkeyPatch, **kwargs) -> OllamaTestServer:
    """A double that is also the registry this tool reads manifests from."""
    srv = make_ollama(**kwargs)
    monkeypatch.setenv("OLLAMA_PROVISION_REGISTRY", srv.url)
    return srv


def pull(capsys, srv: OllamaTestServer, *args: str) -> tuple[int, str, str]:
    code = main(["pull", "--host", srv.url, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def pull_json(capsys, srv: OllamaTestServer, *args: str) -> tuple[int, dict, str]:
    code, out, err = pull(capsys, srv, "--json", *args)
    return code, json.loads(out), err


def by_name(doc: dict) -> dict[str, dict]:
    return {m["name"]: m for m in doc["models"]}


def pulls(srv: OllamaTestServer) -> int:
    return len(srv.requests_to("/api/pull", "POST"))


# --- what gets pulled -------------------------------------------------------------------


def test_pulls_a_missing_model(capsys, make_ollama, monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    code, doc, _ = pull_json(capsys, srv, "llama3.2:1b")
    assert code == 0 and doc["ready"] is True
    assert doc["schema"] == "ollama-provision.pull/1"
    model = doc["models"][0]
    assert model["status"] == "pulled"
    manifest = srv.manifest("llama3.2:1b")
    expected = manifest["config"]["size"] + sum(x["size"] for x in manifest["layers"])
    assert model["size"] == expected == model["downloaded"]
    assert model["retries"] == 0 and model["error"] is None
    assert "llama3.2:1b" in srv.installed_names()


def test_present_model_is_not_pulled_again(capsys, make_ollama, monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch, installed=["llama3.2:1b"])
    code, doc, _ = pull_json(capsys, srv, "registry.ollama.ai/library/LLAMA3.2:1B")
    assert code == 0
    assert doc["models"][0]["status"] == "present"
    assert pulls(srv) == 0


def test_force_pulls_again_and_says_whether_the_tag_moved(capsys, make_ollama,
                                                          monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch, installed=["llama3.2:1b", "qwen2.5:0.5b"])
    srv.update_model("llama3.2:1b")  # the registry's tag now points at new weights
    code, doc, _ = pull_json(capsys, srv, "--force", "llama3.2:1b", "qwen2.5:0.5b")
    assert code == 0
    models = by_name(doc)
    assert models["llama3.2:1b"]["status"] == "updated"
    assert models["qwen2.5:0.5b"]["status"] == "unchanged"
    assert models["qwen2.5:0.5b"]["downloaded"] == 0  # every blob was already there
    assert pulls(srv) == 2


def test_invalid_name_is_a_usage_error_before_any_request(capsys, make_ollama,
                                                          monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    code, out, err = pull(capsys, srv, "llama3.2:1b", "bad name!")
    assert code == 2
    assert "invalid model name 'bad name!'" in err
    assert "Traceback" not in err and out == ""
    assert srv.requests == []


def test_unreachable_server_exits_3(capsys) -> None:
    code = main(["pull", "--host", "127.0.0.1:9", "llama3.2:1b"])
    err = capsys.readouterr().err
    assert code == 3
    assert "error:" in err and "Traceback" not in err


def test_name_rejected_by_the_server_is_invalid_name_without_retry(make_ollama,
                                                                   monkeypatch) -> None:
    # The server's rules are the authority: a name it refuses (HTTP 400) is final.
    srv = serve(make_ollama, monkeypatch)
    odd = ModelName(host="registry.ollama.ai", namespace="library", model="bad name",
                    tag="latest")
    [outcome] = pull_models(OllamaServer(parse_host(srv.url)), [odd],
                            PullOptions(backoff_base=0.01, check_disk=False))
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.kind == "invalid-name"
    assert "HTTP 400" in outcome.error.message
    assert outcome.retries == 0 and pulls(srv) == 1


# --- final errors: classified, explained, not retried -----------------------------------


def test_unknown_model_is_not_retried_and_says_the_name_may_be_wrong(capsys, make_ollama,
                                                                     monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    code, doc, err = pull_json(capsys, srv, "llama3.2:99b", *FAST)
    assert code == 1
    error = doc["models"][0]["error"]
    assert error["kind"] == "unknown-model"
    assert "name or tag may be wrong" in error["message"]
    assert "https://ollama.com/library/llama3.2/tags" in error["hint"]
    assert pulls(srv) == 1
    # the reason once (the model's progress line), then the fix
    assert err.count("llama3.2:99b: not found in the registry") == 1, err
    assert err.index("not found in the registry") < err.index("hint: llama3.2:99b: see")


def test_disk_full_is_not_retried_and_says_where_and_how_much(capsys, make_ollama,
                                                              monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("error_line", after_bytes=400_000_000, message="write /var/lib/ollama/"
                  "models/blobs/sha256-{hex}-partial: no space left on device")
    code, doc, err = pull_json(capsys, srv, "llama3.2:1b", *FAST)
    assert code == 1
    model = doc["models"][0]
    assert model["error"]["kind"] == "disk-full"
    assert "/var/lib/ollama/models/blobs" in model["error"]["message"]
    weights = next(x for x in srv.manifest("llama3.2:1b")["layers"] if x["digest"] ==
                   _weights(srv))
    still_needed = human_bytes(weights["size"] - 400_000_000)  # the rest of the weights
    assert f"at least {still_needed} more is needed" in model["error"]["message"]
    assert "OLLAMA_MODELS" in model["error"]["hint"]
    assert model["retries"] == 0 and pulls(srv) == 1


def test_registry_unreachable_from_the_server_points_at_the_servers_proxy(
        capsys, make_ollama, monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("registry_unreachable")
    code, doc, err = pull_json(capsys, srv, "llama3.2:1b", *FAST)
    assert code == 1
    error = doc["models"][0]["error"]
    assert error["kind"] == "registry-unreachable"
    assert "HTTPS_PROXY in the server's environment" in error["hint"]
    assert "no such host" in error["detail"]
    assert pulls(srv) == 1


def test_one_failure_does_not_stop_the_others(capsys, make_ollama, monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    code, out, err = pull(capsys, srv, "nope:1b", "llama3.2:1b", "qwen2.5:0.5b", *FAST)
    assert code == 1
    assert "nope:1b: failed (unknown-model" in out
    assert "llama3.2:1b: pulled (" in out
    assert "qwen2.5:0.5b: pulled (" in out
    assert set(srv.installed_names()) == {"llama3.2:1b", "qwen2.5:0.5b"}


# --- retried: stalls, drops, server errors ----------------------------------------------


def test_silent_stall_is_dropped_and_resumed(capsys, make_ollama, monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("stall", after_bytes=500_000_000)  # silent until the client goes
    code, out, err = pull(capsys, srv, "llama3.2:1b", *FAST)
    assert code == 0
    assert "llama3.2:1b: no progress for 0.3 s: dropped the connection; retry 1/5" in err
    assert "llama3.2:1b: resumed at 500.0 MB/1.3 GB (37%) of blob" in err
    assert "not restarted" in err
    assert "1 retry" in out and pulls(srv) == 2


def test_lines_without_progress_are_a_stall_too(capsys, make_ollama, monkeypatch) -> None:
    # A stuck real Ollama keeps sending the same numbers every tick: lines are no sign
    # of progress, bytes are.
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("stuck", after_bytes=500_000_000, seconds=5)  # or until the client goes
    code, doc, err = pull_json(capsys, srv, "llama3.2:1b", *FAST)
    assert code == 0
    assert doc["models"][0]["retry_reasons"] == ["stalled"]
    assert "no progress for 0.3 s" in err
    assert "resumed at 500.0 MB/1.3 GB" in err


def test_dropped_connection_is_retried_and_resumes(capsys, make_ollama, monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("drop", after_bytes=600_000_000)
    code, doc, err = pull_json(capsys, srv, "llama3.2:1b", *FAST)
    assert code == 0
    model = doc["models"][0]
    assert model["status"] == "pulled"
    assert model["retry_reasons"] == ["connection-dropped"]
    assert model["resumed"] is True
    assert "resumed at 600.0 MB/1.3 GB" in err
    # Resumed, not restarted: the blob's bytes were served about once, not twice.
    assert model["downloaded"] == model["size"]


@pytest.mark.parametrize("message, kind", [
    ("max retries exceeded: unexpected EOF", "registry-retries-exceeded"),
    ("digest mismatch", "digest-mismatch"),
])
def test_transient_server_errors_are_retried(capsys, make_ollama, monkeypatch, message,
                                             kind) -> None:
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("error_line", after_bytes=300_000_000, message=message)
    code, doc, _ = pull_json(capsys, srv, "llama3.2:1b", *FAST)
    assert code == 0
    assert doc["models"][0]["retry_reasons"] == [kind]
    assert pulls(srv) == 2


def test_digest_mismatch_restart_is_announced(capsys, make_ollama, monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("error_line", message="digest mismatch")  # the server discards the blob
    code, out, err = pull(capsys, srv, "llama3.2:1b", *FAST)
    assert code == 0
    assert "restarted from zero" in err


def test_http_500_is_retried(capsys, make_ollama, monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("http_500", message="something broke")
    code, doc, _ = pull_json(capsys, srv, "llama3.2:1b", *FAST)
    assert code == 0
    assert doc["models"][0]["retry_reasons"] == ["server-error"]


def test_retries_are_bounded(capsys, make_ollama, monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("http_500", message="overloaded", times=None)
    code, doc, err = pull_json(capsys, srv, "llama3.2:1b", "--retries", "2", *FAST)
    assert code == 1
    model = doc["models"][0]
    assert model["status"] == "failed" and model["retries"] == 2
    assert "gave up after 2 retries" in model["error"]["message"]
    assert pulls(srv) == 3


def test_garbage_lines_are_skipped(capsys, make_ollama, monkeypatch, caplog) -> None:
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("garbage")  # right after the first line
    srv.add_fault("garbage", after_bytes=200_000_000, message="{not json")
    with caplog.at_level(logging.DEBUG, logger="provision.models.pull.stream"):
        code, doc, err = pull_json(capsys, srv, "llama3.2:1b", *FAST)
    assert code == 0 and doc["models"][0]["retries"] == 0
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any("502 Bad Gateway" in m for m in skipped)
    assert any("{not json" in m for m in skipped)
    assert "Traceback" not in err


def test_slow_headers_within_the_stall_timeout_are_waited_for(capsys, make_ollama,
                                                              monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("slow_headers", seconds=0.2)
    code, doc, _ = pull_json(capsys, srv, "llama3.2:1b", "--stall-timeout", "2")
    assert code == 0 and doc["models"][0]["retries"] == 0


def test_headers_slower_than_the_stall_timeout_are_retried(capsys, make_ollama,
                                                           monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("slow_headers", seconds=2)
    code, doc, err = pull_json(capsys, srv, "llama3.2:1b", *FAST)
    assert code == 0
    assert doc["models"][0]["retry_reasons"] == ["stalled"]
    assert "no answer for 0.3 s" in err


def test_parallel_pulls_overlap(make_ollama, monkeypatch) -> None:
    srv = serve(make_ollama, monkeypatch, download_rate=4e9)
    names = [parse_name("llama3.2:1b"), parse_name("qwen2.5:0.5b")]
    outcomes = pull_models(OllamaServer(parse_host(srv.url)), names,
                           PullOptions(parallel=2, check_disk=False))
    assert [o.status for o in outcomes] == ["pulled", "pulled"]
    first, second = srv.requests_to("/api/pull", "POST")
    # The second pull started while the first was still downloading.
    assert second.time - first.time < outcomes[0].duration / 2


# --- Ctrl-C ------------------------------------------------------------------------------


def test_ctrl_c_stops_cleanly_and_running_again_resumes(capsys, make_ollama, monkeypatch,
                                                        tmp_path) -> None:
    srv = serve(make_ollama, monkeypatch)
    srv.add_fault("stall", after_bytes=700_000_000)  # holds the pull until we interrupt
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "provision", "pull", "--host", srv.url, "llama3.2:1b"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 20
        while srv.partial.get(_weights(srv)) != 700_000_000:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    assert "llama3.2:1b: interrupted" in out

    code, again, err = pull(capsys, srv, "llama3.2:1b")
    assert code == 0
    assert "resumed at 700.0 MB/1.3 GB" in err


def _weights(srv: OllamaTestServer) -> str:
    manifest = srv.manifest("llama3.2:1b")
    return next(x["digest"] for x in manifest["layers"]
                if x["mediaType"] == "application/vnd.ollama.image.model")


def test_sizes_right_when_ollama_0_30_streams_no_line_for_a_fast_blob(
        capsys, make_ollama, monkeypatch) -> None:
    """From 0.30 a blob that arrives between two 60 ms ticks has no progress line at all
    (a real 0.32.15 pulls tiny with none): size and download come from the server."""
    srv = serve(make_ollama, monkeypatch, version="0.32.15", download_rate=None)
    code, doc, _ = pull_json(capsys, srv, "qwen2.5:0.5b")
    assert code == 0 and len(srv.requests_to("/api/pull", "POST")) == 1
    (model,) = doc["models"]
    size = sum(b["size"] for b in [*srv.manifest("qwen2.5:0.5b")["layers"],
                                   srv.manifest("qwen2.5:0.5b")["config"]])
    assert (model["status"], model["size"], model["downloaded"]) == ("pulled", size, size)
    code, doc, _ = pull_json(capsys, srv, "--force", "qwen2.5:0.5b")
    (model,) = doc["models"]
    assert (model["status"], model["size"], model["downloaded"]) == ("unchanged", size, 0)
    code, out, _ = pull(capsys, srv, "--force", "qwen2.5:0.5b")
    assert f"qwen2.5:0.5b: unchanged ({human_bytes(size)} in " in out
