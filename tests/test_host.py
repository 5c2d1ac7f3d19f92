"""OLLAMA_HOST resolution: Ollama's own table (reference/ollama-api.md), row by row."""

from __future__ import annotations

import pytest

from provision.errors import UsageError
from provision.server.address import resolve_host

OLLAMA_TABLE = [
    ("", "http://127.0.0.1:11434"),
    ("1.2.3.4", "http://1.2.3.4:11434"),
    ("1.2.3.4:5678", "http://1.2.3.4:5678"),
    (":5678", "http://127.0.0.1:5678"),
    ("0.0.0.0", "http://127.0.0.1:11434"),
    ("[::]", "http://[::1]:11434"),
    ("[::1]:1337", "http://[::1]:1337"),
    ("::1", "http://[::1]:11434"),
    ("http://1.2.3.4", "http://1.2.3.4:80"),
    ("https://1.2.3.4", "https://1.2.3.4:443"),
    ("https://example.com/ollama", "https://example.com:443/ollama"),
    ('"1.2.3.4"', "http://1.2.3.4:11434"),
    (" 1.2.3.4 ", "http://1.2.3.4:11434"),
    ("'example.com:8080'", "http://example.com:8080"),
    ("example.com", "http://example.com:11434"),
    ("0.0.0.0:8080", "http://127.0.0.1:8080"),
]


@pytest.mark.parametrize(("value", "url"), OLLAMA_TABLE)
def test_ollama_host_table(value: str, url: str) -> None:
    assert resolve_host(environ={"OLLAMA_HOST": value}).url == url


def test_flag_wins_over_environment() -> None:
    address = resolve_host("10.0.0.5:9000", environ={"OLLAMA_HOST": "1.2.3.4"})
    assert address.url == "http://10.0.0.5:9000"
    assert address.source == "flag"
    assert "--host" in address.describe_source()


def test_default_when_nothing_is_set() -> None:
    address = resolve_host(environ={})
    assert (address.url, address.source, address.is_loopback) == (
        "http://127.0.0.1:11434", "default", True)


def test_listen_address_is_explained() -> None:
    address = resolve_host(environ={"OLLAMA_HOST": "0.0.0.0"})
    assert any("listen address" in note for note in address.notes)
    assert resolve_host(environ={"OLLAMA_HOST": "1.2.3.4"}).notes == ()


@pytest.mark.parametrize("value", ["1.2.3.4:99999", "1.2.3.4:0", "host:abc", "http://h:-1"])
def test_invalid_port_is_an_error_not_a_silent_fallback(value: str) -> None:
    with pytest.raises(UsageError) as info:
        resolve_host(environ={"OLLAMA_HOST": value})
    assert "invalid port" in info.value.message
    assert "11434" in (info.value.hint or "") or "80" in (info.value.hint or "")


def test_unknown_scheme_is_an_error() -> None:
    with pytest.raises(UsageError, match="unsupported scheme"):
        resolve_host("ftp://1.2.3.4")


@pytest.mark.parametrize(
    ("value", "loopback"),
    [("localhost:1", True), ("127.0.0.2", True), ("[::1]:1", True), ("10.0.0.1", False),
     ("example.com", False)],
)
def test_loopback_detection(value: str, loopback: bool) -> None:
    assert resolve_host(value).is_loopback is loopback


@pytest.mark.parametrize("value", ["host:1:2", "bad host", "a..b", "-x.com", "http://h%20x"])
def test_invalid_host_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError, match="not a valid host name"):
        resolve_host(environ={"OLLAMA_HOST": value})


def test_credentials_are_dropped_and_never_shown() -> None:
    address = resolve_host("http://bob:hunter2@ollama.lab:8080/api-root")
    assert address.url == "http://ollama.lab:8080/api-root"
    assert address.had_credentials
    assert "hunter2" not in address.raw + " ".join(address.notes) + address.describe_source()
