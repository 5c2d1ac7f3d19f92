"""The declarative config `apply` runs from: TOML in, typed dataclasses out.

Every key is checked: an unknown key is an error (a typo must not silently do
nothing), and each error names the file, the key and what was expected.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from provision.errors import UsageError
from provision.names import parse_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

BUILTIN_DEFAULT = "default.toml"  # shipped in provision/data/, same text as configs/default.toml


@dataclass(frozen=True)
class ServerSpec:
    host: str | None = None  # None: --host, else $OLLAMA_HOST, else the default
    wait: float = 30.0  # seconds to wait for a server that is starting
    start: bool = False  # start `ollama serve` when installed but not running
    connect_timeout: float = 3.0
    read_timeout: float = 30.0


@dataclass(frozen=True)
class ModelSpec:
    name: str | None = None  # a model to pull, or the name of a custom model to create
    choose: tuple[str, ...] = ()  # candidates, best first: the first that fits is used
    num_ctx: int | None = None
    keep_alive: str | None = None
    required: bool = True
    base: str | None = None  # `from`: build a custom model on the server from this model
    system: str | None = None
    template: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def is_custom(self) -> bool:
        return self.base is not None


@dataclass(frozen=True)
class PullSpec:
    parallel: int = 1
    retries: int = 5
    stall_timeout: float = 60.0
    insecure: bool = False


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
    """[clients]: what else to point at the server (Codex stays in `Manifest.codex`)."""

    configs: tuple[tuple[str, Any], ...] = ()  # (config client, its ClientOptions)
    env: Any = None  # provision.clients._env.EnvOptions, or None: no variables written


@dataclass(frozen=True)
class VerifySpec:
    enabled: bool = True
    load: bool = True
    generate: bool = True
    prompt: str = "Reply with one word: ready"
    num_predict: int = 16
    min_tokens_per_second: float = 0.0


@dataclass(frozen=True)
class HardwareSpec:
    require_gpu: bool = False
    allow_cpu: bool = True


@dataclass(frozen=True)
class Manifest:
    source: str  # the file it came from ("built-in default.toml" for the default)
    server: ServerSpec = ServerSpec()
    models: tuple[ModelSpec, ...] = ()
    pull: PullSpec = PullSpec()
    codex: CodexSpec = CodexSpec()
    verify: VerifySpec = VerifySpec()
    hardware: HardwareSpec = HardwareSpec()
    clients: ClientsSpec = ClientsSpec()


# --- validation ---------------------------------------------------------------------------

Check = Callable[[Any], bool]


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


# Seconds (and rates) beyond this are typos that would overflow clocks and waits.
MAX_NUMBER = 10_000_000


def _nonneg_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= MAX_NUMBER


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= MAX_NUMBER


def _int_at_least(minimum: int) -> Check:
    return lambda v: (isinstance(v, int) and not isinstance(v, bool)
                      and minimum <= v <= 1_000_000_000)


def _is_name_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v)


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


_SECONDS = "seconds (a number > 0) up to 10,000,000"

# key -> (check, what is expected, dataclass field name)
_SECTIONS: dict[str, dict[str, tuple[Check, str, str]]] = {
    "server": {
        "host": (_is_str, "a string like 'http://127.0.0.1:11434'", "host"),
        "wait": (_nonneg_number, "seconds (a number >= 0) up to 10,000,000", "wait"),
        "start": (_is_bool, "true or false", "start"),
        "connect_timeout": (_positive_number, _SECONDS, "connect_timeout"),
        "read_timeout": (_positive_number, _SECONDS, "read_timeout"),
    },
    "pull": {
        "parallel": (_int_at_least(1), "an integer >= 1", "parallel"),
        "retries": (_int_at_least(0), "an integer >= 0", "retries"),
        "stall_timeout": (_positive_number, _SECONDS, "stall_timeout"),
        "insecure": (_is_bool, "true or false", "insecure"),
    },
    "codex": {
        "enabled": (_is_bool, "true or false", "enabled"),
        "model": (_is_str, "a model name", "model"),
        "profile": (_is_str, "a profile name", "profile"),
        "set_default": (_is_bool, "true or false", "set_default"),
        "codex_home": (_is_str, "a directory path", "codex_home"),
        "provider_id": (_is_str, "a provider id", "provider_id"),
    },
    "verify": {
        "enabled": (_is_bool, "true or false", "enabled"),
        "load": (_is_bool, "true or false", "load"),
        "generate": (_is_bool, "true or false", "generate"),
        "prompt": (_is_str, "a string", "prompt"),
        "num_predict": (_int_at_least(1), "an integer >= 1", "num_predict"),
        "min_tokens_per_second": (_nonneg_number, "a number >= 0", "min_tokens_per_second"),
    },
    "hardware": {
        "require_gpu": (_is_bool, "true or false", "require_gpu"),
        "allow_cpu": (_is_bool, "true or false", "allow_cpu"),
    },
}
_MODEL_KEYS: dict[str, tuple[Check, str, str]] = {
    "name": (_is_str, "a model name like 'llama3.2:3b'", "name"),
    "choose": (_is_name_list, "a non-empty list of model names, best first", "choose"),
    "num_ctx": (_int_at_least(256), "an integer >= 256 (tokens)", "num_ctx"),
    "keep_alive": (lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),
                   "a duration like '30m' or seconds", "keep_alive"),
    "required": (_is_bool, "true or false", "required"),
    "from": (_is_str, "the model a custom model is built from", "base"),
    "system": (_is_str, "a string", "system"),
    "template": (_is_str, "a string", "template"),
    "parameters": (_is_table, "a table of Modelfile parameters", "parameters"),
}
_TOP = {"server", "models", "pull", "codex", "verify", "hardware", "clients"}


def _shown(value: Any) -> str:
    """A wrong value quoted in an error: one short line, whatever its size."""
    from provision.output import printable

    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else \
        f"a number of {len(str(abs(value)))} digits"
    return printable(text if len(text) <= 80 else text[:80] + "...")


def _fail(source: str, key: str, message: str) -> UsageError:
    return UsageError(f"{source}: {key}: {message}")


def _did_you_mean(key: str, known: set[str] | dict[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _fields(source: str, prefix: str, table: Any,
            schema: dict[str, tuple[Check, str, str]]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise _fail(source, prefix, "expected a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in schema:
            raise _fail(source, f"{prefix}.{key}",
                        "unknown key" + _did_you_mean(key, schema)
                        + f"; allowed: {', '.join(schema)}")
        check, expected, attr = schema[key]
        if not check(value):
            raise _fail(source, f"{prefix}.{key}", f"expected {expected}, got {_shown(value)}")
        values[attr] = tuple(value) if key == "choose" else value
    return values


def _model(source: str, index: int, table: Any, *, within: str = "") -> ModelSpec:
    # `within`: where the [[models]] array sits ("groups.gpu." in a fleet inventory), so
    # that errors name the exact key.
    prefix = f"{within}models[{index}]"
    values = _fields(source, prefix, table, _MODEL_KEYS)
    if "keep_alive" in values:
        values["keep_alive"] = str(values["keep_alive"])
    has_name, has_choose = "name" in values, "choose" in values
    if has_name == has_choose:
        raise _fail(source, prefix, "give exactly one of 'name' (a model) or 'choose' "
                    "(candidates, best first)")
    if has_choose and "base" in values:
        raise _fail(source, prefix, "'choose' cannot be combined with 'from'")
    custom_only = {"system", "template", "parameters"} & set(values)
    if custom_only and "base" not in values:
        raise _fail(source, f"{prefix}.{sorted(custom_only)[0]}",
                    "only a custom model (with 'from') takes system/template/parameters")
    for key in ("name", "base"):
        if key in values:
            _check_name(source, f"{prefix}.{'from' if key == 'base' else key}", values[key])
    for i, candidate in enumerate(values.get("choose", ())):
        _check_name(source, f"{prefix}.choose[{i}]", candidate)
    return ModelSpec(**values)


def _check_name(source: str, key: str, text: str) -> None:
    try:
        parse_name(text)
    except UsageError as exc:
        raise _fail(source, key, exc.message) from None


def load_sections(text: str, source: str, allowed: set[str]) -> dict[str, Any]:
    """Parse TOML whose top level may hold only the `allowed` sections (manifest, inventory)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: invalid TOML: {exc}") from None
    for key in data:
        if key not in allowed:
            raise _fail(source, key, "unknown section" + _did_you_mean(key, allowed)
                        + f"; allowed: {', '.join(sorted(allowed))}")
    return data


