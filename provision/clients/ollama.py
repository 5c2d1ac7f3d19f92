"""The Ollama CLI and SDKs (ollama-python, ollama-js): `OLLAMA_HOST`, in Ollama's form.

They parse it as Ollama's envconfig does (ollama-python's `_parse_host`): `host`,
`host:port`, or a URL; no port means 11434. Written as short as Ollama reads it right:
`127.0.0.1` for the default port (the same value g4f's split form uses), `host:port`
otherwise, a URL for https or a path.
"""

from __future__ import annotations

from provision.clients._base import EnvClient, EnvVar
from provision.errors import UsageError
from provision.server.address import DEFAULT_PORT, ServerAddress, parse_host


def ollama_host(address: ServerAddress) -> str:
    if address.scheme == "http" and not address.path:
        host = address.netloc.rsplit(":", 1)[0]
        return host if address.port == DEFAULT_PORT else address.netloc
    return address.url


def _same_server(a: str, b: str) -> bool:
    """Two OLLAMA_HOST values Ollama reads as the same server (`:11434`, `127.0.0.1`)."""
    try:
        return parse_host(a).url == parse_host(b).url
    except UsageError:
        return False


def _variables(address: ServerAddress) -> tuple[EnvVar, ...]:
    return (EnvVar("OLLAMA_HOST", ollama_host(address), "ollama", _same_server),)


CLIENT = EnvClient(
    name="ollama",
    summary="OLLAMA_HOST: the ollama CLI, ollama-python, ollama-js",
    variables=_variables,
)
