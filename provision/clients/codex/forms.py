"""Which Codex config form works for this Codex release and this server, and the edits.

Pure decisions, no I/O. The release boundaries were measured by running each Codex
release from npm against a logging server (../shared/reference/codex-config.md, plus
the profile and chat boundaries measured for this module); releases compare
numerically, and an unknown or unparseable version means the newest behaviour.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from provision.errors import UsageError
from provision.redact import looks_like_secret
from provision.server import DEFAULT_PORT, ServerAddress, ServerFacts, parse_host
from provision.toml_edit import DeleteTable, Op, RenameTable, SetKeys, get_table
from provision.versions import RESPONSES_API_MIN_OLLAMA, format_version, parse_version

Version = tuple[int, int, int]

# First release with each behaviour (the release before it had the old one).
BUILTIN_OLLAMA = (0, 59, 0)  # built-in `ollama`; a user [model_providers.ollama] is ignored
BUILTIN_RESPONSES = (0, 87, 0)  # built-in talks /v1/responses (0.80 chat; 0.81-0.86 unpublished)
CHAT_REJECTED = (0, 95, 0)  # `wire_api = "chat"` is a load error (0.94 still accepted it)
OLLAMA_ID_REJECTED = (0, 115, 0)  # `[model_providers.ollama]` is a load error (reserved id)
HAS_DOCTOR = (0, 131, 0)  # `codex doctor --json`
PROFILE_FILES = (0, 134, 0)  # `--profile X` reads $CODEX_HOME/X.config.toml, not [profiles.X]
OLDEST_KNOWN = (0, 20, 0)
NEWEST_KNOWN = (0, 169, 0)

OLLAMA_ID = "ollama"
RESERVED_IDS = frozenset({"openai", "ollama", "lmstudio"})  # Codex's built-ins (0.115+ refuses)
DEFAULT_PROFILE = "ollama"
PROVIDER_KEYS = ("name", "base_url", "wire_api")  # the seed table

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # Codex's rule for --profile; safe as a file name
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

FORM_SEED = "seed"  # [model_providers.ollama] alone, for other consumers
FORM_OLLAMA_TABLE = "ollama-table"  # [model_providers.ollama], honoured by Codex <= 0.58
FORM_BUILTIN = "builtin"  # Codex's built-in `ollama` provider, no table
FORM_CUSTOM = "custom"  # [model_providers.<id>] with base_url


@dataclass(frozen=True)
class CodexRelease:
    """What a Codex release does with its config (None: unknown, the newest behaviour)."""

    version: Version | None

    @classmethod
    def parse(cls, text: str | None) -> CodexRelease:
        return cls(parse_version(text))

    def _at_least(self, first: Version) -> bool:
        return self.version is None or self.version >= first

    @property
    def label(self) -> str:
        return format_version(self.version) if self.version else "newest"

    @property
    def honours_user_ollama(self) -> bool:
        return not self._at_least(BUILTIN_OLLAMA)

    @property
    def builtin_ollama(self) -> bool:
        return self._at_least(BUILTIN_OLLAMA)

    @property
    def builtin_wire_api(self) -> str:
        return "responses" if self._at_least(BUILTIN_RESPONSES) else "chat"

    @property
    def accepts_chat(self) -> bool:
        return not self._at_least(CHAT_REJECTED)

    @property
    def rejects_ollama_table(self) -> bool:
        return self._at_least(OLLAMA_ID_REJECTED)

    @property
    def has_doctor(self) -> bool:
        return self._at_least(HAS_DOCTOR)

    @property
    def profile_files(self) -> bool:
        return self._at_least(PROFILE_FILES)

    @property
    def known(self) -> bool:
        return self.version is None or self.version >= OLDEST_KNOWN


@dataclass(frozen=True)
class Auth:
    """Names of environment variables only: the secrets stay in the environment."""

    env_key: str | None = None
    env_http_headers: tuple[tuple[str, str], ...] = ()

    def keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {}
        if self.env_key:
            keys["env_key"] = self.env_key
        if self.env_http_headers:
            keys["env_http_headers"] = dict(self.env_http_headers)
        return keys

    def __bool__(self) -> bool:
        return bool(self.env_key or self.env_http_headers)


@dataclass(frozen=True)
class Choice:
    form: str
    provider_id: str
    wire_api: str | None  # None: the built-in decides
    base_url: str | None
    reason: str
    ready: bool = True  # False: no form this release accepts works with this server
    warnings: tuple[str, ...] = field(default=())


# --- inputs ------------------------------------------------------------------------------


def check_plain_name(value: str, what: str) -> str:
    if not _PLAIN_NAME.match(value):
        raise UsageError(f"{what} '{value}' must be a plain name: letters, digits, '-' and '_'",
                         hint="Codex accepts only such names (it makes a file name of a profile)")
    return value


def check_env_name(value: str, flag: str) -> str:
    """An environment variable's NAME; anything that looks like the secret itself (not a
    plausible name, a known token prefix, a long random-looking word) is refused, and
    never echoed."""
    if not _ENV_NAME.match(value) or looks_like_secret(value):
        raise UsageError(
            f"{flag} takes the NAME of an environment variable (like OLLAMA_API_KEY), not the "
            "secret itself; what was given looks like a secret: it was not written or shown",
            hint=f"export OLLAMA_API_KEY=... then pass {flag} OLLAMA_API_KEY",
        )
    return value


def parse_env_header(text: str) -> tuple[str, str]:
    """`HEADER=VAR`. Nothing of a malformed value is echoed: it may be the secret."""
    header, sep, name = text.partition("=")
    if not sep or not header.strip() or not re.match(r"^[A-Za-z0-9-]{1,100}$", header.strip()):
        raise UsageError("--env-header wants HEADER=ENV_VAR (like "
                         "X-Api-Key=OLLAMA_API_KEY); what was given was not written or shown")
    return header.strip(), check_env_name(name.strip(), "--env-header")


def default_provider_id(address: ServerAddress) -> str:
    """`ollama-<host>`, plus `-<port>` when the port is neither Ollama's nor the scheme's."""
    host = re.sub(r"[^a-z0-9_-]+", "-", address.host.lower()).strip("-") or "server"
    scheme_port = 443 if address.scheme == "https" else 80
    suffix = "" if address.port in (DEFAULT_PORT, scheme_port) else f"-{address.port}"
    return f"ollama-{host}{suffix}"


def base_url(address: ServerAddress) -> str:
    scheme_port = 443 if address.scheme == "https" else 80
    port = "" if address.port == scheme_port else f":{address.port}"
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{address.scheme}://{host}{port}{address.path}/v1"


def is_default_local(address: ServerAddress) -> bool:
    """Where Codex's built-in provider points: http://localhost:11434/v1."""
    return (address.scheme == "http" and address.is_loopback and address.port == DEFAULT_PORT
            and not address.path)


