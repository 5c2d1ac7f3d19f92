"""Point Codex at an Ollama server: `configure_codex(request) -> CodexConfigResult`.

The one entry point for `config` and (later) `apply`. Steps: know the consumer (the
Codex release: flag, `codex --version`, else the newest behaviour) and the server
(its version decides the wire API), choose the form (forms), edit the files
(toml_edit, format-preserving and checked), write them safely (safe_file: lock,
backup, atomic), then ask the real Codex whether it loads the result and put the old
files back if this change is what broke it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from provision import interrupts, safe_file
from provision.clients._files import FileResult
from provision.clients.codex import cli as codex_cli
from provision.clients.codex.forms import (
    DEFAULT_PROFILE,
    FORM_SEED,
    Auth,
    Choice,
    CodexRelease,
    ConfigEdits,
    check_env_name,
    check_plain_name,
    choose,
    config_edits,
)
from provision.errors import EXIT_NOT_READY, EXIT_OK, ProvisionError, UsageError
from provision.names import parse_name
from provision.output import printable
from provision.server import OllamaServer, ServerAddress, ServerError, ServerFacts, resolve_host
from provision.toml_edit import (
    Op,
    SetKeys,
    decode,
    edit_text,
    get_table,
    loads,
    render_table,
    unified_diff,
)

FORMATS = ("auto", "codex", FORM_SEED)


@dataclass(frozen=True)
class CodexConfigRequest:
    model: str | None = None  # None: the profile's, else the server's only model
    host: str | None = None  # like --host; None: OLLAMA_HOST, else the default address
    server: OllamaServer | None = None  # the server (apply's: probed already); None: `host`
    output: Path | None = None  # a standalone file instead of $CODEX_HOME/config.toml
    format: str = "auto"  # auto: seed with output, codex otherwise
    codex_version: str | None = None  # None: detect `codex --version`
    profile: str = DEFAULT_PROFILE
    provider_id: str | None = None
    set_default: bool = False
    codex_home: Path | None = None  # None: $CODEX_HOME, else ~/.codex
    env_key: str | None = None  # NAME of the variable holding an API key
    env_http_headers: tuple[tuple[str, str], ...] = ()  # (header, variable NAME)
    dry_run: bool = False
    validate: bool = True  # ask the installed Codex whether it loads the result
    codex_bin: str | None = None  # None: `codex` on PATH
    environ: Mapping[str, str] | None = None
    model_coming: bool = False  # the caller (apply) pulls the model: no hint to pull it


@dataclass(frozen=True)
class Validation:
    # skipped: no codex, a dry run, another release; rolled-back: the old files are back
    status: Literal["ok", "fail", "skipped", "error", "rolled-back"]
    checks: tuple[codex_cli.CodexCheck, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class CodexTarget:
    version: str | None  # the release targeted; None: newest behaviour
    source: str  # "flag", "detected" or "newest"
    binary: str | None  # the codex found (for validation)
    installed_version: str | None


@dataclass(frozen=True)
class CodexConfigResult:
    files: tuple[FileResult, ...]
    form: str
    provider_id: str
    wire_api: str | None
    base_url: str | None
    reason: str  # why this form, in a phrase
    profile: str | None
    profile_style: str | None
    model: str | None
    codex: CodexTarget
    server: ServerFacts
    set_default: bool
    dry_run: bool
    ready: bool
    validation: Validation
    migrations: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return any(f.changed for f in self.files)

    @property
    def path(self) -> str:
        return self.files[0].path

    @property
    def backup(self) -> str | None:
        return next((f.backup for f in self.files if f.backup), None)

    @property
    def diff(self) -> str:
        return "".join(f.diff for f in self.files)

    @property
    def exit_code(self) -> int:
        broken = self.validation.status in ("fail", "rolled-back")
        return EXIT_NOT_READY if broken or not self.ready else EXIT_OK

    @property
    def usage(self) -> str:
        """How to use what was written."""
        if self.form == FORM_SEED:
            return ""
        if self.set_default:
            return "codex"
        return f"codex --profile {self.profile}"


@dataclass(frozen=True)
class _Pending:
    state: safe_file.FileState
    role: str
    old: str  # without a UTF-8 BOM (kept apart, written back as it was)
    new: str
    bom: bool = False
    # The profile file carrying the provider table it names too: written before config.toml
    # gets that table, so that each state in between works (see _writes).
    stage: str | None = None

    def encoded(self, text: str) -> bytes:
        return (BOM if self.bom else b"") + text.encode("utf-8")


BOM = b"\xef\xbb\xbf"


def configure_codex(request: CodexConfigRequest) -> CodexConfigResult:
    """Write (or, with dry_run, show) the Codex config for this server; see the module doc.

    Raises ProvisionError (UsageError, exit 2) for bad input, an invalid, non-UTF-8 or
    read-only file, a lock held too long; nothing is changed then. Everything else is
    in the result: `exit_code` is 1 when Codex refused the result (the old files are back)
    or when no form this Codex accepts works with this server (too old for it).
    """
    env = dict(os.environ if request.environ is None else request.environ)
    warnings: list[str] = []
    fmt = _format(request)
    check_plain_name(request.profile, "--profile")
    if request.provider_id is not None:
        check_plain_name(request.provider_id, "--provider-id")
    auth = _auth(request, env, warnings)
    model = None
    if request.model is not None:
        parse_name(request.model)  # an invalid name fails here, before anything is asked
        model = request.model.strip()  # written as given: Ollama resolves it the same way

    address = request.server.address if request.server else _address(request.host, env,
                                                                      warnings)
    with contextlib.ExitStack() as owned:
        ollama = request.server or owned.enter_context(OllamaServer(address, environ=env))
        return _configure(request, env, ollama, _probe(ollama, warnings), model, auth, fmt,
                          warnings)


def _configure(request: CodexConfigRequest, env: dict[str, str], ollama: OllamaServer,
               server: ServerFacts, model: str | None, auth: Auth, fmt: str,
               warnings: list[str]) -> CodexConfigResult:
    target = _codex_target(request, env, warnings)
    release = CodexRelease.parse(target.version)
    if not release.known:
        warnings.append(f"Codex {release.label} predates the releases this tool knows "
                        "(0.20 and later); writing what Codex 0.20-0.58 reads")
    choice = choose(release, server, fmt=fmt, provider_id=request.provider_id, auth=auth)

    home, config_path = _paths(request, env)
    if fmt == FORM_SEED and request.output is None and not release.honours_user_ollama:
        raise UsageError(
            f"Codex {release.label} does not read [model_providers.ollama] "
            + ("(a load error since 0.115)" if release.rejects_ollama_table
               else "(ignored since 0.59)") + f": not writing it into {config_path}",
            hint="leave out --format seed (the default writes what this Codex reads), or "
            "write the seed table elsewhere with --output FILE",
        )

    if request.dry_run:
        pending, plan = _prepare(choice, release, ollama, server, config_path, request,
                                 model, auth, fmt)
        files = tuple(_file_result(p, None, dry_run=True) for p in pending)
        for p in pending:
            if p.old != p.new and p.state.exists and not p.state.writable:
                warnings.append(f"{p.state.path} is read-only: a real run would refuse")
        validation = Validation("skipped", message="dry run")
    else:
        with safe_file.locked(config_path):
            pending, plan = _prepare(choice, release, ollama, server, config_path, request,
                                     model, auth, fmt)
            files, validation = _commit(pending, release, target, plan, request, home, env,
                                        fmt)
    if not request.model_coming and _model_missing(ollama, server, model or plan.model, fmt):
        shown = model or plan.model
        warnings.append(f"model {shown} is not on the server at {server.address.url} yet: "
                        f"pull it (ollama-provision pull {shown})")
    return CodexConfigResult(
        files=files, form=plan.choice.form, provider_id=plan.choice.provider_id,
        wire_api=plan.choice.wire_api, base_url=plan.choice.base_url,
        reason=plan.choice.reason, profile=plan.profile,
        profile_style=plan.profile_style, model=plan.model, codex=target, server=server,
        set_default=request.set_default and fmt != FORM_SEED, dry_run=request.dry_run,
        ready=plan.choice.ready, validation=validation, migrations=plan.migrations,
        warnings=tuple(warnings) + plan.choice.warnings + plan.warnings,
    )


# --- inputs ------------------------------------------------------------------------------


def _format(request: CodexConfigRequest) -> str:
    if request.format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
    if request.format == "auto":
        return FORM_SEED if request.output is not None else "codex"
    return request.format


def _auth(request: CodexConfigRequest, env: Mapping[str, str], warnings: list[str]) -> Auth:
    names = []
    if request.env_key is not None:
        names.append(check_env_name(request.env_key, "--env-key"))
    for _, name in request.env_http_headers:
        names.append(check_env_name(name, "--env-header"))
    for name in names:
        if not env.get(name):
            warnings.append(f"{name} is not set here; Codex reads the secret from it at run "
                            "time, so set it where Codex runs")
    return Auth(request.env_key, tuple(request.env_http_headers))


def _address(flag: str | None, env: dict[str, str], warnings: list[str]) -> ServerAddress:
    """The server; any `user:password@` in it is dropped by host resolution (never written)."""
    address = resolve_host(flag, env)
    warnings.extend(n for n in address.notes if "credentials" not in n)
    if address.had_credentials:
        warnings.append("the server address held credentials (user:password@): they were "
                        "left out of the config; use --env-key or --env-header instead")
    return address


def _probe(server: OllamaServer, warnings: list[str]) -> ServerFacts:
    facts = server.probe()
    if facts.diagnosis is not None:
        warnings.append(f"could not ask the server its version ({facts.diagnosis.message}); "
                        "assumed a current Ollama (>= 0.13.4): `ollama-provision check` says "
                        "what is wrong")
    return facts


def check_codex_version(text: str) -> str:
    """`--codex-version`: a release like 0.169.0, else an input error (exit 2)."""
    release = CodexRelease.parse(text)
    if release.version is None or len(text) > 40:
        shown = printable(text if len(text) <= 40 else text[:40] + "...")
        raise UsageError(f"--codex-version '{shown}' is not a Codex release like 0.169.0",
                         hint="`codex --version` prints it; leave the flag out to use the "
                         "installed Codex's")
    return release.label


def _codex_target(request: CodexConfigRequest, env: Mapping[str, str],
                  warnings: list[str]) -> CodexTarget:
    if request.codex_version is not None:
        check_codex_version(request.codex_version)  # before asking any codex
    binary = request.codex_bin or codex_cli.find_codex(env)
    installed = codex_cli.detect(binary, env) if (binary and (
        request.validate or request.codex_version is None)) else codex_cli.CodexInstall(binary)
    if installed.problem:
        warnings.append(installed.problem)
    if request.codex_version is not None:
        version = check_codex_version(request.codex_version)
        return CodexTarget(version, "flag", binary, installed.version)
    if installed.version:
        return CodexTarget(installed.version, "detected", binary, installed.version)
    return CodexTarget(None, "newest", binary, None)


def _paths(request: CodexConfigRequest, env: Mapping[str, str]) -> tuple[Path, Path]:
    if request.output is not None:
        output = Path(os.path.expanduser(str(request.output)))
        if output.is_dir():
            raise UsageError(f"--output {request.output} is a directory; give a file name")
        return output.parent, output
    if request.codex_home is not None:
        home = Path(os.path.expanduser(str(request.codex_home)))
    elif env.get("CODEX_HOME"):
        home = Path(os.path.expanduser(env["CODEX_HOME"]))
    else:
        home = Path(os.path.expanduser("~")) / ".codex"
    if home.exists() and not home.is_dir():
        raise UsageError(f"CODEX_HOME {home} is not a directory")
    return home, home / "config.toml"


# --- editing -----------------------------------------------------------------------------


def _read(path: Path) -> tuple[safe_file.FileState, str, dict[str, Any]]:
    """A file as text without its UTF-8 BOM, if any (Codex accepts one; it is kept)."""
    state = safe_file.read_state(path)
    raw = state.raw or b""
    text = decode(raw[len(BOM):] if raw.startswith(BOM) else raw, source=str(path))
    return state, text, loads(text, source=str(path))


def _prepare(
    choice: Choice, release: CodexRelease, ollama: OllamaServer, server: ServerFacts,
    config_path: Path, request: CodexConfigRequest, model: str | None, auth: Auth, fmt: str,
) -> tuple[list[_Pending], ConfigEdits]:
    config_state, config_text, config_data = _read(config_path)
    profile_path = config_path.parent / f"{request.profile}.config.toml"
    uses_file = (fmt != FORM_SEED and release.profile_files and not request.set_default)
    profile_read = _read(profile_path) if uses_file else None
    plan = config_edits(choice, release, server, config_data,
                        profile_read[2] if profile_read else None, model=model,
                        pick_model=lambda: servers_model(ollama, server),
                        profile=request.profile, set_default=request.set_default, auth=auth)
    role = "output" if request.output is not None else "config"
    config = _pending(config_state, role, config_text, plan.config_ops)
    pending = [config]
    if profile_read is not None and plan.profile_ops is not None:
        pending.append(_profile(profile_read, plan, config))
    return pending, plan


def _profile(read: tuple[safe_file.FileState, str, dict[str, Any]], plan: ConfigEdits,
             config: _Pending) -> _Pending:
    """The profile file's edit; when config.toml gets the provider table the profile names,
    also its first version, which carries a copy of that table (see _writes). A copy left by
    a run killed before the profile's second write is taken out again."""
    state, text, data = read
    table = ("model_providers", plan.choice.provider_id)
    named = next((op for op in plan.config_ops
                  if isinstance(op, SetKeys) and op.table == table), None)
    copy = "\n" + render_table(table, dict(named.values)) if named is not None else None
    if copy is not None and text.endswith(copy):
        text = text[: -len(copy)]
        data = loads(text, source=str(state.path))
    profile = _pending(state, "profile", text, plan.profile_ops)
    profile = replace(profile, old=read[1])
    if copy is None or config.new == config.old or profile.new == profile.old \
            or get_table(data, table) is not None:
        return profile
    stage = profile.new + ("" if profile.new.endswith("\n") else "\n") + copy
    return replace(profile, stage=stage)


