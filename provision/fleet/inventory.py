"""The fleet inventory: which Ollama servers exist and which models each must have.

TOML in, typed frozen dataclasses out, checked as strictly as the `apply` manifest:
an unknown key is an error, and every error names the file, the key and what was
expected. Groups carry the model sets, written exactly like the manifest's
`[[models]]` tables (validated by the same code); hosts join groups by name or by
labels. The `[pull]` and `[verify]` sections are the manifest's (a `[pull] bundle` is
relative to the inventory's folder); `[seed]` is `--seed`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from provision.bundle import DEFAULT_CACHE_SIZE, parse_bytes
from provision.errors import UsageError
from provision.models.spec import (
    PULL_KEYS,
    VERIFY_KEYS,
    ModelSpec,
    PullSpec,
    VerifySpec,
    parse_model,
)
from provision.names import parse_name
from provision.output import printable
from provision.redact import credentials, in_text
from provision.server import ServerAddress, parse_host
from provision.tables import (
    Schema,
    did_you_mean,
    fail,
    fields,
    int_at_least,
    is_bool,
    is_str,
    is_text,
    load_sections,
    nonneg_number,
)

# The tool's work per host is a thread and a few sockets (the servers do the
# downloading), so one wave covers hundreds of hosts; lower it with --concurrency when
# the hosts share one download link.
DEFAULT_CONCURRENCY = 256
# Blob uploads from this machine at once, all hosts together (--seed, --bundle): its own
# link and disk are shared by every upload.
DEFAULT_UPLOADS = 4


@dataclass(frozen=True)
class HostTimeouts:
    connect: float = 3.0  # seconds to open a connection to the host
    read: float = 120.0  # seconds of silence per request (loading a big model is slow)
    total: float = 0.0  # seconds for the host's whole run; 0 = no limit


@dataclass(frozen=True)
class FleetHost:
    name: str
    address: ServerAddress
    labels: tuple[tuple[str, str], ...]
    groups: tuple[str, ...]  # the groups it belongs to, in file order
    models: tuple[ModelSpec, ...]  # the union of its groups' model sets
    timeouts: HostTimeouts


@dataclass(frozen=True)
class Group:
    name: str
    models: tuple[ModelSpec, ...]
    hosts: tuple[str, ...] = ()  # members by name
    match: tuple[tuple[str, str], ...] = ()  # members by labels (all must match)

    @property
    def everyone(self) -> bool:
        return not self.hosts and not self.match

    def selects(self, name: str, labels: dict[str, str]) -> bool:
        if self.everyone or name in self.hosts:
            return True
        return bool(self.match) and all(labels.get(k) == v for k, v in self.match)


@dataclass(frozen=True)
class SeedSpec:
    """[seed]: models through this machine's cache (`--seed`)."""

    enabled: bool = False
    cache_dir: str | None = None  # None: the platform's cache folder
    cache_size: int = DEFAULT_CACHE_SIZE  # bytes


@dataclass(frozen=True)
class FleetInventory:
    source: str
    hosts: tuple[FleetHost, ...]
    groups: tuple[Group, ...]
    concurrency: int = DEFAULT_CONCURRENCY
    uploads: int = DEFAULT_UPLOADS
    pull: PullSpec = PullSpec()
    verify: VerifySpec = VerifySpec()
    seed: SeedSpec = SeedSpec()


