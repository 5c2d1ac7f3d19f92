"""Ctrl-C in the middle of a real pull, then the same command again.

What Ollama 0.32.15 does (measured here, and what the tool now says): when the only
client of a download goes away the server cancels it (no more bytes arrive), keeps its
parts on disk (`<blob>-partial` and one `-partial-N` file per part with its offset), and
the next pull of the same model continues from there: its first progress line starts
at what was already downloaded, and only the rest crosses the network.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.throttle import ThrottledFront
from tests.real import REPO, RealOllama, Registry, create_from_gguf, run_cli
from tests.real.gguf import LlamaShape, write_gguf

# About 200 MB of weights: three of Ollama's 100 MB download parts and a bit.
BIG = LlamaShape("resume-test", embedding=1024, layers=4, heads=8, heads_kv=8,
                 feed_forward=4096, vocab=32000)
RATE = 50e6  # bytes per second through the front: about 4 s for the whole blob


@pytest.fixture(scope="module")
def big_front(real_server: RealOllama, registry: Registry,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThrottledFront, str,
                                                                           int]]:
    """The big model in the registry, reachable only through a throttled front."""
    path = tmp_path_factory.mktemp("gguf") / "big.gguf"
    write_gguf(path, BIG, "F16", fill=True)  # real bytes: they cross the network
    create_from_gguf(real_server, "big", path)
    real_server.publish("big", registry, "library/big:latest")
    size = sum(m["size"] for m in real_server.api("/api/tags")["models"]
               if m["name"] == "big:latest")
    path.unlink()
    with ThrottledFront(registry.port, RATE) as front:
        yield front, f"{front.host}/library/big:latest", size


def test_ctrl_c_stops_the_server_download_and_the_next_pull_resumes(
        empty_server: RealOllama, big_front, user_env) -> None:
    front, name, size = big_front
    env = {**user_env, "OLLAMA_HOST": empty_server.host}
    proc = subprocess.Popen([sys.executable, "-m", "provision", "pull", "--insecure", name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=env, cwd=str(REPO))
    deadline = time.monotonic() + 60
    while front.blob_bytes < size // 4 and time.monotonic() < deadline \
            and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the pull ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"{name}: interrupted" in out
    assert "error: interrupted: the server stopped downloading and keeps what it has" in err
    assert "hint: run the same command again to resume where it stopped" in err
    assert "Traceback" not in err

    # The server really stopped: no more bytes flow, and the parts are on its disk.
    time.sleep(0.5)  # what was in flight
    stopped_at = front.blob_bytes
    time.sleep(1.5)
    assert front.blob_bytes - stopped_at < size // 100
    assert list(Path(empty_server.models, "blobs").glob("sha256-*-partial-*"))
    assert stopped_at < size * 0.9

    # The same command again: resumed, and only the rest is downloaded.
    again = run_cli(env, "pull", "--json", "--insecure", name, timeout=120)
    assert again.returncode == 0, again.stderr
    (model,) = json.loads(again.stdout)["models"]
    assert model["status"] == "pulled" and model["resumed"] is True
    assert model["size"] == size
    fetched = front.blob_bytes - stopped_at
    assert abs(model["downloaded"] - fetched) < 4 << 20, (model, fetched)
    assert model["downloaded"] < size * 0.8
    assert name in empty_server.names()[0]


def test_resume_is_shown_in_plain_progress(empty_server: RealOllama, big_front,
                                           user_env) -> None:
    front, name, size = big_front
    empty_server.delete(name)
    env = {**user_env, "OLLAMA_HOST": empty_server.host}
    proc = subprocess.Popen([sys.executable, "-m", "provision", "pull", "--insecure", name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=env, cwd=str(REPO))
    start = front.blob_bytes
    deadline = time.monotonic() + 60
    while front.blob_bytes - start < size // 3 and time.monotonic() < deadline \
            and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    again = run_cli(env, "pull", "--insecure", name, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "resumed at " in again.stderr and "not restarted" in again.stderr
    assert ", resumed a partial download" in again.stdout