def _pending(state: safe_file.FileState, role: str, text: str, ops: tuple[Op, ...]) -> _Pending:
    raw = state.raw or b""
    return _Pending(state, role, text, edit_text(text, ops, source=str(state.path)),
                    bom=raw.startswith(BOM))


def _writes(changes: list[_Pending]) -> list[tuple[_Pending, str]]:
    """The order of the writes, such that a run killed between any two leaves a config
    the real Codex loads and a `codex --profile NAME` that works (measured with Codex
    0.169: a profile naming a provider that is not defined fails with "Model provider not
    found"; without the profile file, `--profile NAME` silently runs Codex's default
    provider, OpenAI):

    1. NAME.config.toml, the profile, first, carrying the provider table it names: it
       works on its own, before config.toml has that table;
    2. config.toml, with the table (and any migration);
    3. the profile again, without its copy of the table (what stays).
    """
    profile = [p for p in changes if p.role == "profile"]
    config = [p for p in changes if p.role != "profile"]
    return [(p, p.stage or p.new) for p in profile] + [(p, p.new) for p in config] + \
        [(p, p.new) for p in profile if p.stage is not None]


def _file_result(p: _Pending, backup: Path | None, *, dry_run: bool) -> FileResult:
    if p.old == p.new and (p.state.exists or not p.new):  # an empty file is not written
        return FileResult(str(p.state.path), p.role, "unchanged")
    verb = "create" if not p.state.exists else "change"
    status = f"would-{verb}" if dry_run else f"{verb}d"
    return FileResult(str(p.state.path), p.role, status, str(backup) if backup else None,
                      unified_diff(p.old, p.new, label=str(p.state.path)))


