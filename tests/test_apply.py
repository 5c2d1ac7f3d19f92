"""`ollama-provision apply` end to end against the test double: from a fresh machine to
ready, idempotent, and every way it can go wrong."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections import Counter
from pathlib import Path

import pytest

from provision.cli import main
from tests.double import Fault, OllamaTestServer, free_port, make_catalog_model

GiB = 2**30
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(monkeypatch, tmp_path):  # noqa: ANN001, ANN201
    """A clean environment: no codex on PATH, Codex home and models dir in tmp."""
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("OLLAMA_PROVISION_RETRY_BASE", "0")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    for var in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "OLLAMA_HOST",
                "FORCE_COLOR", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_NUM_PARALLEL"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def serve(env, **kwargs) -> OllamaTestServer:  # noqa: ANN001
    srv = OllamaTestServer(**kwargs).start()
    env.setenv("OLLAMA_HOST", srv.url)
    env.setenv("OLLAMA_PROVISION_REGISTRY", srv.url)
    return srv


def manifest(tmp_path: Path, text: str) -> str:
    path = tmp_path / "manifest.toml"
    path.write_text(text)
    return str(path)


def apply(capsys, *args: str) -> tuple[int, dict, str]:  # noqa: ANN001
    code = main(["apply", "--json", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def step(doc: dict, name: str) -> dict:
    return next(s for s in doc["steps"] if s["name"] == name)


SMALL = """
[[models]]
name = "llama3.2:1b"
num_ctx = 4096
"""


def test_fresh_machine_to_ready_then_nothing_changes(env, capsys, tmp_path) -> None:
    srv = serve(env, vram=[8 * GiB])
    try:
        file = manifest(tmp_path, SMALL)
        code, doc, err = apply(capsys, "-f", file, "--assume", "ram=16G,gpu=8G")
        assert code == 0, err
        assert doc["ready"] and doc["changed"]
        assert [s["name"] for s in doc["steps"]] == [
            "check", "hardware", "plan", "pull", "verify", "configure"]
        assert step(doc, "pull")["status"] == "changed"
        assert step(doc, "configure")["status"] == "changed"
        (model,) = doc["models"]
        assert model["name"] == "llama3.2:1b" and model["status"] == "changed"
        assert model["verification"]["placement"] == "gpu"
        assert model["verification"]["tokens_per_second"] > 0
        assert "llama3.2:1b" in srv.installed_names()
        config = (tmp_path / "codex" / "config.toml").read_text()
        assert srv.url.split("//")[1] in config.replace("localhost", "127.0.0.1")

        pulls_before = len(srv.requests_to("/api/pull"))
        code, doc, err = apply(capsys, "-f", file, "--assume", "ram=16G,gpu=8G")
        assert code == 0
        assert doc["changed"] is False
        assert all(s["status"] == "ok" for s in doc["steps"])
        assert len(srv.requests_to("/api/pull")) == pulls_before  # nothing downloaded
    finally:
        srv.stop()


def test_a_second_run_asks_the_server_each_thing_once(env, capsys, tmp_path) -> None:
    """A run that changes nothing costs the server one answer per question: its version,
    its model list, what it has loaded, the model's details, and the model's load and
    generation (verify), plus the endpoint Codex will use. On this machine (no --assume)
    the hardware step and the plan also ask where the server keeps its models."""
    srv = serve(env, vram=[8 * GiB])
    try:
        file = manifest(tmp_path, SMALL)
        assert apply(capsys, "-f", file)[0] == 0
        before = len(srv.requests)
        code, doc, err = apply(capsys, "-f", file)
        assert code == 0 and doc["changed"] is False, err
        asked = Counter(f"{r.method} {r.path}" for r in srv.requests[before:])
        assert asked == {"GET /api/version": 1, "GET /api/tags": 1, "GET /api/ps": 1,
                         "POST /api/show": 1, "POST /api/generate": 2,
                         "POST /v1/responses": 1}, asked
    finally:
        srv.stop()


def test_dry_run_plans_and_changes_nothing(env, capsys, tmp_path) -> None:
    srv = serve(env)
    try:
        code, doc, err = apply(capsys, "-f", manifest(tmp_path, SMALL), "--dry-run",
                               "--assume", "ram=16G")
        assert code == 0
        assert [s["name"] for s in doc["steps"]] == ["check", "hardware", "plan", "configure"]
        plan = step(doc, "plan")["data"]
        assert plan["pulls"] == ["llama3.2:1b"] and plan["download"] > 1_000_000_000
        assert not srv.requests_to("/api/pull")
        assert not (tmp_path / "codex" / "config.toml").exists()
        assert "+" in err and "model_provider" in err  # the config diff is shown
    finally:
        srv.stop()


def test_server_unreachable_is_exit_3_with_the_reason(env, capsys, tmp_path) -> None:
    port = free_port()
    env.setenv("OLLAMA_HOST", f"127.0.0.1:{port}")
    code, doc, err = apply(capsys, "-f", manifest(tmp_path, SMALL), "--wait", "0")
    assert code == 3
    assert step(doc, "check")["data"]["diagnosis"]["kind"] in ("not-installed", "not-running")
    assert [s["name"] for s in doc["steps"]] == ["check"]


def test_wrong_host_is_named(env, capsys, tmp_path) -> None:
    code, doc, _ = apply(capsys, "-f", manifest(tmp_path, SMALL), "--wait", "0",
                         "--host", "no-such-host.invalid")
    assert code == 3
    assert step(doc, "check")["data"]["diagnosis"]["kind"] == "dns-failure"


def test_model_that_does_not_fit_is_refused_before_download(env, capsys, tmp_path) -> None:
    srv = serve(env, vram=[])
    try:
        file = manifest(tmp_path, '[[models]]\nname = "llama3.1:70b"\n')
        code, doc, err = apply(capsys, "-f", file, "--assume", "ram=16G,gpu=none")
        assert code == 1
        assert step(doc, "hardware")["status"] == "failed"
        assert "cannot run here" in " ".join(step(doc, "hardware")["errors"])
        assert not srv.requests_to("/api/pull")
        (model,) = doc["models"]
        assert model["status"] == "failed" and "RAM" in model["error"].upper()
    finally:
        srv.stop()


def test_require_gpu_refuses_a_cpu_only_machine(env, capsys, tmp_path) -> None:
    srv = serve(env, vram=[])
    try:
        file = manifest(tmp_path, SMALL + "\n[hardware]\nrequire_gpu = true\n")
        code, doc, _ = apply(capsys, "-f", file, "--assume", "ram=32G,gpu=none")
        assert code == 1
        assert "the hardware requirement is gpu" in doc["models"][0]["error"]
        code, doc, err = apply(capsys, "-f", file, "--assume", "ram=32G,gpu=none",
                               "--ignore-hardware")
        assert code == 0 and doc["models"][0]["status"] == "changed"
        assert "warning" not in err
        # the old name still works (users' scripts), with one line saying the new one
        code, doc, err = apply(capsys, "-f", file, "--assume", "ram=32G,gpu=none", "--force")
        assert code == 0
        assert [line for line in err.splitlines() if "warning" in line] == [
            "warning: apply --force is now --ignore-hardware (--force goes away in a later "
            "release)"]
    finally:
        srv.stop()


def add_coders(srv: OllamaTestServer) -> None:
    for name, params in (("qwen2.5-coder:32b", "32B"), ("qwen2.5-coder:14b", "14B"),
                         ("qwen2.5-coder:7b", "7B")):
        srv.add_model(make_catalog_model(name, arch="qwen2", params=params))


@pytest.mark.parametrize(
    ("assume", "chosen"),
    [
        ("ram=128G,gpu=80G", "qwen2.5-coder:32b"),  # the largest runs fully on the GPU
        ("ram=32G,gpu=16G", "qwen2.5-coder:14b"),  # 32b would only partly fit
        ("ram=16G,gpu=none", "qwen2.5-coder:7b"),  # CPU: the best with comfortable headroom
        ("ram=4G,gpu=none", "llama3.2:1b"),  # a small machine still gets something
    ],
)
def test_builtin_default_picks_the_best_model_for_the_machine(env, capsys, assume: str,
                                                              chosen: str) -> None:
    srv = serve(env, vram=[], memory=256 * GiB)
    add_coders(srv)
    try:
        code, doc, err = apply(capsys, "--dry-run", "--assume", assume)
        assert code == 0, err
        assert doc["source"] == "built-in default.toml"
        assert step(doc, "plan")["data"]["pulls"] == [chosen]
    finally:
        srv.stop()


def test_stalled_pull_resumes(env, capsys, tmp_path) -> None:
    srv = serve(env, download_rate=20e9)
    srv.faults.append(Fault("stall", after_bytes=300_000_000, seconds=None))
    try:
        file = manifest(tmp_path, SMALL + "\n[pull]\nstall_timeout = 0.5\n")
        code, doc, err = apply(capsys, "-f", file, "--assume", "ram=16G")
        assert code == 0, err
        (outcome,) = step(doc, "pull")["data"]["outcomes"]
        assert outcome["status"] == "pulled"
        assert outcome["retries"] >= 1 and outcome["resumed"] is True
        assert len(srv.requests_to("/api/pull")) >= 2
    finally:
        srv.stop()


def test_custom_model_is_created_once(env, capsys, tmp_path) -> None:
    srv = serve(env)
    try:
        file = manifest(tmp_path, SMALL + """
