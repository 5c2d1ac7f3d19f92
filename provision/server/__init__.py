"""The Ollama server: where it is, whether it answers (and why not), and its API.

`address` (where: `--host`, `OLLAMA_HOST`, the default) → `client` (`OllamaServer`, the
one type that speaks to it, typed answers from `api`) → `facts` / `diagnosis` (what is
known about it, and why it cannot be used) → `readiness` (what `check` concludes).
On this machine also: `local_install` (is Ollama installed), `start` (`ollama serve`)
and `models_dir` (where it keeps its models, and the room left there); those two are
imported from their modules where they are used, so that `check`, which needs neither,
starts without them.
"""

from __future__ import annotations

from provision.server.address import DEFAULT_PORT, ServerAddress, parse_host, resolve_host
from provision.server.api import (
    Generation,
    InstalledModel,
    Inventory,
    LoadedModel,
    ModelShow,
    count,
    parse_show,
    parse_tags,
)
from provision.server.client import FIRST_ANSWER_S, EndpointAnswer, OllamaServer, ServerError
from provision.server.facts import WORTH_WAITING, Diagnosis, DiagnosisKind, ServerFacts
from provision.server.local_install import LocalInstall, detect_install
from provision.server.readiness import ModelStatus, Readiness, check_readiness

__all__ = [
    "DEFAULT_PORT", "FIRST_ANSWER_S", "WORTH_WAITING", "Diagnosis", "DiagnosisKind",
    "EndpointAnswer", "Generation", "InstalledModel", "Inventory", "LoadedModel",
    "LocalInstall", "ModelShow", "ModelStatus", "OllamaServer", "Readiness", "ServerAddress",
    "ServerError", "ServerFacts", "check_readiness", "count", "detect_install", "parse_host",
    "parse_show", "parse_tags", "resolve_host",
]