def _commit(
    pending: list[_Pending], release: CodexRelease, target: CodexTarget, plan: ConfigEdits,
    request: CodexConfigRequest, home: Path, env: Mapping[str, str], fmt: str,
) -> tuple[tuple[FileResult, ...], Validation]:
    # A file that does not exist is created only to hold something: Codex needs no empty
    # config.toml beside a profile file.
    changes = [p for p in pending if p.old != p.new or (not p.state.exists and p.new)]
    for p in changes:
        if p.state.exists and not p.state.writable:
            raise UsageError(f"{p.state.path} is read-only: not changing it",
                             hint=f"make it writable (chmod u+w {p.state.path}) to let this "
                             "tool edit it, or write elsewhere with --output FILE")
    validator = _validator(release, target, plan, request, home, env, fmt)
    before = validator() if validator and changes else None
    for p in pending:  # what a killed run left behind (we hold the lock)
        safe_file.remove_stale_temps(p.state.real_path.parent, p.state.real_path.name)
    backups: dict[str, Path] = {}
    written: list[_Pending] = []
    try:
        # Ctrl-C, SIGTERM or SIGHUP in here take effect once every file is written.
        with interrupts.deferred():
            for p, text in _writes(changes):
                key = str(p.state.path)
                if p.state.exists and key not in backups:
                    backups[key] = safe_file.backup(p.state)
                safe_file.write_atomic(p.state, p.encoded(text))
                written.append(p)
    except ProvisionError:
        _put_back(written, best_effort=True)  # the disk filled up between two writes
        for made in backups.values():  # copies of files that stay as they were
            with contextlib.suppress(OSError):
                made.unlink()
        raise
    files = tuple(_file_result(p, backups.get(str(p.state.path)), dry_run=False)
                  for p in pending)
    if validator is None:
        return files, Validation("skipped", message=_skip_reason(target, request, fmt))
    after = validator()
    status = "ok" if all(v.status == "ok" for v in after) else (
        "error" if any(v.status == "error" for v in after) else "fail")
    failed = next((v for v in after if v.status != "ok"), None)
    message = failed.message if failed else "Codex loads the config"
    if status == "fail" and changes and before and all(v.status == "ok" for v in before):
        # It loaded before and not after: this change broke it. Put the old files back.
        _put_back(changes)
        files = tuple(FileResult(f.path, f.role, "unchanged", f.backup) for f in files)
        return files, Validation("rolled-back", tuple(after),
                                 f"Codex refused the new config ({message}); the previous "
                                 "files were put back")
    if status == "fail" and before and any(v.status != "ok" for v in before):
        message += " (it did not load before this change either)"
    return files, Validation(status, tuple(after), message)