[[models]]
name = "reviewer"
from = "llama3.2:1b"
system = "You review code."
parameters = { temperature = 0.2 }

[codex]
model = "reviewer"
""")
        code, doc, err = apply(capsys, "-f", file, "--assume", "ram=16G")
        assert code == 0, err
        reviewer = next(m for m in doc["models"] if m["name"] == "reviewer:latest")
        assert reviewer["create"] == "created" and reviewer["custom"]
        assert reviewer["verification"]["ok"]
        assert step(doc, "configure")["data"]["model"] == "reviewer:latest"
        code, doc, _ = apply(capsys, "-f", file, "--assume", "ram=16G")
        assert code == 0 and doc["changed"] is False
        assert len(srv.requests_to("/api/create")) == 1
    finally:
        srv.stop()


def test_optional_model_failure_does_not_fail_the_run(env, capsys, tmp_path) -> None:
    srv = serve(env)
    try:
        file = manifest(tmp_path, SMALL + '\n[[models]]\nname = "no-such-model"\n'
                        "required = false\n")
        code, doc, _ = apply(capsys, "-f", file, "--assume", "ram=16G")
        assert code == 0
        statuses = {m["name"]: m["status"] for m in doc["models"]}
        assert statuses["no-such-model:latest"] == "failed"
        assert statuses["llama3.2:1b"] == "changed"
    finally:
        srv.stop()


def test_too_slow_fails_verification(env, capsys, tmp_path) -> None:
    srv = serve(env, tokens_per_second=3.0)
    try:
        file = manifest(tmp_path, SMALL + "\n[verify]\nmin_tokens_per_second = 20\n")
        code, doc, _ = apply(capsys, "-f", file, "--assume", "ram=16G")
        assert code == 1
        assert "below the required 20" in doc["models"][0]["error"]
    finally:
        srv.stop()


def test_old_server_gets_a_working_codex_config_and_a_warning(env, capsys, tmp_path) -> None:
    srv = serve(env, version="0.12.9")
    try:
        code, doc, err = apply(capsys, "-f", manifest(tmp_path, SMALL), "--assume", "ram=16G")
        endpoint = step(doc, "verify")["data"]["endpoint"]
        assert endpoint["path"] == "/v1/chat/completions" and endpoint["ok"]
        assert "0.13.4" in err
    finally:
        srv.stop()


def test_github_actions_output(env, capsys, tmp_path) -> None:
    srv = serve(env)
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    env.setenv("GITHUB_ACTIONS", "true")
    env.setenv("GITHUB_STEP_SUMMARY", str(summary))
    env.setenv("GITHUB_OUTPUT", str(outputs))
    try:
        file = manifest(tmp_path, SMALL + '\n[[models]]\nname = "no-such-model"\n')
        code, doc, err = apply(capsys, "-f", file, "--assume", "ram=16G")
        assert code == 1
        assert "::group::check:" in err and "::endgroup::" in err
        assert "::error title=ollama-provision hardware::no-such-model:latest is not in the " \
            "registry" in err
        text = summary.read_text()
        assert "### ollama-provision apply: not ready (exit 1)" in text
        assert "| llama3.2:1b | changed |" in text
        assert f"models-dir={tmp_path / 'models'}" in outputs.read_text()
        assert "models directory" in err
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[models]]\nnmae = 'x'\n", "models[0].nmae: unknown key (did you mean 'name'?)"),
        ("[verify]\nmin_tokens_per_second = 'fast'\n", "verify.min_tokens_per_second: expected"),
        ("[server\n", "invalid TOML"),
    ],
)
def test_invalid_manifest_is_exit_2_with_file_and_key(env, capsys, tmp_path, text: str,
                                                      message: str) -> None:
    file = manifest(tmp_path, text)
    code = main(["apply", "-f", file])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {file}: ") and message in err
    assert "Traceback" not in err


def fake_ollama(tmp_path: Path) -> Path:
    """An `ollama` whose `serve` runs the test double where OLLAMA_HOST says."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "ollama"
    exe.write_text(f"""#!/bin/sh
[ "$1" = serve ] || exit 1
echo "fake ollama serve on $OLLAMA_HOST"
cd {ROOT}
exec {sys.executable} -m tests.double --port "${{OLLAMA_HOST##*:}}"
""")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def test_start_brings_up_an_installed_server(env, capsys, tmp_path) -> None:
    registry = OllamaTestServer().start()
    port = free_port()
    env.setenv("PATH", f"{fake_ollama(tmp_path)}:/usr/bin:/bin")
    env.setenv("OLLAMA_HOST", f"127.0.0.1:{port}")
    env.setenv("OLLAMA_PROVISION_REGISTRY", registry.url)
    env.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    pid = None
    try:
        code, doc, err = apply(capsys, "-f", manifest(tmp_path, SMALL), "--start",
                               "--assume", "ram=16G")
        check = step(doc, "check")
        assert check["status"] == "changed", err
        pid = check["data"]["started"]["pid"]
        log = Path(check["data"]["started"]["log"])
        assert "fake ollama serve on 127.0.0.1:" in log.read_text()
        assert code == 0
    finally:
        registry.stop()
        if pid:
            os.kill(pid, 15)


