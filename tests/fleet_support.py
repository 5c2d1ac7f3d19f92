"""Helpers for the fleet tests: one test double as THE registry, others as hosts pulling
from it (`upstream=`), an inventory file naming them, and the command run in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provision.cli import main
from tests.double import OllamaTestServer, free_port

SMALL = "llama3.2:1b"
TINY = "qwen2.5:0.5b"


def closed_port_url() -> str:
    """A loopback URL where nothing listens (the port was just free)."""
    return f"http://127.0.0.1:{free_port()}"


class Fleet:
    def __init__(self, make_ollama: Callable[..., OllamaTestServer], tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.make_ollama = make_ollama
        self.tmp_path = tmp_path
        self.registry = make_ollama()
        monkeypatch.setenv("OLLAMA_PROVISION_REGISTRY", self.registry.url)

    def host(self, **kwargs: Any) -> OllamaTestServer:
        """A host whose pulls come from the fleet's registry double."""
        return self.make_ollama(upstream=self.registry, **kwargs)

    def inventory(self, hosts: dict[str, OllamaTestServer | str],
                  models: tuple[str, ...] = (SMALL,), extra: str = "",
                  host_extra: dict[str, str] | None = None) -> str:
        """Every host in one group `all` with `models`; `extra` is appended TOML."""
        lines = []
        for name, srv in hosts.items():
            url = srv if isinstance(srv, str) else srv.url
            lines += ["[[hosts]]", f'name = "{name}"', f'url = "{url}"',
                      (host_extra or {}).get(name, ""), ""]
        lines.append("[groups.all]")
        for model in models:
            lines += ["[[groups.all.models]]", f'name = "{model}"']
        path = self.tmp_path / "fleet.toml"
        path.write_text("\n".join(lines) + "\n" + extra)
        return str(path)


# Fixtures under other function names: a test module imports `fleet_fixture` (marked
# as an unused import for ruff) and its tests ask for `fleet`.


@pytest.fixture(name="fleet_env")
def fleet_env_fixture(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("OLLAMA_PROVISION_RETRY_BASE", "0")
    for var in ("OLLAMA_HOST", "FORCE_COLOR", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY",
                "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture(name="fleet")
def fleet_fixture(make_ollama: Callable[..., OllamaTestServer], tmp_path: Path,
                  fleet_env: pytest.MonkeyPatch) -> Fleet:
    return Fleet(make_ollama, tmp_path, fleet_env)


def run_fleet_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    code = main(["fleet", "--json", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def run_fleet_text(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["fleet", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def host(doc: dict, name: str) -> dict:
    return next(h for h in doc["hosts"] if h["name"] == name)


def model(host_doc: dict, name: str) -> dict:
    return next(m for m in host_doc["models"] if m["name"] == name)


def weights_on(srv: OllamaTestServer, name: str) -> str:
    """The weights digest the host really has (its /api/show FROM line)."""
    import httpx

    from provision.names import parse_name
    from provision.server import parse_show

    body = httpx.post(srv.url + "/api/show", json={"model": name}).json()
    digest = parse_show(parse_name(name), body).weights
    assert digest is not None
    return digest


def registry_weights(srv: OllamaTestServer, name: str) -> str:
    manifest = srv.manifest(name)
    return next(layer["digest"] for layer in manifest["layers"]
                if layer["mediaType"] == "application/vnd.ollama.image.model")


def pulls(srv: OllamaTestServer) -> list[str]:
    return [r.json.get("model") for r in srv.requests_to("/api/pull", "POST")]
