"""Model names by Ollama's rules (types/model/name.go)."""

from __future__ import annotations

import pytest

from provision.errors import UsageError
from provision.names import parse_name, parse_names
from provision.server.api import parse_tags


@pytest.mark.parametrize(
    "text", ["llama3", "llama3:latest", "LLAMA3", "registry.ollama.ai/library/llama3:latest",
             "library/llama3", "Registry.Ollama.AI/Library/Llama3:LATEST"],
)
def test_spellings_of_one_model_are_the_same(text: str) -> None:
    assert parse_name(text).key == parse_name("llama3").key


def test_defaults_and_display() -> None:
    name = parse_name("llama3.2:1b")
    assert name.full == "registry.ollama.ai/library/llama3.2:1b"
    assert name.short == "llama3.2:1b"
    assert parse_name("myuser/mymodel").short == "myuser/mymodel:latest"
    hf = parse_name("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M")
    assert (hf.host, hf.namespace, hf.model, hf.tag) == (
        "hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M")
    assert hf.short == "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"


def test_host_with_port_is_not_a_tag() -> None:
    name = parse_name("127.0.0.1:5000/library/tiny")
    assert (name.host, name.tag) == ("127.0.0.1:5000", "latest")
    assert parse_name("http://127.0.0.1:5000/library/tiny:v1").host == "127.0.0.1:5000"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("llama3:", "empty tag"),
        ("-llama", "must start with"),
        ("llama 3", "may contain only"),
        ("my.ns/model", "namespace 'my.ns'"),
        ("a//b", "namespace part is empty"),
        ("model:t@g", "digest"),
        ("x" * 81, "longer than 80"),
        ("model:tag!", "the tag 'tag!'"),
    ],
)
def test_invalid_names_are_rejected_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_name(text)
    assert why in info.value.message


def test_parse_names_drops_duplicates_keeping_order() -> None:
    names = parse_names(["qwen2.5:14b", "llama3", "LLAMA3:latest", "qwen2.5:14B"])
    assert [n.short for n in names] == ["qwen2.5:14b", "llama3:latest"]


def test_inventory_matches_by_ollama_rules() -> None:
    inventory = parse_tags({"models": [
        {"name": "llama3:latest", "model": "llama3:latest", "size": 10, "digest": "ab",
         "details": {"quantization_level": "Q4_0", "parameter_size": "8.0B"}},
        {"name": "127.0.0.1:5000/library/tiny:latest",
         "model": "127.0.0.1:5000/library/tiny:latest", "size": 1, "digest": "cd"},
    ]})
    found = inventory.find(parse_name("registry.ollama.ai/library/LLAMA3"))
    assert found is not None and found.quantization == "Q4_0"
    assert inventory.find(parse_name("tiny")) is None  # another host's tiny is another model
    assert inventory.find(parse_name("127.0.0.1:5000/library/tiny")) is not None
    assert [n.short for n in inventory.missing([parse_name("llama3"), parse_name("x")])] == [
        "x:latest"]
