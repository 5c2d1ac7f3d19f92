"""The test double stands on its own: its model names follow Ollama's rules (the cases
of Ollama's own `types/model/name_test.go`), and nothing in it comes from the code
under test, so that a bug there cannot hide itself in the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
import pytest

from tests.double import InvalidName, OllamaTestServer, parse_name

DOUBLE = Path(__file__).resolve().parent / "double"
PART80 = "8" * 80
PART350 = "3" * 350


def test_no_module_of_the_double_imports_the_code_under_test() -> None:
    modules = sorted(DOUBLE.glob("*.py"))
    assert len(modules) > 10
    found = []
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [f"{path.name}:{node.lineno} {n}" for n in names
                      if n == "provision" or n.startswith("provision.")]
    assert found == []


@pytest.mark.parametrize(("text", "parts"), [
    ("registry.ollama.ai/library/dolphin-mistral:7b-v2.6-dpo-laser-q6_K",
     ("registry.ollama.ai", "library", "dolphin-mistral", "7b-v2.6-dpo-laser-q6_K")),
    ("scheme://host:port/namespace/model:tag", ("host:port", "namespace", "model", "tag")),
    ("host:port/namespace/model", ("host:port", "namespace", "model", "latest")),
    ("namespace/model", ("registry.ollama.ai", "namespace", "model", "latest")),
    ("model", ("registry.ollama.ai", "library", "model", "latest")),
    ("h/nn/mm:t", ("h", "nn", "mm", "t")),
    ("_why/_the/_lucky:_stiff", ("_why", "_the", "_lucky", "_stiff")),
    ("host:https/namespace/model:tag", ("host:https", "namespace", "model", "tag")),
    (f"{PART350}/{PART80}/{PART80}:{PART80}", (PART350, PART80, PART80, PART80)),
])
def test_names_split_into_ollamas_four_parts(text: str, parts: tuple[str, ...]) -> None:
    name = parse_name(text)
    assert (name.host, name.namespace, name.model, name.tag) == parts


@pytest.mark.parametrize("text", [
    "", "^", "mm:", "n/m:", "/nn/mm", "//", "//mm", "hh//", "//mm:@", "00@", "@", "m@d",
    "-hh/nn/mm:tt", "hh/-nn/mm:tt", "hh/nn/-mm:tt", "hh/nn/mm:-tt",
    "host/name:space/model:tag",  # a colon outside the host and the tag
    "na.me/model",  # a dot in the namespace
    f"{PART80}8/model", f"model:{PART80}8", f"{PART350}3/n/m:t",  # too long
    " tiny", "tiny ", "modèle",  # the server trims nothing and takes ASCII only
    "a/b/c/d:e",  # what is left of the host is `a/b`
])
def test_names_the_server_refuses(text: str) -> None:
    with pytest.raises(InvalidName):
        parse_name(text)


def test_spellings_of_one_model_share_a_key_and_show_the_shortest_form() -> None:
    spellings = ["llama3", "LLAMA3:latest", "registry.ollama.ai/library/llama3:LATEST",
                 "https://Registry.Ollama.AI/Library/Llama3"]
    assert len({parse_name(s).key for s in spellings}) == 1
    assert parse_name("llama3").short == "llama3:latest"
    assert parse_name("me/llama3:8b").short == "me/llama3:8b"
    assert parse_name("127.0.0.1:5000/library/tiny").short == "127.0.0.1:5000/library/tiny:latest"
    assert parse_name("x").full == "registry.ollama.ai/library/x:latest"


def test_the_double_answers_an_invalid_name_as_ollama_does() -> None:
    with OllamaTestServer(installed=["tiny"]) as srv:
        for body in ({"model": "na.me/tiny"}, {"model": "tiny:"}):
            answer = httpx.post(srv.url + "/api/pull", json=body)
            assert (answer.status_code, answer.json()) == (400, {"error": "invalid model name"})
        assert httpx.post(srv.url + "/api/show", json={"model": "TINY"}).status_code == 200