def test_dry_run_of_a_model_that_cannot_run_is_not_ready(env, capsys, tmp_path) -> None:
    srv = serve(env, vram=[])
    try:
        file = manifest(tmp_path, SMALL + '\n[[models]]\nname = "llama3.1:70b"\n')
        code, doc, _ = apply(capsys, "-f", file, "--dry-run", "--assume", "ram=16G,gpu=none")
        assert code == 1 and doc["ready"] is False
        assert doc["changed"] is True  # llama3.2:1b would still be pulled
        # the plan step itself changes nothing, as in a real run (issue 13)
        assert step(doc, "plan")["status"] == "ok"
    finally:
        srv.stop()


def test_dry_run_says_what_would_change(env, capsys, tmp_path) -> None:
    srv = serve(env)
    try:
        code = main(["apply", "-f", manifest(tmp_path, SMALL), "--dry-run", "--assume", "ram=16G"])
        out = capsys.readouterr().out
        assert code == 0
        assert "would change: pull, configure" in out
    finally:
        srv.stop()


def test_unreachable_waits_then_prints_how_to_fix(env, capsys, tmp_path) -> None:
    # Not installed here is worth waiting for too: a server in a container may be starting.
    port = free_port()
    env.setenv("OLLAMA_HOST", f"127.0.0.1:{port}")
    code = main(["apply", "-f", manifest(tmp_path, SMALL), "--wait", "0.5"])
    err = capsys.readouterr().err
    assert code == 3
    assert "waiting up to 0.5 s" in err
    assert "fix: " in err


