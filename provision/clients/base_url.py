"""Tools that take the server as a whole base URL.

`OLLAMA_BASE_URL`: Open WebUI, g4f's gateway (g4f/api/domain_router.py, which prefers it
to OLLAMA_HOST). `OLLAMA_API_BASE`: LiteLLM (and so aider), and DB-GPT's default
`api_base` (`${env:OLLAMA_API_BASE:-http://localhost:11434}` in
dbgpt/model/proxy/llms/ollama.py) for a `proxy/ollama` model that names none.
"""

from __future__ import annotations

from provision.clients._base import EnvClient, EnvVar, same_url, server_url
from provision.server.address import ServerAddress


def _variables(address: ServerAddress) -> tuple[EnvVar, ...]:
    url = server_url(address)
    return (EnvVar("OLLAMA_BASE_URL", url, "base-url", same_url),
            EnvVar("OLLAMA_API_BASE", url, "base-url", same_url))


CLIENT = EnvClient(
    name="base-url",
    summary="OLLAMA_BASE_URL (Open WebUI, g4f's gateway), OLLAMA_API_BASE (LiteLLM, "
    "aider, DB-GPT's default api_base)",
    variables=_variables,
)