def _put_back(changed: list[_Pending], *, best_effort: bool = False) -> None:
    """The files as they were: the profile first (it names what config.toml holds)."""
    for p in sorted(set(changed), key=lambda p: p.role != "profile"):
        try:
            if p.state.exists:
                safe_file.write_atomic(p.state, p.state.raw or b"")
            else:
                safe_file.remove_file(p.state)
        except ProvisionError:
            if not best_effort:
                raise


def _validator(
    release: CodexRelease, target: CodexTarget, plan: ConfigEdits, request: CodexConfigRequest,
    home: Path, env: Mapping[str, str], fmt: str,
) -> Any:
    if _skip_reason(target, request, fmt):
        return None
    binary = target.binary
    assert binary is not None

    def run() -> list[codex_cli.CodexCheck]:
        verdicts = [codex_cli.doctor(binary, home, env) if release.has_doctor
                    else codex_cli.load_check(binary, home, environ=env)]
        if plan.profile_style == "file" and plan.profile:
            verdicts.append(codex_cli.load_check(binary, home, profile=plan.profile,
                                                 environ=env))
        return verdicts

    return run


def _skip_reason(target: CodexTarget, request: CodexConfigRequest, fmt: str) -> str:
    if not request.validate:
        return "not asked (--no-validate)"
    if request.output is not None or fmt == FORM_SEED:
        return "a standalone file, not Codex's config"
    if target.binary is None:
        return "no codex on PATH"
    if target.installed_version is None:
        return "the installed codex did not say its version"
    if target.source == "flag" and target.version != target.installed_version:
        return (f"the installed Codex is {target.installed_version}, not the "
                f"--codex-version {target.version} written for")
    return ""