def test_input_errors_stop_before_any_step(env, capsys, tmp_path) -> None:
    srv = serve(env)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    try:
        for args in (["--assume", "ram=abc"], ["--codex-home", str(not_a_dir)]):
            code = main(["apply", "-f", manifest(tmp_path, SMALL), *args])
            err = capsys.readouterr().err
            assert code == 2, args
            assert err.startswith("error: ") and "==> check" not in err
        assert srv.requests == []
    finally:
        srv.stop()


def test_verify_without_loading(env, capsys, tmp_path) -> None:
    srv = serve(env)
    try:
        file = manifest(tmp_path, SMALL + "\n[verify]\nload = false\n")
        code, doc, _ = apply(capsys, "-f", file, "--assume", "ram=16G")
        assert code == 0
        assert not srv.requests_to("/api/generate")
        assert doc["models"][0]["verification"] is None
        assert step(doc, "verify")["data"]["endpoint"]["ok"]
    finally:
        srv.stop()


def test_codex_is_not_pointed_at_a_failed_model(env, capsys, tmp_path) -> None:
    srv = serve(env)
    srv.faults.append(Fault("error_line", times=None, message="no space left on device"))
    try:
        code, doc, _ = apply(capsys, "-f", manifest(tmp_path, SMALL), "--assume", "ram=16G")
        assert code == 1
        assert step(doc, "configure")["status"] == "skipped"
        assert not (tmp_path / "codex" / "config.toml").exists()
    finally:
        srv.stop()


