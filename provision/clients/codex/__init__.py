"""Codex CLI: a `model_providers` profile in $CODEX_HOME/config.toml, in the form the
installed Codex release reads. The default client of `config`; its flags and apply's
`[codex]` (or `[clients.codex]`) options drive `configure_codex`.

`cli` (the installed Codex: its release, and whether it loads a config) → `forms` (pure
decisions: which form this release reads for this server, and the edits) → `configure`
(the files read, edited, written safely, checked by the real Codex, put back if it
refuses them).
"""

from __future__ import annotations

from provision.clients._base import ConfigClient
from provision.clients.codex.configure import (
    CodexConfigRequest,
    CodexConfigResult,
    check_codex_version,
    configure_codex,
)
from provision.clients.codex.forms import CodexRelease, choose, parse_env_header

CLIENT = ConfigClient(
    name="codex",
    summary="Codex CLI: a profile in ~/.codex/config.toml (`codex --profile ollama`)",
)

__all__ = ["CLIENT", "CodexConfigRequest", "CodexConfigResult", "CodexRelease",
           "check_codex_version", "choose", "configure_codex", "parse_env_header"]