def _is_size(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return value >= 0
    try:
        return isinstance(value, str) and parse_bytes(value) >= 0
    except ValueError:
        return False


def _is_label_table(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _is_name_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


_TIMEOUT_KEYS: Schema = {
    "connect_timeout": (nonneg_number, "seconds (a number >= 0) up to 10,000,000", "connect"),
    "read_timeout": (nonneg_number, "seconds (a number >= 0) up to 10,000,000", "read"),
    "host_timeout": (nonneg_number, "seconds for the host's whole run (0: no limit), up "
                     "to 10,000,000", "total"),
}
_FLEET_KEYS: Schema = {
    "concurrency": (int_at_least(1), "an integer >= 1 (hosts worked on at once)",
                    "concurrency"),
    "uploads": (int_at_least(1), "an integer >= 1 (blob uploads at once, all hosts "
                "together)", "uploads"),
    **_TIMEOUT_KEYS,
}
_SEED_KEYS: Schema = {
    "enabled": (is_bool, "true or false", "enabled"),
    "cache_dir": (is_text, "a directory path", "cache_dir"),
    "cache_size": (_is_size, "bytes, or a size like '100G' or '1.5T' (decimal units)",
                   "cache_size"),
}
_HOST_KEYS: Schema = {
    "url": (is_str, "the host's Ollama URL, like 'http://10.0.0.5:11434'", "url"),
    "name": (is_str, "a name for messages and --json", "name"),
    "labels": (_is_label_table, "a table of strings, like { role = \"gpu\" }", "labels"),
    **_TIMEOUT_KEYS,
}
_GROUP_KEYS: Schema = {
    "hosts": (_is_name_list, "a list of host names", "hosts"),
    "match": (_is_label_table, "a table of labels, like { role = \"gpu\" }", "match"),
    "models": (lambda v: isinstance(v, list), "[[groups.NAME.models]] tables", "models"),
}
_TOP = {"fleet", "hosts", "groups", "pull", "verify", "seed"}


def parse_inventory(text: str, source: str, folder: Path | None = None) -> FleetInventory:
    """`folder`: what a `[pull] bundle` and `[seed] cache_dir` are relative to (the
    inventory's; default: the working directory)."""
    data = load_sections(text, source, _TOP)
    fleet = fields(source, "fleet", data.get("fleet", {}), _FLEET_KEYS)
    defaults = HostTimeouts(**{k: v for k, v in fleet.items()
                               if k not in ("concurrency", "uploads")})
    groups = _groups(source, data.get("groups"))
    hosts = _hosts(source, data.get("hosts"), defaults, groups)
    sections: dict[str, Any] = {
        name: cls(**fields(source, name, data[name], schema))
        for name, cls, schema in (("pull", PullSpec, PULL_KEYS), ("verify", VerifySpec,
                                                                  VERIFY_KEYS))
        if name in data
    }
    folder = folder or Path.cwd()
    if "pull" in sections:
        sections["pull"] = sections["pull"].resolved(folder)
    if "seed" in data:
        seed = fields(source, "seed", data["seed"], _SEED_KEYS)
        if isinstance(seed.get("cache_size"), str):
            seed["cache_size"] = parse_bytes(seed["cache_size"])
        if "cache_dir" in seed:
            path = Path(seed["cache_dir"]).expanduser()
            seed["cache_dir"] = str(path if path.is_absolute() else folder / path)
        sections["seed"] = SeedSpec(**seed)
    return FleetInventory(source=source, hosts=hosts, groups=groups,
                          concurrency=fleet.get("concurrency", DEFAULT_CONCURRENCY),
                          uploads=fleet.get("uploads", DEFAULT_UPLOADS), **sections)


def _groups(source: str, raw: Any) -> tuple[Group, ...]:
    if raw is None:
        raise fail(source, "groups", "missing: at least one [groups.NAME] with "
                   "[[groups.NAME.models]] is needed")
    if not isinstance(raw, dict) or not raw:
        raise fail(source, "groups", "expected [groups.NAME] tables")
    groups = []
    for name, table in raw.items():
        name = printable(name)
        values = fields(source, f"groups.{name}", table, _GROUP_KEYS)
        values["hosts"] = [printable(h) for h in values.get("hosts", ())]
        models_raw = values.get("models") or []
        if not models_raw:
            raise fail(source, f"groups.{name}", "expected at least one "
                       f"[[groups.{name}.models]] table")
        models = []
        for i, entry in enumerate(models_raw):
            spec = parse_model(source, i, entry, within=f"groups.{name}.")
            if spec.choose:
                # A choice depends on the host's hardware, which is only visible on the
                # host itself: that is what `apply` (and the Ansible role) is for.
                raise fail(source, f"groups.{name}.models[{i}].choose",
                           "not available in a fleet (the choice needs the host's own "
                           "hardware): name one model, or run `apply` on each host")
            models.append(spec)
        groups.append(Group(name=name, models=tuple(models),
                            hosts=tuple(values.get("hosts", ())),
                            match=tuple(sorted(values.get("match", {}).items()))))
    return tuple(groups)


def _hosts(source: str, raw: Any, defaults: HostTimeouts,
           groups: tuple[Group, ...]) -> tuple[FleetHost, ...]:
    if raw is None:
        raise fail(source, "hosts", "missing: list the servers as [[hosts]] tables")
    if not isinstance(raw, list) or not raw:
        raise fail(source, "hosts", "expected at least one [[hosts]] table")
    names: dict[str, int] = {}
    urls: dict[str, int] = {}
    parsed: list[tuple[str, ServerAddress, dict[str, Any]]] = []
    for i, table in enumerate(raw):
        key = f"hosts[{i}]"
        values = fields(source, key, table, _HOST_KEYS)
        if "url" not in values:
            raise fail(source, f"{key}.url", "missing: the host's Ollama URL")
        address = _address(source, f"{key}.url", values["url"])
        # Shown in every line about the host: control characters escaped, so a name with a
        # newline cannot forge a line of output ("h1\nFAKE: ready").
        name = printable(values.get("name") or address.netloc + address.path)
        for seen, what, value in ((urls, "url", address.url), (names, "name", name)):
            if value in seen:
                raise fail(source, f"{key}.{what}", f"'{value}' is already used by "
                           f"hosts[{seen[value]}]")
            seen[value] = i
        parsed.append((name, address, values))
    for group in groups:
        for member in group.hosts:
            if member not in names:
                raise fail(source, f"groups.{group.name}.hosts", f"no host is named "
                           f"'{member}'" + did_you_mean(member, names))
    hosts: list[FleetHost] = []
    for i, (name, address, values) in enumerate(parsed):
        key = f"hosts[{i}]"
        labels = dict(values.get("labels", {}))
        member_of = tuple(g for g in groups if g.selects(name, labels))
        if not member_of:
            raise fail(source, key, f"'{name}' is in no group, so it would get no models: "
                       "name it in a group's hosts, give it labels a group matches, or "
                       "add a group without hosts/match (every host)")
        timeouts = replace(defaults, **{attr: values[attr] for _, _, attr in
                                        _TIMEOUT_KEYS.values() if attr in values})
        hosts.append(FleetHost(name=name, address=address, labels=tuple(sorted(labels.items())),
                               groups=tuple(g.name for g in member_of),
                               models=_merge(source, name, member_of), timeouts=timeouts))
    return tuple(hosts)


def _address(source: str, key: str, value: str) -> ServerAddress:
    if not value.strip():
        raise fail(source, key, "expected a URL like 'http://10.0.0.5:11434', got ''")
    try:
        return parse_host(value, source="inventory")
    except UsageError as exc:
        # parse_host words its errors for OLLAMA_HOST; keep only the reason. A password
        # in the URL is never printed.
        reason = exc.message.split(": ", 1)[-1]
        shown = printable(credentials(value))
        raise fail(source, key, f"invalid address '{shown}': {in_text(reason)}") from None


def _merge(source: str, host: str, groups: tuple[Group, ...]) -> tuple[ModelSpec, ...]:
    """A host's model set: its groups' models, each once. The same model in two groups
    must be declared the same way (else which num_ctx would win?); it is required when
    any group requires it."""
    merged: dict[tuple[str, str, str, str], tuple[ModelSpec, str]] = {}
    for group in groups:
        for i, spec in enumerate(group.models):
            key = parse_name(spec.name or "").key
            seen = merged.get(key)
            if seen is None:
                merged[key] = (spec, f"groups.{group.name}.models[{i}]")
                continue
            first, where = seen
            if _canonical(first) != _canonical(spec):
                raise fail(source, f"groups.{group.name}.models[{i}]",
                           f"'{spec.name}' is also declared in {where} with other settings, "
                           f"and host '{host}' is in both groups: declare it the same way")
            if spec.required and not first.required:
                merged[key] = (replace(first, required=True), where)
    return tuple(spec for spec, _ in merged.values())


def _canonical(spec: ModelSpec) -> ModelSpec:
    """For comparing declarations: names by Ollama's rules, `required` aside."""
    return replace(spec, required=True, name=parse_name(spec.name or "").full.lower(),
                   base=parse_name(spec.base).full.lower() if spec.base else None)


def load_inventory(path: str) -> FleetInventory:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not an inventory file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    return parse_inventory(text, path, file.parent.absolute())