def test_a_remote_server_is_not_judged_by_this_machine() -> None:
    from provision.hardware import HardwareSpec, gate
    from provision.models import ModelSpec, RegistryClient

    specs = (ModelSpec(name="llama3.1:70b"), ModelSpec(choose=("a", "b")))
    with RegistryClient() as registry:
        named, chosen = gate(specs, None, server=None, hardware=HardwareSpec(require_gpu=True),
                             registry=registry)
    assert named.allowed and "another machine" in (named.reason or "")
    assert not chosen.allowed and "needs the server's hardware" in (chosen.reason or "")
    assert registry.requests == 0


def test_clients_env_clash_fails_the_step_and_keeps_the_users_value(env, capsys,
                                                                     tmp_path) -> None:
    serve(env)
    env.setenv("OPENAI_API_KEY", "sk-users-own-key")
    out_file = tmp_path / "ollama.env"
    path = manifest(tmp_path, SMALL + f"""
[clients]
codex = false
env = {{ for = ["openai"], file = "{out_file}" }}
""")
    code, doc, err = apply(capsys, "-f", path)
    assert code == 1
    written = step(doc, "env")
    assert written["status"] == "failed"
    assert written["errors"] == ["OPENAI_API_KEY is already set here (its value not shown): "
                                 "kept, and openai tools will send it to this server "
                                 "(--override sets the placeholder instead)"]
    assert out_file.read_text().startswith("OPENAI_BASE_URL=http://127.0.0.1:")
    assert "OPENAI_API_KEY" not in out_file.read_text()
    assert "sk-users-own-key" not in json.dumps(doc) + err