def parse_manifest(text: str, source: str) -> Manifest:
    data = load_sections(text, source, _TOP)
    models_raw = data.get("models", [])
    if not isinstance(models_raw, list):
        raise _fail(source, "models", "expected [[models]] tables")
    models = tuple(_model(source, i, m) for i, m in enumerate(models_raw))
    custom = {parse_name(m.name).key for m in models if m.is_custom and m.name}
    plain = [m for m in models if not m.is_custom and m.name]
    for m in plain:
        if parse_name(m.name or "").key in custom:
            raise _fail(source, "models", f"'{m.name}' is declared both as a custom model "
                        "and as a model to pull")
    _check_cycles(source, models)
    sections = {
        name: cls(**_fields(source, name, data[name], _SECTIONS[name]))
        for name, cls in (("server", ServerSpec), ("pull", PullSpec), ("codex", CodexSpec),
                          ("verify", VerifySpec), ("hardware", HardwareSpec))
        if name in data
    }
    if "clients" in data:
        sections["codex"], sections["clients"] = _clients(source, data["clients"],
                                                          sections.get("codex"),
                                                          data.get("codex", {}))
    _check_values(source, sections)
    return Manifest(source=source, models=models, **sections)


def _check_cycles(source: str, models: tuple[ModelSpec, ...]) -> None:
    """A custom model built `from` itself, or custom models built from each other in a
    circle, can never be created: named here, before anything is asked of a registry."""
    base_of = {parse_name(m.name).key: (i, m) for i, m in enumerate(models)
               if m.is_custom and m.name}
    for key, (index, spec) in base_of.items():
        chain = [spec.name or ""]
        seen = {key}
        current = spec
        while current.base is not None:
            step = parse_name(current.base).key
            if step not in base_of:
                break  # ends at a model to pull: fine
            chain.append(current.base)
            if step in seen:
                raise _fail(source, f"models[{index}].from",
                            "custom models built from each other in a circle: "
                            + " -> ".join(chain) if len(chain) > 2 else
                            f"the custom model '{spec.name}' is built from itself")
            seen.add(step)
            current = base_of[step][1]


