"""Custom models built on the server (`/api/create`: a base model plus system prompt,
template and parameters, what a Modelfile offers), created only when they differ.

Idempotence comes from `/api/show`: when the model exists with the same base, system
prompt, template and parameters, nothing is sent.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provision.errors import ProvisionError
from provision.http import error_text, json_body, json_loads
from provision.names import ModelName, parse_name
from provision.output import printable

if TYPE_CHECKING:
    import httpx

CREATED, UNCHANGED, FAILED = "created", "unchanged", "failed"


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
    status: str  # created / unchanged / failed
    error: str | None = None

    @property
    def changed(self) -> bool:
        return self.status == CREATED


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


def matches(show: dict[str, Any], spec: CustomModel) -> bool:
    details = show.get("details")
    parent = details.get("parent_model") if isinstance(details, dict) else None
    try:
        if parse_name(str(parent or "")[:500]).key != spec.base.key:
            return False
    except ProvisionError:  # an unparseable parent is not our base
        return False
    if spec.system is not None and (show.get("system") or "") != spec.system:
        return False
    if spec.template is not None and (show.get("template") or "") != spec.template:
        return False
    parameters = show.get("parameters")
    shown = _parse_parameters(parameters if isinstance(parameters, str) else "")
    for key, wanted in spec.parameters:
        want = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        have = shown.get(key, [])
        if len(have) != len(want) or not all(_same_value(w, h) for w, h in zip(want, have)):
            return False
    return True


def ensure_custom_model(http: httpx.Client, spec: CustomModel) -> CreateOutcome:
    import httpx

    name = spec.name.short
    try:
        response = http.post("/api/show", json={"model": name})
        show = _json_or_none(response) if response.status_code == 200 else None
        if isinstance(show, dict) and matches(show, spec):
            return CreateOutcome(name=name, status=UNCHANGED)
        body: dict[str, Any] = {"model": name, "from": spec.base.short, "stream": True}
        if spec.system is not None:
            body["system"] = spec.system
        if spec.template is not None:
            body["template"] = spec.template
        if spec.parameters:
            body["parameters"] = dict(spec.parameters)
        with http.stream("POST", "/api/create", json=body) as stream:
            if stream.status_code != 200:
                stream.read()
                return CreateOutcome(name=name, status=FAILED, error=error_text(stream))
            for line in stream.iter_lines():  # at most /api/create's budget in all
                try:
                    event = json_loads(line)
                except ValueError:
                    continue  # a garbage line is not a verdict
                if not isinstance(event, dict):
                    continue
                if "error" in event:
                    return CreateOutcome(name=name, status=FAILED,
                                         error=printable(str(event["error"])[:300]))
                if event.get("status") == "success":
                    return CreateOutcome(name=name, status=CREATED)
    except httpx.HTTPError as exc:
        return CreateOutcome(name=name, status=FAILED, error=str(exc))
    return CreateOutcome(name=name, status=FAILED, error="the create stream ended early")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json_body(response)
    except ValueError:
        return None