def address_of_base_url(url: Any) -> ServerAddress | None:
    if not isinstance(url, str) or not url.strip():
        return None
    text = re.sub(r"/v1/?$", "", url.strip())
    try:
        return parse_host(text, source="config")
    except UsageError:
        return None


# --- the choice --------------------------------------------------------------------------


def choose(
    release: CodexRelease,
    server: ServerFacts,
    *,
    fmt: str,
    provider_id: str | None = None,
    auth: Auth = Auth(),
) -> Choice:
    """The form this release honours for this server (see the README's table)."""
    address = server.address
    old = _old_server_note(server)
    if fmt == FORM_SEED or (release.honours_user_ollama and provider_id in (None, OLLAMA_ID)):
        wire = "responses" if server.responses_api else "chat"
        why = ("the seed's standalone table" if fmt == FORM_SEED
               else f"Codex {release.label} honours a user-defined [model_providers.ollama]")
        warnings = (old + "; wrote wire_api = \"chat\"",) if old else ()
        return Choice(FORM_SEED if fmt == FORM_SEED else FORM_OLLAMA_TABLE, OLLAMA_ID, wire,
                      base_url(address), why, True, warnings)
    local = is_default_local(address)
    if provider_id is None and release.builtin_ollama and local and not auth:
        if release.builtin_wire_api == "chat" or server.responses_api:
            return Choice(FORM_BUILTIN, OLLAMA_ID, None, None,
                          f"the server is at Codex {release.label}'s built-in `ollama` address "
                          "(http://localhost:11434/v1)")
        if not release.accepts_chat:
            return Choice(FORM_BUILTIN, OLLAMA_ID, None, None,
                          f"Codex {release.label}'s built-in `ollama` provider", ready=False,
                          warnings=(old + f"; Codex {release.label} refuses it: upgrade Ollama",))
    custom_id = provider_id or default_provider_id(address)
    if release.builtin_ollama and custom_id in RESERVED_IDS or custom_id == "openai":
        raise UsageError(f"--provider-id '{custom_id}' is a built-in provider of Codex "
                         f"{release.label}, which cannot be redefined",
                         hint="choose another id, like ollama-gpu1")
    if provider_id is not None:
        reason = f"--provider-id {provider_id}"
    elif not local:
        reason = (f"Codex {release.label}'s built-in `ollama` provider only reaches "
                  "http://localhost:11434")
    elif auth:
        reason = "the built-in `ollama` provider sends no credentials"
    else:  # the built-in checks /api/version and refuses an old server; chat still works
        reason = (f"Codex {release.label}'s built-in `ollama` provider refuses Ollama "
                  f"{server.version}; a provider of its own can still use chat")
    if server.responses_api:
        return Choice(FORM_CUSTOM, custom_id, "responses", base_url(address), reason)
    if release.accepts_chat:
        return Choice(FORM_CUSTOM, custom_id, "chat", base_url(address), reason,
                      warnings=(old + "; wrote wire_api = \"chat\", which this Codex still "
                                "accepts (newer releases refuse it)",))
    return Choice(FORM_CUSTOM, custom_id, "responses", base_url(address), reason, ready=False,
                  warnings=(old + f"; Codex {release.label} accepts only wire_api = "
                            "\"responses\": upgrade Ollama",))


