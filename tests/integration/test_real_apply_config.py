"""`apply` twice with a custom model, and `config` read by the real current Codex."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.real import REPO, RealOllama, run_cli, unload

CODEX = REPO / ".ci" / "node" / "node_modules" / ".bin" / "codex"


def manifest(tmp_path: Path, srv: RealOllama) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(f"""\
[server]
host = "{srv.url}"

[[models]]
name = "reviewer"
from = "tiny"
system = "You review code changes."
parameters = {{ temperature = 0.2, num_ctx = 2048 }}

[codex]
codex_home = "{tmp_path / 'codex'}"

[verify]
num_predict = 8
""")
    return path


def test_apply_twice_creates_verifies_configures_then_changes_nothing(
        real_server: RealOllama, user_env, tmp_path) -> None:
    path = manifest(tmp_path, real_server)
    first = run_cli(user_env, "apply", "--json", "-f", str(path))
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["ready"] is True and doc["changed"] is True
    (model,) = doc["models"]
    assert model["name"] == "reviewer:latest" and model["create"] == "created"
    check = model["verification"]
    assert check["ok"] is True and check["placement"] == "cpu"
    assert check["context_length"] == 2048  # the model's own num_ctx, loaded for real
    assert check["tokens_per_second"] > 0
    # Placement and size are the server's own /api/ps figures.
    (loaded,) = [m for m in real_server.loaded() if m["name"] == "reviewer:latest"]
    assert (check["size"], check["size_vram"]) == (loaded["size"], loaded["size_vram"])
    steps = {s["name"]: s for s in doc["steps"]}
    assert steps["verify"]["data"]["endpoint"] == {"path": "/v1/responses", "ok": True,
                                                   "status": 200, "error": None}
    assert steps["configure"]["changed"] is True
    assert doc["models_dir"] == str(real_server.models)
    show = real_server.api("/api/show", {"model": "reviewer"})
    assert show["system"] == "You review code changes."
    assert "temperature                    0.2" in show["parameters"]

    config = (tmp_path / "codex" / "config.toml").read_bytes()
    second = run_cli(user_env, "apply", "--json", "-f", str(path))
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["changed"] is False
    assert [s["name"] for s in doc["steps"] if s["changed"]] == []
    assert doc["models"][0]["create"] == "unchanged"
    assert (tmp_path / "codex" / "config.toml").read_bytes() == config
    text = run_cli(user_env, "apply", "-f", str(path))
    assert "apply: ready (nothing changed)" in text.stdout


def test_config_then_codex_exec_answers_through_the_real_server(
        real_server: RealOllama, user_env, tmp_path) -> None:
    if not CODEX.exists():
        if os.environ.get("OLLAMA_PROVISION_REQUIRE_CODEX") == "1":
            pytest.fail(f"OLLAMA_PROVISION_REQUIRE_CODEX=1 but {CODEX} is missing")
        pytest.skip(f"the real Codex is not installed ({CODEX}): bash .ci/install-codex")
    codex_home = tmp_path / "codex-home"
    env = {**user_env, "OLLAMA_HOST": real_server.host, "CODEX_HOME": str(codex_home),
           "PATH": f"{CODEX.parent}{os.pathsep}{user_env.get('PATH', '')}"}
    written = run_cli(env, "config", "--json", "tiny")
    assert written.returncode == 0, written.stderr
    doc = json.loads(written.stdout)
    assert doc["validation"]["status"] == "ok", doc  # the installed Codex loads it
    unload(real_server, "tiny")
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [str(CODEX), "exec", "--profile", "ollama", "--skip-git-repo-check",
         "Reply with one word."], cwd=work, env=env, capture_output=True, text=True,
        timeout=180, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "provider: ollama" in result.stderr or "provider: ollama" in result.stdout
    assert result.stdout.strip(), result.stderr[-3000:]  # the model's answer
    # The answer came from this server: Codex's request loaded the model there.
    assert "tiny:latest" in {m["name"] for m in real_server.loaded()}
    version = subprocess.run([str(CODEX), "--version"], capture_output=True, text=True,
                             check=True).stdout
    assert version.startswith("codex-cli ")
    shutil.rmtree(codex_home / "sessions", ignore_errors=True)


def test_a_custom_model_run_by_its_bases_runner_is_placed(real_server: RealOllama, user_env,
                                                          tmp_path) -> None:
    """A custom model that only adds a system prompt runs in its base's runner, and
    `/api/ps` lists only the base: verify still says where it runs, with the runner's
    figures (it said `?` before)."""
    for model in real_server.loaded():
        unload(real_server, model["name"])
    path = tmp_path / "manifest.toml"
    path.write_text(f'[server]\nhost = "{real_server.url}"\n\n[[models]]\nname = "tiny"\n\n'
                    '[[models]]\nname = "brief"\nfrom = "tiny"\nsystem = "Be brief."\n\n'
                    "[codex]\nenabled = false\n\n[verify]\nnum_predict = 4\n")
    done = run_cli(user_env, "apply", "--json", "-f", str(path))
    assert done.returncode == 0, done.stderr
    checks = {m["name"]: m["verification"] for m in json.loads(done.stdout)["models"]}
    (runner,) = real_server.loaded()
    assert runner["name"] == "tiny:latest"  # what the server shows: the base alone
    for name in ("tiny:latest", "brief:latest"):
        assert checks[name]["placement"] == "cpu", checks
        assert (checks[name]["size"], checks[name]["size_vram"]) == \
            (runner["size"], runner["size_vram"])
    text = run_cli(user_env, "apply", "-f", str(path))
    assert "brief:latest: cpu, " in text.stderr, text.stderr
