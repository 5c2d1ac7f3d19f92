"""The declarative config `apply` runs from (its manifest): TOML in, typed dataclasses out.

Every key is checked: an unknown key is an error (a typo must not silently do
nothing), and each error names the file, the key and what was expected. `[[models]]`,
`[pull]` and `[verify]` are the fleet inventory's too (provision.models.spec).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

from provision.clients import (
    CLIENT_OPTIONS,
    ENV_OPTIONS,
    ClientOptions,
    EnvOptions,
    config_clients,
    env_clients,
)
from provision.clients.codex.forms import check_plain_name
from provision.errors import UsageError
from provision.hardware import HARDWARE_KEYS, HardwareSpec
from provision.models.spec import (
    PULL_KEYS,
    VERIFY_KEYS,
    ModelSpec,
    PullSpec,
    VerifySpec,
    parse_models,
)
from provision.server import parse_host
from provision.tables import (
    SECONDS,
    Schema,
    check_name,
    did_you_mean,
    fail,
    fields,
    is_bool,
    is_str,
    load_sections,
    nonneg_number,
    positive_number,
)

BUILTIN_DEFAULT = "default.toml"  # shipped in provision/data/, same text as configs/default.toml


@dataclass(frozen=True)
class ServerSpec:
    host: str | None = None  # None: --host, else $OLLAMA_HOST, else the default
    wait: float = 30.0  # seconds to wait for a server that is starting
    # `wait` written in the user's own manifest: then apply waits also for a server that
    # is not installed here (one in a container); the built-in default's does not count
    wait_asked: bool = False
    start: bool = False  # start `ollama serve` when installed but not running
    connect_timeout: float = 3.0
    read_timeout: float = 30.0


@dataclass(frozen=True)
class CodexSpec:
    enabled: bool = True
    model: str | None = None  # default: the first required model
    profile: str = "ollama"
    set_default: bool = False
    codex_home: str | None = None  # default: $CODEX_HOME, else ~/.codex
    provider_id: str | None = None


@dataclass(frozen=True)
class ClientsSpec:
    """[clients]: what else to point at the server (Codex stays in `ApplyManifest.codex`)."""

    configs: tuple[tuple[str, ClientOptions], ...] = ()  # (config client, its options)
    env: EnvOptions | None = None  # None: no variables written


@dataclass(frozen=True)
class ApplyManifest:
    source: str  # the file it came from ("built-in default.toml" for the default)
    server: ServerSpec = ServerSpec()
    models: tuple[ModelSpec, ...] = ()
    pull: PullSpec = PullSpec()
    codex: CodexSpec = CodexSpec()
    verify: VerifySpec = VerifySpec()
    hardware: HardwareSpec = HardwareSpec()
    clients: ClientsSpec = ClientsSpec()


SERVER_KEYS: Schema = {
    "host": (is_str, "a string like 'http://127.0.0.1:11434'", "host"),
    "wait": (nonneg_number, "seconds (a number >= 0) up to 10,000,000", "wait"),
    "start": (is_bool, "true or false", "start"),
    "connect_timeout": (positive_number, SECONDS, "connect_timeout"),
    "read_timeout": (positive_number, SECONDS, "read_timeout"),
}
CODEX_KEYS: Schema = {
    "enabled": (is_bool, "true or false", "enabled"),
    "model": (is_str, "a model name", "model"),
    "profile": (is_str, "a profile name", "profile"),
    "set_default": (is_bool, "true or false", "set_default"),
    "codex_home": (is_str, "a directory path", "codex_home"),
    "provider_id": (is_str, "a provider id", "provider_id"),
}
_SECTIONS: dict[str, tuple[type, Schema]] = {
    "server": (ServerSpec, SERVER_KEYS), "pull": (PullSpec, PULL_KEYS),
    "codex": (CodexSpec, CODEX_KEYS), "verify": (VerifySpec, VERIFY_KEYS),
    "hardware": (HardwareSpec, HARDWARE_KEYS),
}
_TOP = {"models", "clients", *_SECTIONS}


def parse_manifest(text: str, source: str) -> ApplyManifest:
    data = load_sections(text, source, _TOP)
    models = parse_models(source, data.get("models", []))
    sections: dict[str, Any] = {
        name: cls(**fields(source, name, data[name], schema))
        for name, (cls, schema) in _SECTIONS.items() if name in data
    }
    if "server" in sections and "wait" in data["server"]:
        sections["server"] = replace(sections["server"], wait_asked=True)
    if "clients" in data:
        sections["codex"], sections["clients"] = _clients(source, data["clients"],
                                                          sections.get("codex"),
                                                          data.get("codex", {}))
    _check_values(source, sections)
    return ApplyManifest(source=source, models=models, **sections)


def _clients(source: str, table: Any, codex: CodexSpec | None,
             codex_table: Any) -> tuple[CodexSpec, ClientsSpec]:
    """[clients]: each key a client, `true`/`false` or a table of its options."""
    if not isinstance(table, dict):
        raise fail(source, "clients", "expected a table")
    known = {*config_clients(), "env"}
    configs: list[tuple[str, Any]] = []
    env = None
    for name, value in table.items():
        key = f"clients.{name}"
        if name not in known:
            raise fail(source, key, "unknown client" + did_you_mean(name, known)
                       + f"; known: {', '.join(sorted(known))} (env: the variables of "
                       f"{', '.join(env_clients())})")
        if not isinstance(value, (bool, dict)):
            raise fail(source, key, f"expected true, false or a table, got {value!r}")
        if name == "codex":
            codex = _codex_client(source, value, codex, codex_table)
        elif name == "env" and value is not False:
            values = fields(source, key, value if isinstance(value, dict) else {},
                            ENV_OPTIONS)
            for i, client in enumerate(values.get("clients", ())):
                if client not in env_clients():
                    raise fail(source, f"{key}.for[{i}]", f"unknown client '{client}'; "
                               f"known: {', '.join(env_clients())}")
            values["clients"] = tuple(dict.fromkeys(values.get("clients", ())))
            if values.get("format", "dotenv" if "file" in values else "github") != "github" \
                    and "file" not in values:
                raise fail(source, key, f"format '{values['format']}' needs a `file` to "
                           "write to")
            values.setdefault("format", "dotenv" if "file" in values else "github")
            env = EnvOptions(**values)
        elif value is not False:
            values = fields(source, key, value if isinstance(value, dict) else {},
                            CLIENT_OPTIONS)
            if "path" not in values:
                raise fail(source, key, "needs `path`, the tool's config file")
            for option in ("model", "embedding_model"):
                if option in values:
                    check_name(source, f"{key}.{option}", values[option])
            configs.append((name, ClientOptions(**values)))
    return codex or CodexSpec(), ClientsSpec(tuple(configs), env)


def _codex_client(source: str, value: bool | dict[str, Any], codex: CodexSpec | None,
                  codex_table: Any) -> CodexSpec:
    """[clients] codex = true / false / { ...[codex]'s keys }, agreeing with [codex]."""
    if isinstance(value, dict):
        if codex is not None:
            raise fail(source, "clients.codex", "Codex's options are in [codex] too: "
                       "keep them in one place")
        return CodexSpec(**fields(source, "clients.codex", value, CODEX_KEYS))
    said = codex_table.get("enabled") if isinstance(codex_table, dict) else None
    if said is not None and said != value:
        raise fail(source, "clients.codex", f"is {str(value).lower()} but [codex] enabled "
                   f"is {str(said).lower()}")
    return replace(codex or CodexSpec(), enabled=value)


def _check_values(source: str, sections: dict[str, Any]) -> None:
    """Values whose form is known up front: rejected at load time, not after downloads."""
    server, codex = sections.get("server"), sections.get("codex")
    if server is not None and server.host is not None:
        try:
            parse_host(server.host, source="flag")
        except UsageError as exc:
            raise fail(source, "server.host", exc.message.split(": ", 1)[-1]) from None
    if codex is None:
        return
    if codex.model is not None:
        check_name(source, "codex.model", codex.model)
    for key in ("profile", "provider_id"):
        value = getattr(codex, key)
        if value is not None:
            try:
                check_plain_name(value, key)
            except UsageError as exc:
                raise fail(source, f"codex.{key}", exc.message) from None


def load_manifest(path: str | None) -> ApplyManifest:
    """Read `-f FILE`, or the built-in default when no file is given. A `[pull] bundle`
    is relative to the file's folder (the built-in default's: the working directory)."""
    if path is None:
        text = files("provision").joinpath("data", BUILTIN_DEFAULT).read_text(encoding="utf-8")
        builtin = parse_manifest(text, f"built-in {BUILTIN_DEFAULT}")
        return replace(builtin, server=replace(builtin.server, wait_asked=False),
                       pull=builtin.pull.resolved(Path.cwd()))
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")  # a BOM, as Windows editors write, is fine
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    manifest = parse_manifest(text, path)
    return replace(manifest, pull=manifest.pull.resolved(file.parent.absolute()))
