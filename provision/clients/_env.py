"""`env`: the variables the chosen clients read, checked against each other and against
the environment they go into, then written in one format.

Nothing is silently overwritten: two clients wanting different values for one name is an
input error (the user chooses), and a variable already set here to something else is
kept and reported (`override` replaces it). Values already set are never shown when the
name looks secret, and URLs lose any `user:password@`.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from provision.clients._base import EnvClient, EnvVar
from provision.errors import EXIT_NOT_READY, EXIT_OK, UsageError
from provision.result import CommandResult
from provision.server import ServerAddress
from provision.tables import Schema, is_bool, is_name_list, is_text

FORMATS = ("sh", "dotenv", "json", "github")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
_PLAIN = re.compile(r"^[A-Za-z0-9_./:@\[\]%+,=-]*$")


@dataclass(frozen=True)
class EnvOptions:
    """[clients.env] in apply's manifest."""

    clients: tuple[str, ...] = ()  # `for`: the env clients; () means the default ones
    format: str = "github"  # github: $GITHUB_ENV; else written to `file`
    file: str | None = None  # the file to write (a file of this tool's own)
    override: bool = False


ENV_OPTIONS: Schema = {
    "for": (is_name_list, "a list of clients, e.g. ['ollama', 'openai']", "clients"),
    "format": (lambda v: v in FORMATS, f"one of {', '.join(FORMATS)}", "format"),
    "file": (is_text, "a file path", "file"),
    "override": (is_bool, "true or false", "override"),
}


@dataclass(frozen=True)
class Clash:
    """A variable already set here to another value: kept unless overridden."""

    name: str
    client: str
    shown: str  # the value found, as it may be shown (secrets hidden)
    replaced: bool  # override: ours was written anyway

    @property
    def message(self) -> str:
        if self.replaced:
            return f"{self.name} was {self.shown} here; replaced (--override)"
        if _SECRET_NAME.search(self.name):
            return (f"{self.name} is already set here (its value not shown): kept, and "
                    f"{self.client} tools will send it to this server (--override sets "
                    "the placeholder instead)")
        return (f"{self.name} is already set here to {self.shown}, not this server's "
                f"value for {self.client}: kept, not overwritten (--override replaces it)")


@dataclass(frozen=True)
class EnvPlan:
    address: ServerAddress
    readers: tuple[EnvClient, ...]  # the clients asked for
    variables: tuple[EnvVar, ...]  # what is written
    clashes: tuple[Clash, ...]
    notes: tuple[str, ...]

    @property
    def kept(self) -> tuple[Clash, ...]:
        return tuple(c for c in self.clashes if not c.replaced)


def plan_env(address: ServerAddress, clients: Sequence[EnvClient],
             environ: Mapping[str, str], *, override: bool = False) -> EnvPlan:
    """Raises UsageError when two clients want different values for one variable."""
    wanted: dict[str, EnvVar] = {}
    for client in clients:
        for var in client.variables(address):
            first = wanted.get(var.name)
            if first is None:
                wanted[var.name] = var
            elif not (first.means(var.value) or var.means(first.value)):
                raise _conflict(first, var, clients, address)
    variables, clashes = [], []
    for var in wanted.values():
        found = environ.get(var.name)
        if not found or var.means(found):
            variables.append(var)
            continue
        clashes.append(Clash(var.name, var.client, shown(var.name, found), override))
        if override:
            variables.append(var)
    notes = tuple(n for c in clients for n in c.notes(address))
    return EnvPlan(address, tuple(clients), tuple(variables), tuple(clashes), notes)


def _conflict(first: EnvVar, second: EnvVar, clients: Sequence[EnvClient],
              address: ServerAddress) -> UsageError:
    def described(var: EnvVar) -> str:
        others = [v for c in clients if c.name == var.client for v in c.variables(address)
                  if v.name != var.name]
        extra = "".join(f" with {v.name}={v.value}" for v in others if v.name == "OLLAMA_PORT")
        return f"{var.client} reads {var.name}={var.value}{extra}"

    return UsageError(
        f"{first.name}: {described(first)}, {described(second)}; one variable cannot "
        "hold both",
        hint=f"ask for one of them (--client {first.client} or --client {second.client}) "
        "and give the other tool its address in its own environment",
    )


def shown(name: str, value: str) -> str:
    """A value found in the environment, as it may be printed."""
    if _SECRET_NAME.search(name):
        return "a value (not shown)"
    return repr(re.sub(r"(://)[^/@\s]+@", r"\1***@", value))


# --- formats -----------------------------------------------------------------------------


def render_env(plan: EnvPlan, fmt: str) -> str:
    if fmt == "sh":
        return "".join(f"export {v.name}={shlex.quote(v.value)}\n" for v in plan.variables)
    if fmt == "dotenv":
        return "".join(f"{v.name}={_dotenv_value(v.value)}\n" for v in plan.variables)
    if fmt == "json":
        return json.dumps(env_result(plan).to_json(), indent=2) + "\n"
    if fmt == "github":
        return "".join(_github_entry(v) for v in plan.variables)
    raise UsageError(f"--format must be one of {', '.join(FORMATS)}")


def _dotenv_value(value: str) -> str:
    """Bare when plain; single quotes (taken literally by python-dotenv, docker compose
    and systemd) unless the value holds one; else double quotes with escapes."""
    if _PLAIN.match(value):
        return value
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    escaped = escaped.replace("$", "\\$")
    return f'"{escaped}"'


def _github_entry(var: EnvVar) -> str:
    """$GITHUB_ENV's multi-line form, with a delimiter the value cannot contain."""
    delimiter = f"ghadelimiter_{uuid.uuid4()}"
    while delimiter in var.value:
        delimiter = f"ghadelimiter_{uuid.uuid4()}"
    return f"{var.name}<<{delimiter}\n{var.value}\n{delimiter}\n"


def env_result(plan: EnvPlan) -> CommandResult:
    """The `env --json` document: exit code 1 when a variable set here was kept."""
    return CommandResult("env", EXIT_NOT_READY if plan.kept else EXIT_OK, env_fields(plan))


def env_fields(plan: EnvPlan) -> dict[str, object]:
    return {
        "server": plan.address.url,
        "clients": [c.name for c in plan.readers],
        "variables": {v.name: v.value for v in plan.variables},
        "read_by": {v.name: [c.name for c in plan.readers if any(
            x.name == v.name for x in c.variables(plan.address))] for v in plan.variables},
        "clashes": [{"name": c.name, "client": c.client, "found": c.shown,
                     "replaced": c.replaced} for c in plan.clashes],
        "notes": list(plan.notes),
    }
