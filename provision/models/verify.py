"""Verify a model against the running server: does it load, where does it run, how fast?

Load it (an empty generation, or an embedding for a model that only embeds), read
`/api/ps` to see where it actually runs (`size_vram` vs `size`), run a short generation
and compute tokens/s from the server's own timings (eval_count / eval_duration). Also
the endpoint a client such as Codex will use: its answer must be the API's own object.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from provision.names import ModelName
from provision.server import LoadedModel, OllamaServer, ServerError

# Where the server runs a model: all on GPUs, partly, or on the CPU alone.
PlacedOn = Literal["gpu", "partial", "cpu"]


@dataclass(frozen=True)
class Verification:
    model: str
    ok: bool
    loaded: bool = False
    load_seconds: float | None = None
    size: int | None = None  # bytes in memory (/api/ps)
    size_vram: int | None = None
    placement: PlacedOn | None = None  # as the server placed it
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


def placement_of(size: int, size_vram: int) -> PlacedOn:
    if size_vram <= 0:
        return "cpu"
    return "gpu" if size_vram >= size else "partial"


def _options(num_ctx: int | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    options = dict(extra or {})
    if num_ctx:
        options["num_ctx"] = num_ctx
    return options


def _runner_of(server: OllamaServer, name: ModelName) -> LoadedModel | None:
    """Where the server runs `name`: its own `/api/ps` entry, else that of a model with
    the same weights file. Ollama (0.32) serves a model from a runner already loaded with
    its weights and options, and lists only the model that started it: a custom model
    verified after its base shows up as the base."""
    loaded = server.ps()
    own = next((m for m in loaded if m.name.key == name.key), None)
    if own is not None or not loaded:
        return own
    weights = _weights_file(server, name)
    if weights is None:
        return None
    return next((m for m in loaded if _weights_file(server, m.name) == weights), None)


def _weights_file(server: OllamaServer, name: ModelName) -> str | None:
    show = server.show(name)  # asked once per run (the client keeps it)
    return show.weights_file if show is not None else None


def verify_model(
    server: OllamaServer,
    name: ModelName,
    *,
    num_ctx: int | None = None,
    keep_alive: str | None = None,
    generate: bool = True,
    prompt: str = "Reply with one word: ready",
    num_predict: int = 16,
    embedding: bool = False,
) -> Verification:
    model = name.short
    started = time.monotonic()
    try:
        if embedding:
            server.embed(name, "ready", options=_options(num_ctx), keep_alive=keep_alive)
        else:
            server.load(name, options=_options(num_ctx), keep_alive=keep_alive)
    except ServerError as exc:
        return Verification(model=model, ok=False, error=exc.reason if not exc.connection
                            else f"loading failed: {exc.reason}")
    load_seconds = time.monotonic() - started
    size = size_vram = context_length = None
    placement = None
    try:
        entry = _runner_of(server, name)
    except ServerError:
        entry = None
    if entry is not None:
        size, size_vram = entry.size, entry.size_vram
        placement = placement_of(size, size_vram)
        context_length = entry.context_length
    loaded = Verification(model=model, ok=True, loaded=True, load_seconds=load_seconds,
                          size=size, size_vram=size_vram, placement=placement,
                          context_length=context_length)
    if not generate or embedding:
        return loaded
    try:
        generation = server.generate(name, prompt, keep_alive=keep_alive,
                                     options=_options(num_ctx, {"num_predict": num_predict}))
    except ServerError as exc:
        if exc.status == 200:
            return replace(loaded, ok=False, error="generation answered unreadable JSON")
        return replace(loaded, ok=False, error=f"generation failed: {exc.reason}")
    return replace(loaded, tokens_per_second=generation.tokens_per_second,
                   eval_count=generation.eval_count)


def check_endpoint(server: OllamaServer, model: ModelName, wire_api: str) -> EndpointCheck:
    """Ask the endpoint the client will use (`/v1/responses` or `/v1/chat/completions`)."""
    try:
        answer = server.client_endpoint(model, wire_api)
    except ServerError as exc:
        return EndpointCheck(path=exc.request.split(" ", 1)[-1], ok=False, status=None,
                             error=exc.reason)
    if answer.status != 200:
        return EndpointCheck(path=answer.path, ok=False, status=answer.status,
                             error=answer.error)
    # 200 alone proves nothing (a proxy's HTML page, a login portal): it must be the API's
    # own object, as the client will parse it.
    expected = "response" if wire_api == "responses" else "chat.completion"
    if answer.object != expected:
        return EndpointCheck(path=answer.path, ok=False, status=200,
                             error=f"answered 200 but not with a {expected} object "
                             f"(Content-Type: {answer.content_type})")
    return EndpointCheck(path=answer.path, ok=True, status=200)