def _old_server_note(server: ServerFacts) -> str:
    if server.responses_api:
        return ""
    return (f"Ollama {server.version} at {server.address.url} has no Responses API "
            f"(/v1/responses, Ollama >= {format_version(RESPONSES_API_MIN_OLLAMA)}), which "
            "current Codex needs")


# --- the edits ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigEdits:
    choice: Choice
    config_ops: tuple[Op, ...]
    profile_ops: tuple[Op, ...] | None  # None: no profile file to write
    profile: str | None  # the profile written (None with --set-default or the seed form)
    profile_style: str | None  # "file" ($CODEX_HOME/NAME.config.toml) or "table" ([profiles.NAME])
    model: str | None
    migrations: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def provider_keys(choice: Choice, address: ServerAddress, auth: Auth) -> dict[str, Any]:
    name = "Ollama" if choice.form != FORM_CUSTOM else f"Ollama ({address.netloc})"
    keys: dict[str, Any] = {"name": name, "base_url": choice.base_url,
                            "wire_api": choice.wire_api}
    keys.update(auth.keys())
    return keys


def config_edits(
    choice: Choice,
    release: CodexRelease,
    server: ServerFacts,
    config: Mapping[str, Any],
    profile_file: Mapping[str, Any] | None,
    *,
    model: str | None,
    pick_model: Callable[[], str],
    profile: str,
    set_default: bool,
    auth: Auth = Auth(),
) -> ConfigEdits:
    """The edits to config.toml (and NAME.config.toml) for this choice, migrations included.

    `config` / `profile_file`: what those files hold now (parsed; empty when missing).
    `model` None: the profile's model, else `pick_model()` (which may refuse: exit 2).
    """
    ops: list[Op] = []
    migrations: list[str] = []
    warnings: list[str] = []
    if choice.form == FORM_SEED:
        keys = provider_keys(choice, server.address, auth)
        ops.append(SetKeys.of(("model_providers", OLLAMA_ID), keys,
                              comment="Ollama (written by ollama-provision)"))
        return ConfigEdits(choice, tuple(ops), None, None, None, None)

    if release.builtin_ollama:
        choice = _migrate_ollama_table(choice, release, server, config, ops, migrations)
    elif choice.form == FORM_OLLAMA_TABLE:
        choice = _keep_users_ollama_table(choice, server, config)
    if choice.form != FORM_BUILTIN:
        keys = provider_keys(choice, server.address, auth)
        ops.append(SetKeys.of(("model_providers", choice.provider_id), keys,
                              comment=f"Ollama at {server.address.url} (written by "
                              "ollama-provision)"))

    legacy = get_table(config, ("profiles", profile))
    if set_default:
        # Keep a model only if it already is this provider's (never the user's OpenAI one).
        current = config.get("model") if config.get("model_provider") == choice.provider_id \
            else None
    elif release.profile_files:
        current = (profile_file or {}).get("model") or (legacy or {}).get("model")
    else:
        current = (legacy or {}).get("model")
    chosen_model = model or (current if isinstance(current, str) else None) or pick_model()
    wanted = {"model": chosen_model, "model_provider": choice.provider_id}

    if set_default:
        ops.append(SetKeys.of((), wanted))
        return ConfigEdits(choice, tuple(ops), None, None, None, chosen_model, tuple(migrations),
                    tuple(warnings))
    if not release.profile_files:
        ops.append(SetKeys.of(("profiles", profile), wanted,
                              comment=f"`codex --profile {profile}` uses Ollama (written by "
                              "ollama-provision)"))
        return ConfigEdits(choice, tuple(ops), None, profile, "table", chosen_model,
                    tuple(migrations), tuple(warnings))

    moved: dict[str, Any] = {}
    if legacy is not None:
        # Codex >= 0.134 refuses `--profile NAME` while config.toml has [profiles.NAME].
        ops.append(DeleteTable(("profiles", profile)))
        # The profile file wins where both set a key: it is what this Codex reads.
        moved = {k: v for k, v in legacy.items()
                 if k not in wanted and k not in (profile_file or {})}
        migrations.append(f"moved the legacy [profiles.{profile}] from config.toml to "
                          f"{profile}.config.toml (Codex {release.label} reads profiles there)")
    if config.get("profile") == profile:
        warnings.append(f"config.toml selects the legacy profile (profile = \"{profile}\"), "
                        f"which Codex {release.label} refuses: remove that line and use "
                        f"`codex --profile {profile}`")
    profile_op = SetKeys.of((), {**moved, **wanted}, comment=f"`codex --profile {profile}` "
                            "uses Ollama (written by ollama-provision)")
    return ConfigEdits(choice, tuple(ops), (profile_op,), profile, "file", chosen_model,
                tuple(migrations), tuple(warnings))