def servers_model(ollama: OllamaServer, server: ServerFacts) -> str:
    """No MODEL given and no profile naming one: the one model the server has that can
    chat (a model that only embeds is no model for Codex); else an input error (exit 2)
    that says what to name."""
    how = "name it: ollama-provision config MODEL"
    url = server.address.url
    if server.diagnosis is not None:
        raise UsageError(f"which model should Codex use? The server at {url} cannot tell: "
                         f"{server.diagnosis.message}", hint=how)
    try:
        names = [m.name for m in ollama.tags().models]
        chat = [n for n in names if not ((show := ollama.show(n)) and show.is_embedding)]
    except ServerError as exc:
        raise UsageError(f"which model should Codex use? The server at {url} cannot list "
                         f"its models: {exc.reason}", hint=how) from None
    if len(chat) == 1:
        return chat[0].short
    if not chat:
        raise UsageError(f"the server at {url} has no model for Codex yet",
                         hint=f"pull one first (ollama-provision pull MODEL), or {how}")
    raise UsageError(f"which model should Codex use? The server at {url} has {len(chat)}: "
                     f"{', '.join(sorted(n.short for n in chat))}", hint=how)


def _model_missing(ollama: OllamaServer, server: ServerFacts, model: str | None,
                   fmt: str) -> bool:
    if not server.reachable or model is None or fmt == FORM_SEED:
        return False
    try:
        inventory = ollama.tags()
    except ServerError:  # only a hint; `check` diagnoses the server
        return False
    return inventory.find(parse_name(model)) is None
