"""Verify a model against the running server: does it load, where does it run, how fast?

Load (`/api/generate` without a prompt, or `/api/embed` for embedding models), read
`/api/ps` to see where it actually runs (`size_vram` vs `size`), run a short generation
and compute tokens/s from the server's own timings (eval_count / eval_duration).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provision.http import error_text, json_body
from provision.inventory import count
from provision.names import ModelName

if TYPE_CHECKING:
    import httpx

GPU, PARTIAL, CPU = "gpu", "partial", "cpu"


@dataclass(frozen=True)
class Verification:
    model: str
    ok: bool
    loaded: bool = False
    load_seconds: float | None = None
    size: int | None = None  # bytes in memory (/api/ps)
    size_vram: int | None = None
    placement: str | None = None  # gpu / partial / cpu, as the server placed it
    context_length: int | None = None
    tokens_per_second: float | None = None
    eval_count: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class EndpointCheck:
    path: str
    ok: bool
    status: int | None
    error: str | None = None


def placement_of(size: int, size_vram: int) -> str:
    if size_vram <= 0:
        return CPU
    return GPU if size_vram >= size else PARTIAL


def _options(num_ctx: int | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    options = dict(extra or {})
    if num_ctx:
        options["num_ctx"] = num_ctx
    return options


def verify_model(
    http: httpx.Client,
    name: ModelName,
    *,
    num_ctx: int | None = None,
    keep_alive: str | None = None,
    generate: bool = True,
    prompt: str = "Reply with one word: ready",
    num_predict: int = 16,
    embedding: bool = False,
) -> Verification:
    import httpx

    model = name.short
    body: dict[str, Any] = {"model": model}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    options = _options(num_ctx)
    if options:
        body["options"] = options
    started = time.monotonic()
    try:
        if embedding:
            response = http.post("/api/embed", json={**body, "input": "ready"})
        else:
            response = http.post("/api/generate", json={**body, "stream": False})
    except httpx.HTTPError as exc:
        return Verification(model=model, ok=False, error=f"loading failed: {exc}")
    if response.status_code != 200:
        return Verification(model=model, ok=False, error=error_text(response))
    load_seconds = time.monotonic() - started
    size = size_vram = context_length = None
    placement = None
    try:
        body = json_body(http.get("/api/ps"))
        ps = body.get("models") if isinstance(body, dict) else None
        entry = next((m for m in ps if isinstance(m, dict) and _same(m, name)), None) \
            if isinstance(ps, list) else None
        if entry is not None:
            size, size_vram = count(entry.get("size")), count(entry.get("size_vram"))
            placement = placement_of(size, size_vram)
            context_length = count(entry.get("context_length")) or None
    except (httpx.HTTPError, ValueError):
        pass
    loaded = Verification(model=model, ok=True, loaded=True, load_seconds=load_seconds,
                          size=size, size_vram=size_vram, placement=placement,
                          context_length=context_length)
    if not generate or embedding:
        return loaded
    request = {"model": model, "prompt": prompt, "stream": False,
               "options": _options(num_ctx, {"num_predict": num_predict})}
    if keep_alive is not None:
        request["keep_alive"] = keep_alive
    try:
        response = http.post("/api/generate", json=request)
    except httpx.HTTPError as exc:
        return _replace(loaded, ok=False, error=f"generation failed: {exc}")
    if response.status_code != 200:
        return _replace(loaded, ok=False, error=f"generation failed: {error_text(response)}")
    try:
        data = json_body(response)
    except (ValueError, httpx.HTTPError):
        data = None
    if not isinstance(data, dict):
        return _replace(loaded, ok=False, error="generation answered unreadable JSON")
    eval_count, eval_duration = count(data.get("eval_count")), count(data.get("eval_duration"))
    rate = eval_count / eval_duration * 1e9 if eval_count and eval_duration else None
    return _replace(loaded, tokens_per_second=rate, eval_count=eval_count)


def _replace(v: Verification, **changes: Any) -> Verification:
    from dataclasses import replace

    return replace(v, **changes)


def _same(entry: dict[str, Any], name: ModelName) -> bool:
    from provision.errors import ProvisionError
    from provision.names import parse_name

    try:
        return parse_name(str(entry.get("model") or entry.get("name"))[:500]).key == name.key
    except ProvisionError:  # a name we cannot parse is simply not this one
        return False


def check_endpoint(http: httpx.Client, model: ModelName, wire_api: str) -> EndpointCheck:
    """Ask the endpoint the client will use (`/v1/responses` or `/v1/chat/completions`)."""
    import httpx

    if wire_api == "responses":
        path = "/v1/responses"
        body: dict[str, Any] = {"model": model.short, "input": "ping", "max_output_tokens": 4}
    else:
        path = "/v1/chat/completions"
        body = {"model": model.short, "max_tokens": 4,
                "messages": [{"role": "user", "content": "ping"}]}
    try:
        response = http.post(path, json=body)
    except httpx.HTTPError as exc:
        return EndpointCheck(path=path, ok=False, status=None, error=str(exc))
    if response.status_code != 200:
        return EndpointCheck(path=path, ok=False, status=response.status_code,
                             error=error_text(response)[:200])
    # 200 alone proves nothing (a proxy's HTML page, a login portal): it must be the API's
    # own object, as the client will parse it.
    expected = "response" if wire_api == "responses" else "chat.completion"
    try:
        answer = json_body(response)
    except ValueError:
        answer = None
    kind = answer.get("object") if isinstance(answer, dict) else None
    if kind != expected:
        what = response.headers.get("content-type", "?").split(";")[0][:60]
        return EndpointCheck(path=path, ok=False, status=200,
                             error=f"answered 200 but not with a {expected} object "
                             f"(Content-Type: {what})")
    return EndpointCheck(path=path, ok=True, status=200)