def _keep_users_ollama_table(choice: Choice, server: ServerFacts,
                             config: Mapping[str, Any]) -> Choice:
    """Codex <= 0.58 honours the user's own [model_providers.ollama]: when it names another
    server, it is theirs (maybe their default); this server gets an id of its own."""
    old = get_table(config, ("model_providers", OLLAMA_ID))
    if old is None:
        return choice
    old_address = address_of_base_url(old.get("base_url"))
    if old_address is None or old_address.url == server.address.url:
        return choice
    return replace(choice, form=FORM_CUSTOM, provider_id=default_provider_id(server.address),
                   reason="[model_providers.ollama] already names another server "
                   f"({old_address.url})")


def _migrate_ollama_table(
    choice: Choice,
    release: CodexRelease,
    server: ServerFacts,
    config: Mapping[str, Any],
    ops: list[Op],
    migrations: list[str],
) -> Choice:
    """A user-defined [model_providers.ollama] from an old setup: ignored since 0.59 (requests
    silently go to localhost), a load error since 0.115. Move it to an id of its own, with
    every key the user set, and point `model_provider = "ollama"` references at it; when it
    only named the built-in's own address, just remove it."""
    old = get_table(config, ("model_providers", OLLAMA_ID))
    if old is None:
        return choice
    old_address = address_of_base_url(old.get("base_url"))
    extras = {k: v for k, v in old.items() if k not in PROVIDER_KEYS}
    same_server = old_address is not None and old_address.url == server.address.url
    fate = "ignores it (requests go to localhost)" if not release.rejects_ollama_table else \
        "refuses to load it (`ollama` is a reserved built-in id)"
    if (old_address is None or is_default_local(old_address)) and not extras:
        ops.append(DeleteTable(("model_providers", OLLAMA_ID)))
        migrations.append(f"removed the old [model_providers.ollama]: Codex {release.label} "
                          f"{fate}; its built-in `ollama` provider serves the same address")
        return choice
    if same_server and choice.form == FORM_CUSTOM:
        target = choice.provider_id
    else:
        target = default_provider_id(old_address) if old_address else "ollama-old"
    existing = get_table(config, ("model_providers", target))
    if existing is None:
        ops.append(RenameTable(("model_providers", OLLAMA_ID), target))
    else:
        ops.append(DeleteTable(("model_providers", OLLAMA_ID)))
        carried = {k: v for k, v in old.items() if k not in existing}
        if carried:
            ops.append(SetKeys.of(("model_providers", target), carried))
    chat_note = ""
    if old.get("wire_api") == "chat" and not release.accepts_chat:
        ops.append(SetKeys.of(("model_providers", target), {"wire_api": "responses"}))
        chat_note = (f"; wire_api \"chat\" became \"responses\" (Codex {release.label} "
                     "refuses chat), which needs Ollama >= 0.13.4 there")
    for table in _references(config, OLLAMA_ID):
        ops.append(SetKeys.of(table, {"model_provider": target}))
    migrations.append(f"moved the old [model_providers.ollama] to [model_providers.{target}] "
                      f"with all its keys: Codex {release.label} {fate}; "
                      f"`model_provider = \"ollama\"` now says \"{target}\"{chat_note}")
    if same_server and choice.form == FORM_BUILTIN:
        # The user's own keys (headers, retries...) only work on a table of their own.
        choice = replace(choice, form=FORM_CUSTOM, provider_id=target,
                         wire_api="responses" if server.responses_api or not
                         release.accepts_chat else "chat",
                         base_url=base_url(server.address),
                         reason="keeps the settings of the old [model_providers.ollama]")
    return choice


def _references(config: Mapping[str, Any], provider: str) -> list[tuple[str, ...]]:
    tables: list[tuple[str, ...]] = []
    if config.get("model_provider") == provider:
        tables.append(())
    profiles = config.get("profiles")
    if isinstance(profiles, Mapping):
        for name, table in profiles.items():
            if isinstance(table, Mapping) and table.get("model_provider") == provider:
                tables.append(("profiles", name))
    return tables