def _clients(source: str, table: Any, codex: CodexSpec | None,
             codex_table: Any) -> tuple[CodexSpec, ClientsSpec]:
    """[clients]: each key a client, `true`/`false` or a table of its options."""
    from provision.clients import config_clients, env_clients
    from provision.clients._base import CLIENT_OPTIONS, ClientOptions
    from provision.clients._env import ENV_OPTIONS, EnvOptions

    if not isinstance(table, dict):
        raise _fail(source, "clients", "expected a table")
    known = {*config_clients(), "env"}
    configs: list[tuple[str, Any]] = []
    env = None
    for name, value in table.items():
        key = f"clients.{name}"
        if name not in known:
            raise _fail(source, key, "unknown client" + _did_you_mean(name, known)
                        + f"; known: {', '.join(sorted(known))} (env: the variables of "
                        f"{', '.join(env_clients())})")
        if not isinstance(value, (bool, dict)):
            raise _fail(source, key, f"expected true, false or a table, got {value!r}")
        if name == "codex":
            codex = _codex_client(source, value, codex, codex_table)
        elif name == "env" and value is not False:
            values = _fields(source, key, value if isinstance(value, dict) else {},
                             ENV_OPTIONS)
            for i, client in enumerate(values.get("clients", ())):
                if client not in env_clients():
                    raise _fail(source, f"{key}.for[{i}]", f"unknown client '{client}'; "
                                f"known: {', '.join(env_clients())}")
            values["clients"] = tuple(dict.fromkeys(values.get("clients", ())))
            if values.get("format", "dotenv" if "file" in values else "github") != "github" \
                    and "file" not in values:
                raise _fail(source, key, f"format '{values['format']}' needs a `file` to "
                            "write to")
            values.setdefault("format", "dotenv" if "file" in values else "github")
            env = EnvOptions(**values)
        elif value is not False:
            values = _fields(source, key, value if isinstance(value, dict) else {},
                             CLIENT_OPTIONS)
            if "path" not in values:
                raise _fail(source, key, "needs `path`, the tool's config file")
            for option in ("model", "embedding_model"):
                if option in values:
                    _check_name(source, f"{key}.{option}", values[option])
            configs.append((name, ClientOptions(**values)))
    return codex or CodexSpec(), ClientsSpec(tuple(configs), env)


def _codex_client(source: str, value: bool | dict[str, Any], codex: CodexSpec | None,
                  codex_table: Any) -> CodexSpec:
    """[clients] codex = true / false / { ...[codex]'s keys }, agreeing with [codex]."""
    if isinstance(value, dict):
        if codex is not None:
            raise _fail(source, "clients.codex", "Codex's options are in [codex] too: "
                        "keep them in one place")
        return CodexSpec(**_fields(source, "clients.codex", value, _SECTIONS["codex"]))
    said = codex_table.get("enabled") if isinstance(codex_table, dict) else None
    if said is not None and said != value:
        raise _fail(source, "clients.codex", f"is {str(value).lower()} but [codex] enabled "
                    f"is {str(said).lower()}")
    return replace(codex or CodexSpec(), enabled=value)


def _check_values(source: str, sections: dict[str, Any]) -> None:
    """Values whose form is known up front: rejected at load time, not after downloads."""
    from provision.codex_config import check_plain_name
    from provision.host import parse_host

    server, codex = sections.get("server"), sections.get("codex")
    if server is not None and server.host is not None:
        try:
            parse_host(server.host, source="flag")
        except UsageError as exc:
            raise _fail(source, "server.host", exc.message.split(": ", 1)[-1]) from None
    if codex is None:
        return
    if codex.model is not None:
        _check_name(source, "codex.model", codex.model)
    for key in ("profile", "provider_id"):
        value = getattr(codex, key)
        if value is not None:
            try:
                check_plain_name(value, key)
            except UsageError as exc:
                raise _fail(source, f"codex.{key}", exc.message) from None


def load_manifest(path: str | None) -> Manifest:
    """Read `-f FILE`, or the built-in default when no file is given."""
    if path is None:
        from importlib.resources import files

        text = files("provision").joinpath("data", BUILTIN_DEFAULT).read_text(encoding="utf-8")
        return parse_manifest(text, f"built-in {BUILTIN_DEFAULT}")
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")  # a BOM, as Windows editors write, is fine
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    return parse_manifest(text, path)
