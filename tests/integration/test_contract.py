"""The test double follows the real server: the same requests to both, the same shapes.

For each request: the status code, the content type, the shape of the answer (every key
and the JSON type of every value, recursively), the error texts (with paths, ports and
digests normalised) and, for streams, the order of the events. The double runs as the
version of the real server (0.32.15); where that version differs from the 0.12.9
captures the double is version-aware (its own tests cover the older shapes).

What cannot match is left out on purpose: the real server's pushes and pulls of names
without a host go to registry.ollama.ai, which it cannot reach here (its registry is the
one under test instead), and ids, times and generated text differ by nature.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.double import OllamaTestServer
from tests.real import RealOllama, Registry

VERSION = "0.32.15"


@pytest.fixture(scope="module")
def double() -> Iterator[OllamaTestServer]:
    with OllamaTestServer(version=VERSION, installed=["tiny"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def pair(real_server: RealOllama, registry: Registry,
         double: OllamaTestServer) -> dict[str, tuple[str, str]]:
    """name -> (base URL, registry host) of each side."""
    return {"real": (real_server.url, registry.host),
            "double": (double.url, double.url.removeprefix("http://"))}


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"  # Go writes 10000.0 as 10000: an int or a float by value
    return "null" if value is None else "string"


def normalise(text: str) -> str:
    text = re.sub(r"sha256[:-][0-9a-f]{64}", "sha256:<digest>", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "<registry>", text)
    return re.sub(r"(open |FROM )\S*/models/", r"\1<models>/", text)


def answer(response: httpx.Response) -> dict[str, Any]:
    """What a client can rely on, without what differs by nature (ids, text, times)."""
    ctype = response.headers.get("content-type", "")
    out: dict[str, Any] = {"status": response.status_code, "type": ctype}
    if "ndjson" in ctype:
        events = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        collapsed: list[Any] = []
        for event in events:  # repeated progress lines are ticks: one is enough
            key = (normalise(str(event.get("status") or "")),
                   normalise(str(event["error"])) if "error" in event else None,
                   json.dumps(shape(event), sort_keys=True))
            if not collapsed or collapsed[-1] != key:
                collapsed.append(key)
        out["events"] = collapsed
    elif "event-stream" in ctype:
        frames = [f for f in response.text.split("\n\n") if f.strip()]
        out["events"] = []
        for frame in frames:
            name = next((ln[7:] for ln in frame.splitlines() if ln.startswith("event: ")), "")
            data = next((ln[6:] for ln in frame.splitlines() if ln.startswith("data: ")), "")
            body = data if data == "[DONE]" else shape(json.loads(data))
            if body in [e[1] for e in out["events"][-1:]] and name == out["events"][-1][0]:
                continue  # token deltas: one shows the shape
            out["events"].append((name, body))
    elif "json" in ctype:
        body = response.json()
        out["shape"] = shape(body)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            out["error"] = normalise(body["error"])
        elif isinstance(body, dict) and isinstance(body.get("error"), dict):
            out["error"] = body["error"].get("message")
    else:
        out["text"] = response.text
    return out


def both(pair: dict[str, tuple[str, str]], method: str, path: str,
         body: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    results = []
    for side in ("real", "double"):
        base, registry = pair[side]
        sent = json.loads(json.dumps(body).replace("<registry>", registry)) if body else None
        response = httpx.request(method, base + path, json=sent, timeout=120)
        results.append(answer(response))
    return results[0], results[1]


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
CASES = [
    ("version", "GET", "/api/version", None),
    ("tags", "GET", "/api/tags", None),
    ("show", "POST", "/api/show", {"model": "tiny"}),
    ("show unknown", "POST", "/api/show", {"model": "nope"}),
    ("generate", "POST", "/api/generate",
     {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 3}}),
    ("generate stream", "POST", "/api/generate",
     {"model": "tiny", "prompt": "hi", "options": {"num_predict": 3}}),
    ("ps", "GET", "/api/ps", None),
    ("generate unknown", "POST", "/api/generate", {"model": "nope", "prompt": "hi"}),
    ("chat", "POST", "/api/chat", {**CHAT, "stream": False, "options": {"num_predict": 3}}),
    ("chat stream", "POST", "/api/chat", {**CHAT, "options": {"num_predict": 3}}),
    ("embed (a completion model)", "POST", "/api/embed", {"model": "tiny", "input": "hi"}),
    ("copy", "POST", "/api/copy", {"source": "tiny", "destination": "contract-copy"}),
    ("copy unknown", "POST", "/api/copy", {"source": "nope", "destination": "x"}),
    ("delete", "DELETE", "/api/delete", {"model": "contract-copy"}),
    ("delete again", "DELETE", "/api/delete", {"model": "contract-copy"}),
    ("create", "POST", "/api/create",
     {"model": "contract-made", "from": "tiny", "system": "be brief"}),
    ("create again", "POST", "/api/create",
     {"model": "contract-made", "from": "tiny", "system": "be brief"}),
    ("push unknown", "POST", "/api/push", {"model": "nope", "insecure": True}),
    ("pull invalid name", "POST", "/api/pull", {"model": "bad name!"}),
    ("pull unknown", "POST", "/api/pull",
     {"model": "<registry>/library/nope:latest", "insecure": True}),
    ("pull unknown, no stream", "POST", "/api/pull",
     {"model": "<registry>/library/nope:latest", "insecure": True, "stream": False}),
    ("v1 models", "GET", "/v1/models", None),
    ("v1 model", "GET", "/v1/models/tiny", None),
    ("v1 model unknown", "GET", "/v1/models/nope", None),
    ("v1 chat", "POST", "/v1/chat/completions", {**CHAT, "max_tokens": 3}),
    ("v1 chat stream", "POST", "/v1/chat/completions", {**CHAT, "max_tokens": 3,
                                                        "stream": True}),
    ("v1 chat unknown", "POST", "/v1/chat/completions", {**CHAT, "model": "nope"}),
    ("v1 responses", "POST", "/v1/responses",
     {"model": "tiny", "input": "hi", "max_output_tokens": 3}),
    ("v1 responses stream", "POST", "/v1/responses",
     {"model": "tiny", "input": "hi", "max_output_tokens": 3, "stream": True}),
    ("unknown path", "GET", "/nope", None),
]


@pytest.mark.parametrize(("what", "method", "path", "body"), CASES,
                         ids=[c[0] for c in CASES])
def test_the_double_answers_like_the_real_server(pair, what: str, method: str, path: str,
                                                 body: Any) -> None:
    real, double = both(pair, method, path, body)
    assert double == real


def test_create_from_an_unknown_model_pulls_it_first(pair) -> None:
    """Both pull the unknown base from registry.ollama.ai: the real server cannot reach it
    here, so only the order of events and the error's beginning can match."""
    real, double = both(pair, "POST", "/api/create", {"model": "x", "from": "nosuchbase"})
    assert [e[0] for e in real["events"]] == [e[0] for e in double["events"]] == \
        ["pulling manifest", ""]
    for side in (real, double):
        assert side["events"][-1][1].startswith("pull model manifest: ")


