"""OpenAI-compatible tools: the OpenAI SDKs and everything built on them.

They read `OPENAI_BASE_URL` (Ollama answers the OpenAI API under `/v1`) and refuse to
start without some `OPENAI_API_KEY` ("Missing credentials"). Ollama ignores the key, so
a placeholder is set; a key already set here is a real one, and is kept (a clash), since
these tools would send it to this server.
"""

from __future__ import annotations

from provision.clients._base import EnvClient, EnvVar, same_url, server_url
from provision.server.address import ServerAddress

PLACEHOLDER_KEY = "ollama"  # any non-empty value: Ollama does not check it


def _variables(address: ServerAddress) -> tuple[EnvVar, ...]:
    return (EnvVar("OPENAI_BASE_URL", f"{server_url(address)}/v1", "openai", same_url),
            EnvVar("OPENAI_API_KEY", PLACEHOLDER_KEY, "openai"))


CLIENT = EnvClient(
    name="openai",
    summary="OPENAI_BASE_URL (.../v1) and a placeholder OPENAI_API_KEY: the OpenAI SDKs "
    "and OpenAI-compatible tools",
    variables=_variables,
)
