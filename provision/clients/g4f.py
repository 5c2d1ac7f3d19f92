"""g4f (gpt4free): its Ollama provider splits the address in two.

g4f/Provider/local/Ollama.py builds `http://{OLLAMA_HOST}:{OLLAMA_PORT}/v1` (older
releases always; 8.x only when OLLAMA_HOST has no port), so Ollama's own
`OLLAMA_HOST=127.0.0.1:11500` can give it `...:11500:11434`. It gets the host alone and
the port apart. For the default port that is also what Ollama reads; for any other port
Ollama would read `OLLAMA_HOST=127.0.0.1` as port 11434: the two forms conflict, and
`env` says so. Not printed unless asked for (`--client g4f`).
"""

from __future__ import annotations

from provision.clients._base import EnvClient, EnvVar
from provision.server.address import ServerAddress


def _split(address: ServerAddress) -> bool:
    """The host/port split reaches this server (every g4f release reads it)."""
    return address.scheme == "http" and not address.path and ":" not in address.host


def _variables(address: ServerAddress) -> tuple[EnvVar, ...]:
    # Not split: the whole URL, port included (g4f 8.x adds OLLAMA_PORT to a URL without).
    host = address.host if _split(address) else address.url
    return (EnvVar("OLLAMA_HOST", host, "g4f"),
            EnvVar("OLLAMA_PORT", str(address.port), "g4f"))


def _notes(address: ServerAddress) -> tuple[str, ...]:
    if _split(address):
        return ()
    return ("g4f: an https, IPv6 or path address is given whole in OLLAMA_HOST, which "
            "g4f 8.x reads; older g4f releases build http://HOST:PORT and cannot reach it",)


CLIENT = EnvClient(
    name="g4f",
    summary="OLLAMA_HOST (host only) and OLLAMA_PORT: g4f's Ollama provider",
    variables=_variables,
    default=False,
    notes=_notes,
)
