"""DB-GPT: the models in its TOML config, served through its Ollama proxy.

From DB-GPT 0.8's sources: a chat model is a `[[models.llms]]` entry with
`provider = "proxy/ollama"`, `name` the Ollama model and `api_base` the server
(dbgpt/model/proxy/llms/ollama.py; default `${env:OLLAMA_API_BASE:-http://localhost:11434}`);
an embedding model is a `[[models.embeddings]]` entry with the same provider and `api_url`
(dbgpt_ext/rag/embeddings/ollama.py). DB-GPT uses `[models] default_llm` and
`default_embedding`, else the first entry of each. It reads the file named by
`dbgpt start webserver --config FILE`, which has no fixed place: FILE is always named.

Only this tool's entries change (the `proxy/ollama` entry of the model, or a new one);
every other byte of the file stays as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provision.clients._base import (
    ConfigClient,
    ConfigOutcome,
    ConfigRequest,
    server_url,
)
from provision.clients._files import edit_toml_file
from provision.errors import UsageError
from provision.names import parse_name
from provision.toml_edit import Op, SetArrayEntry, SetKeys, get_table

PROVIDER = "proxy/ollama"
LLMS, EMBEDDINGS = ("models", "llms"), ("models", "embeddings")
# What a diff of the DB-GPT file shows: the values this tool writes (the rest is "***").
SHOWN = ((LLMS, frozenset({"name", "provider", "api_base"})),
         (EMBEDDINGS, frozenset({"name", "provider", "api_url"})),
         (("models",), frozenset({"default_llm", "default_embedding"})))


def configure(request: ConfigRequest) -> ConfigOutcome:
    if not request.output:
        raise UsageError("DB-GPT reads the config file named by `dbgpt start webserver "
                         "--config FILE`; name it with --output FILE",
                         hint="an existing file is edited in place, everything else in it "
                         "kept; a missing one is created")
    if not request.model:
        raise UsageError("name the chat model for DB-GPT: "
                         "ollama-provision config --client dbgpt MODEL --output FILE")
    for name in (request.model, request.embedding_model):
        if name is not None:
            parse_name(name)  # an invalid name fails here, before anything is read
    url = server_url(request.address)
    wanted = (("chat", request.model.strip()),) + (
        (("embedding", request.embedding_model.strip()),) if request.embedding_model else ())

    def plan(data: dict[str, Any]) -> tuple[Op, ...]:
        ops: list[Op] = []
        for role, model in wanted:
            table, key = (LLMS, "api_base") if role == "chat" else (EMBEDDINGS, "api_url")
            name = _entry_name(data, table, model)
            ops.append(SetArrayEntry.of(table, {"name": name, "provider": PROVIDER},
                                        {key: url}))
        if request.set_default:
            ops.append(SetKeys.of(("models",), {
                "default_llm" if role == "chat" else "default_embedding":
                    _entry_name(data, LLMS if role == "chat" else EMBEDDINGS, model)
                for role, model in wanted}))
        return tuple(ops)

    result, after = edit_toml_file(Path(request.output), plan, dry_run=request.dry_run,
                                   role="output", shown=SHOWN)
    warnings = tuple(w for role, model in wanted
                     if (w := _not_default(after, role, model)) is not None)
    return ConfigOutcome("dbgpt", result, wanted,
                         f"dbgpt start webserver --config {result.path}", warnings,
                         request.dry_run)


def _entries(data: Mapping[str, Any], table: tuple[str, str]) -> list[Any]:
    entries = (get_table(data, table[:1]) or {}).get(table[1], [])
    return entries if isinstance(entries, list) else []


def _same_model(a: Any, b: str) -> bool:
    if not isinstance(a, str):
        return False
    try:
        return parse_name(a).key == parse_name(b).key
    except UsageError:
        return False


def _entry_name(data: Mapping[str, Any], table: tuple[str, str], model: str) -> str:
    """The model's name as the file already spells it (`tiny` and `tiny:latest` are one
    model to Ollama), so that its entry is updated rather than a second one added."""
    for entry in _entries(data, table):
        if isinstance(entry, dict) and entry.get("provider") == PROVIDER and \
                _same_model(entry.get("name"), model):
            return str(entry["name"])
    return model


def _not_default(data: Mapping[str, Any], role: str, model: str) -> str | None:
    table, key = (LLMS, "default_llm") if role == "chat" else (EMBEDDINGS, "default_embedding")
    models = get_table(data, ("models",)) or {}
    default = models.get(key)
    if default is None:
        first = next((e.get("name") for e in _entries(data, table) if isinstance(e, dict)),
                     None)
        default, source = first, f"the first [[{'.'.join(table)}]] entry"
    else:
        source = f"[models] {key}"
    if default is None or _same_model(default, model):
        return None
    return (f"DB-GPT's default {role} model is {default} ({source}), not {model}: "
            f"choose {model} in DB-GPT, or make it the default (--set-default; "
            "set_default = true in [clients.dbgpt])")


CLIENT = ConfigClient(
    name="dbgpt",
    summary="DB-GPT: [[models.llms]] / [[models.embeddings]] with provider proxy/ollama",
    configure=configure,
)
