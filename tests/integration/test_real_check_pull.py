"""`check`, `hardware` and `pull` against a real Ollama 0.32.15 and a real registry."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.real import REPO, RealOllama, Registry, run_cli


@pytest.fixture(scope="module")
def tiny_ref(real_server: RealOllama, registry: Registry) -> str:
    """`tiny`, pushed to the real registry as <registry>/library/tiny:latest."""
    return real_server.publish("tiny", registry, "library/tiny:latest")


def env_for(user_env: dict[str, str], srv: RealOllama) -> dict[str, str]:
    return {**user_env, "OLLAMA_HOST": srv.host}


# --- check --------------------------------------------------------------------------------


def test_check_reports_the_real_version_and_models(real_server, user_env) -> None:
    env = env_for(user_env, real_server)
    ok = run_cli(env, "check", "--json", "tiny")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["server"]["version"] == "0.32.15"
    assert doc["server"]["responses_api"] is True
    (tiny,) = doc["models"]
    assert tiny["present"] is True and tiny["quantization"] == "F16"
    assert tiny["size"] == 254764  # every blob of the model, as /api/tags says

    missing = run_cli(env, "check", "tiny", "nosuchmodel")
    assert missing.returncode == 1
    assert "model nosuchmodel:latest: missing" in missing.stdout
    assert "0.32.15" in missing.stdout


def test_check_without_a_server_exits_3(user_env) -> None:
    from tests.real import free_port

    result = run_cli({**user_env, "OLLAMA_HOST": f"127.0.0.1:{free_port()}"}, "check")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr


# --- hardware ------------------------------------------------------------------------------


def test_hardware_of_an_installed_model_matches_what_the_server_loads(real_server,
                                                                     user_env) -> None:
    env = env_for(user_env, real_server)
    result = run_cli(env, "hardware", "--json", "--num-ctx", "2048", "tiny")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    (model,) = doc["models"]
    assert model["source"] == "installed" and model["verdict"] == "cpu"
    # The disk figure is where this server keeps its models (the tool's environment
    # has no OLLAMA_MODELS and its HOME is elsewhere): the server said so.
    assert doc["machine"]["disk"]["path"] == str(real_server.models)
    assert doc["machine"]["disk"]["source"] == "server"
    predicted = model["memory"]["total"]

    real_server.api("/api/generate", {"model": "tiny", "prompt": "hi", "stream": False,
                                      "options": {"num_ctx": 2048, "num_predict": 1}})
    (loaded,) = real_server.loaded()
    assert loaded["context_length"] == 2048
    assert abs(predicted - loaded["size"]) <= 0.10 * loaded["size"], (predicted, loaded)

    text = run_cli(env, "hardware", "tiny")
    assert f"free in {real_server.models} (as the server says)" in text.stdout


# --- pull ----------------------------------------------------------------------------------


def test_pull_reports_size_and_download_then_present(empty_server, tiny_ref,
                                                     user_env) -> None:
    env = env_for(user_env, empty_server)
    first = run_cli(env, "pull", "--json", "--insecure", tiny_ref)
    assert first.returncode == 0, first.stderr
    (model,) = json.loads(first.stdout)["models"]
    assert model["status"] == "pulled"
    assert model["size"] == 254764
    assert model["downloaded"] == 254764  # nothing was there before
    assert tiny_ref in empty_server.names()[0]

    again = run_cli(env, "pull", "--insecure", tiny_ref)
    assert again.returncode == 0
    assert again.stdout.strip() == f"{tiny_ref}: present"

    forced = run_cli(env, "pull", "--json", "--force", "--insecure", tiny_ref)
    (model,) = json.loads(forced.stdout)["models"]
    assert (model["status"], model["size"], model["downloaded"]) == ("unchanged", 254764, 0)

    empty_server.delete(tiny_ref)
    text = run_cli(env, "pull", "--insecure", tiny_ref)
    assert text.returncode == 0, text.stderr
    assert f"{tiny_ref}: pulled (254.8 KB in " in text.stdout
    # Progress as plain lines on stderr (not a terminal): a start and an end line.
    assert f"pulling {tiny_ref}" in text.stderr
    assert f"{tiny_ref}: pulled: 254.8 KB in " in text.stderr


def test_pull_dry_run_names_the_servers_models_folder(empty_server, tiny_ref,
                                                      user_env) -> None:
    empty_server.delete(tiny_ref)  # an empty server: nothing to ask /api/show about
    result = run_cli(env_for(user_env, empty_server), "pull", "--dry-run", "--json",
                     "--insecure", tiny_ref)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["disk"]["path"] == str(empty_server.models)
    assert doc["disk"]["source"] in ("server", "server process")
    assert doc["models"][0]["size"] == 254764


def test_pull_of_an_unknown_model_or_tag_is_explained(empty_server, registry, tiny_ref,
                                                      user_env) -> None:
    env = env_for(user_env, empty_server)
    for name in (f"{registry.host}/library/nosuchmodel", f"{registry.host}/library/tiny:nope"):
        result = run_cli(env, "pull", "--insecure", name)
        assert result.returncode == 1
        # The reason once, on the model's line, then the fix; the summary its kind.
        said = f"{name}:latest" if ":" not in name.rsplit("/", 1)[-1] else name
        assert f"{said}: not found in the registry" in result.stderr
        assert f"hint: {said}: check the name against the registry {registry.host}" \
            in result.stderr
        assert f"{said}: failed (unknown-model)" in result.stdout
        assert "Traceback" not in result.stderr


def test_pull_without_insecure_says_the_registry_speaks_http(empty_server, tiny_ref,
                                                             user_env) -> None:
    empty_server.delete(tiny_ref)
    result = run_cli(env_for(user_env, empty_server), "pull", "--no-disk-check", tiny_ref)
    assert result.returncode == 1
    assert f"hint: {tiny_ref}: the registry speaks plain HTTP: add --insecure" in result.stderr


def test_pull_on_a_terminal_draws_progress(empty_server, tiny_ref, user_env) -> None:
    """stderr on a pseudo-terminal: the live display, rendered by a terminal emulator."""
    import pyte

    empty_server.delete(tiny_ref)
    env = {**env_for(user_env, empty_server), "TERM": "xterm", "COLUMNS": "80",
           "LINES": "24"}
    env.pop("NO_COLOR", None)
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "provision", "pull", "--insecure", tiny_ref],
                            stdout=subprocess.PIPE, stderr=child_fd, stdin=subprocess.DEVNULL,
                            env=env, cwd=str(REPO))
    os.close(child_fd)
    screen = pyte.Screen(80, 24)
    stream = pyte.ByteStream(screen)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main_fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(main_fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            stream.feed(data)
        elif proc.poll() is not None:
            break
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.wait(timeout=30)
    os.close(main_fd)
    shown = "\n".join(line.rstrip() for line in screen.display if line.strip())
    assert proc.returncode == 0, shown
    # The finished model stays as one line that does not wrap: a full bar and the size,
    # or (this name is long) the plain outcome.
    (done,) = [line.rstrip() for line in screen.display if tiny_ref in line]
    assert done.startswith(f"✓ {tiny_ref}"), shown
    assert "100% " in done and "254.8/254.8 KB" in done or "pulled: 254.8 KB in" in done, shown
    assert len(shown.splitlines()) == 1, shown
    assert f"{tiny_ref}: pulled (254.8 KB in " in out


def test_shared_models_are_not_touched(real_server) -> None:
    """The server writes into its own copy, never into ../shared."""
    shared = Path(real_server.models)
    assert "shared" not in shared.parts[-3:]


def test_hardware_of_a_model_in_a_plain_http_registry(empty_server, tiny_ref,
                                                      user_env) -> None:
    env = env_for(user_env, empty_server)
    empty_server.delete(tiny_ref)
    refused = run_cli(env, "hardware", tiny_ref)
    assert refused.returncode == 1
    assert "--insecure uses plain HTTP for a self-hosted registry" in refused.stderr
    result = run_cli(env, "hardware", "--json", "--insecure", "--num-ctx", "2048", tiny_ref)
    assert result.returncode == 0, result.stderr
    (model,) = json.loads(result.stdout)["models"]
    assert model["source"] == "registry" and model["download"] == 254764
    assert model["verdict"] == "cpu"