def test_a_model_with_loaded_weights_runs_in_that_runner(pair) -> None:
    """A custom model that adds only a system prompt, asked after its base: the base's
    runner serves it, and `/api/ps` lists the base alone (then unloading the custom model
    unloads that runner)."""
    seen = {}
    for side, (base, _) in pair.items():
        with httpx.Client(base_url=base, timeout=120) as http:
            assert http.post("/api/create", json={"model": "contract-brief", "from": "tiny",
                                                  "system": "be brief",
                                                  "stream": False}).status_code == 200
            for model in ("tiny", "contract-brief"):
                http.post("/api/generate", json={"model": model, "keep_alive": 0,
                                                 "stream": False})
            _until_unloaded(http)
            for model in ("tiny", "contract-brief"):
                assert http.post("/api/generate", json={"model": model, "stream": False}
                                 ).status_code == 200
            listed = [m["name"] for m in http.get("/api/ps").json()["models"]]
            http.post("/api/generate", json={"model": "contract-brief", "keep_alive": 0,
                                             "stream": False})
            seen[side] = (listed, _until_unloaded(http))
            http.request("DELETE", "/api/delete", json={"model": "contract-brief"})
    assert seen["double"] == seen["real"] == (["tiny:latest"], [])


def _until_unloaded(http: httpx.Client, seconds: float = 30) -> list[str]:
    """What `/api/ps` lists once nothing is loaded, or after `seconds` (unloading takes a
    moment on the real server)."""
    deadline = time.monotonic() + seconds
    while True:
        listed = [m["name"] for m in http.get("/api/ps").json()["models"]]
        if not listed or time.monotonic() > deadline:
            return listed
        time.sleep(0.1)


def test_a_fresh_pull_streams_the_same_events(pair, real_server: RealOllama,
                                              registry: Registry,
                                              double: OllamaTestServer) -> None:
    """A model both sides lack, from each side's registry: manifest, (blob lines), verify,
    write, success; a blob that arrived between two ticks has no line on either side."""
    ref = real_server.publish("tiny", registry, "contract/tiny:latest")
    real_server.delete(ref)
    real_server.delete("tiny")  # its blobs go too: a fresh download
    double.remove("tiny")
    statuses = []
    # The double is its own registry.ollama.ai: a plain name comes from it.
    for side, model in (("real", ref), ("double", "tiny")):
        base, _ = pair[side]
        response = httpx.post(base + "/api/pull", json={"model": model, "insecure": True},
                              timeout=120)
        events = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        statuses.append([e.get("status") or e.get("error") for e in events
                         if "digest" not in e])
    assert statuses[0] == statuses[1] == ["pulling manifest", "verifying sha256 digest",
                                          "writing manifest", "success"]
