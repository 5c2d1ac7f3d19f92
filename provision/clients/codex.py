"""Codex CLI: a `model_providers` profile in $CODEX_HOME/config.toml, in the form the
installed Codex release reads. The default client of `config`; its flags and apply's
`[codex]` (or `[clients.codex]`) options drive provision.configure."""

from __future__ import annotations

from provision.clients._base import ConfigClient

CLIENT = ConfigClient(
    name="codex",
    summary="Codex CLI: a profile in ~/.codex/config.toml (`codex --profile ollama`)",
)
