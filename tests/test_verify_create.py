"""Verification against the running server, and custom models built on it."""

from __future__ import annotations

from provision.http import Timeouts
from provision.models import (
    CreateStatus,
    CustomModel,
    check_endpoint,
    ensure_custom_model,
    verify_model,
)
from provision.names import parse_name
from provision.server import OllamaServer, parse_host

GiB = 2**30


def server_for(srv):  # noqa: ANN001, ANN201 - test helper
    return OllamaServer(parse_host(srv.url), timeouts=Timeouts(read=30))


def test_model_on_gpu_reports_placement_and_speed(make_ollama) -> None:
    srv = make_ollama(installed=["llama3.2:1b"], vram=[8 * GiB])
    with server_for(srv) as server:
        result = verify_model(server, parse_name("llama3.2:1b"), num_ctx=4096)
    assert result.ok and result.loaded
    assert result.placement == "gpu"
    assert result.size_vram == result.size and result.size > 1 * GiB
    assert result.context_length == 4096
    assert result.tokens_per_second and result.tokens_per_second > 0
    assert result.eval_count


def test_model_too_big_for_the_gpu_runs_partly_on_cpu(make_ollama) -> None:
    srv = make_ollama(installed=["qwen2.5:14b"], vram=[4 * GiB], memory=32 * GiB)
    with server_for(srv) as server:
        result = verify_model(server, parse_name("qwen2.5:14b"), generate=False)
    assert result.ok and result.placement == "partial"
    assert 0 < (result.size_vram or 0) < (result.size or 0)
    assert result.tokens_per_second is None  # no generation asked


def test_model_that_does_not_fit_in_memory_fails_with_ollamas_reason(make_ollama) -> None:
    srv = make_ollama(installed=["llama3.1:70b"], vram=[], memory=16 * GiB)
    with server_for(srv) as server:
        result = verify_model(server, parse_name("llama3.1:70b"))
    assert not result.ok
    assert "requires more system memory" in (result.error or "")


def test_embedding_model_is_loaded_through_embed(make_ollama) -> None:
    srv = make_ollama(installed=["nomic-embed-text"])
    with server_for(srv) as server:
        result = verify_model(server, parse_name("nomic-embed-text"), embedding=True)
    assert result.ok and result.loaded
    assert srv.requests_to("/api/embed") and not srv.requests_to("/api/generate")


def test_codex_endpoint_exists_only_on_new_servers(make_ollama) -> None:
    name = parse_name("llama3.2:1b")
    new = make_ollama(installed=["llama3.2:1b"], version="0.13.5")
    old = make_ollama(installed=["llama3.2:1b"], version="0.12.9")
    with server_for(new) as server:
        assert check_endpoint(server, name, "responses").ok
    with server_for(old) as server:
        answer = check_endpoint(server, name, "responses")
        assert not answer.ok and answer.status == 404
        assert check_endpoint(server, name, "chat").ok


def test_custom_model_is_created_once(make_ollama) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    spec = CustomModel(name=parse_name("reviewer"), base=parse_name("llama3.2:1b"),
                       system="You review code.",
                       parameters=(("temperature", 0.2), ("num_ctx", 8192), ("stop", ["a", "b"])))
    with server_for(srv) as server:
        assert ensure_custom_model(server, spec).status == CreateStatus.CREATED
        assert "reviewer:latest" in srv.installed_names()
        assert ensure_custom_model(server, spec).status == CreateStatus.UNCHANGED
        assert len(srv.requests_to("/api/create")) == 1
        changed = CustomModel(name=spec.name, base=spec.base, system="You review tests.")
        assert ensure_custom_model(server, changed).status == CreateStatus.CREATED


def test_custom_model_from_an_unknown_base_fails_clearly(make_ollama) -> None:
    # A base that is merely not pulled yet is pulled by the server (as Ollama does);
    # one that exists nowhere fails with the server's reason.
    srv = make_ollama(installed=[])
    spec = CustomModel(name=parse_name("reviewer"), base=parse_name("no-such-model:1b"),
                       system="x")
    with server_for(srv) as server:
        outcome = ensure_custom_model(server, spec)
    assert outcome.status == CreateStatus.FAILED and outcome.error
    assert "reviewer:latest" not in srv.installed_names()
