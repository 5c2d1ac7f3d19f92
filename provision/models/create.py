"""Custom models built on the server (`/api/create`: a base model plus system prompt,
template and parameters, what a Modelfile offers), created only when they differ.

Idempotence comes from `/api/show`: when the model exists with the same base, system
prompt, template and parameters, nothing is sent.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from provision.errors import ProvisionError
from provision.names import ModelName, parse_name
from provision.result import Status
from provision.server import ModelShow, OllamaServer, ServerError


class CreateStatus(Status):
    """How a custom model's step ended (stable: part of the `--json` schemas)."""

    CREATED = "created"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass(frozen=True)
class CustomModel:
    name: ModelName
    base: ModelName
    system: str | None = None
    template: str | None = None
    parameters: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class CreateOutcome:
    name: str
    status: CreateStatus
    error: str | None = None

    @property
    def changed(self) -> bool:
        return self.status == CreateStatus.CREATED


def _parse_parameters(text: str) -> dict[str, list[str]]:
    """`/api/show` parameters: one `key   value` per line, strings quoted, keys repeat."""
    values: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            continue
        key, raw = parts
        try:
            value = shlex.split(raw)[0] if raw.startswith('"') else raw
        except ValueError:
            value = raw
        values.setdefault(key, []).append(value)
    return values


def _same_value(wanted: Any, shown: str) -> bool:
    if isinstance(wanted, bool):
        return shown.lower() == str(wanted).lower()
    if isinstance(wanted, (int, float)):
        try:
            return float(shown) == float(wanted)
        except ValueError:
            return False
    return str(wanted) == shown


def matches(show: ModelShow, spec: CustomModel) -> bool:
    try:
        if parse_name(show.parent_model).key != spec.base.key:
            return False
    except ProvisionError:  # an unparseable parent is not our base
        return False
    if spec.system is not None and show.system != spec.system:
        return False
    if spec.template is not None and show.template != spec.template:
        return False
    shown = _parse_parameters(show.parameters)
    for key, wanted in spec.parameters:
        want = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        have = shown.get(key, [])
        if len(have) != len(want) or not all(_same_value(w, h) for w, h in zip(want, have)):
            return False
    return True


def ensure_custom_model(server: OllamaServer, spec: CustomModel) -> CreateOutcome:
    """Create the model unless the server has it as declared already."""
    name = spec.name.short
    try:
        show = server.show(spec.name)
    except ServerError as exc:
        if exc.connection:
            return CreateOutcome(name=name, status=CreateStatus.FAILED, error=exc.reason)
        show = None  # an answer that is not a model's details: create it anew
    if show is not None and matches(show, spec):
        return CreateOutcome(name=name, status=CreateStatus.UNCHANGED)
    try:
        server.create(spec.name, base=spec.base, system=spec.system, template=spec.template,
                      parameters=dict(spec.parameters))
    except ServerError as exc:
        return CreateOutcome(name=name, status=CreateStatus.FAILED, error=exc.reason)
    return CreateOutcome(name=name, status=CreateStatus.CREATED)
