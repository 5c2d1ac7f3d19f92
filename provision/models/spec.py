"""Declared models, and how to pull and verify them: the `[[models]]`, `[pull]` and
`[verify]` tables that the apply manifest and the fleet inventory share, TOML in, typed
frozen dataclasses out (checked as strictly as `provision.tables` checks every table)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from provision.names import ModelName, parse_name
from provision.tables import (
    SECONDS,
    Schema,
    check_name,
    fail,
    fields,
    int_at_least,
    is_bool,
    is_name_list,
    is_str,
    is_table,
    is_text,
    nonneg_number,
    positive_number,
)


@dataclass(frozen=True)
class ModelSpec:
    name: str | None = None  # a model to pull, or the name of a custom model to create
    choose: tuple[str, ...] = ()  # candidates, best first: the first that fits is used
    # `choose`: the least estimated speed (low end) a candidate must reach; None: the
    # gate's default, 0: no minimum
    min_tokens_per_second: float | None = None
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

    @property
    def pull_name(self) -> ModelName:
        """What is downloaded: the model, or a custom model's base (not for `choose`)."""
        return parse_name(self.base or self.name or "")


@dataclass(frozen=True)
class PullSpec:
    parallel: int = 1
    retries: int = 5
    stall_timeout: float = 60.0
    insecure: bool = False
    bundle: str | None = None  # the models come from this bundle file, not the registry

    def resolved(self, folder: Path) -> PullSpec:
        """`bundle` with `~` expanded, relative to `folder` (the file's that named it)."""
        if self.bundle is None:
            return self
        path = Path(self.bundle).expanduser()
        return replace(self, bundle=str(path if path.is_absolute() else folder / path))


@dataclass(frozen=True)
class VerifySpec:
    enabled: bool = True
    load: bool = True
    generate: bool = True
    prompt: str = "Reply with one word: ready"
    num_predict: int = 16
    min_tokens_per_second: float = 0.0


MODEL_KEYS: Schema = {
    "name": (is_str, "a model name like 'llama3.2:3b'", "name"),
    "choose": (is_name_list, "a non-empty list of model names, best first", "choose"),
    "min_tokens_per_second": (nonneg_number, "a number >= 0 (tokens/s; 0: no minimum)",
                              "min_tokens_per_second"),
    "num_ctx": (int_at_least(256), "an integer >= 256 (tokens)", "num_ctx"),
    "keep_alive": (lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),
                   "a duration like '30m' or seconds", "keep_alive"),
    "required": (is_bool, "true or false", "required"),
    "from": (is_str, "the model a custom model is built from", "base"),
    "system": (is_str, "a string", "system"),
    "template": (is_str, "a string", "template"),
    "parameters": (is_table, "a table of Modelfile parameters", "parameters"),
}
PULL_KEYS: Schema = {
    "parallel": (int_at_least(1), "an integer >= 1", "parallel"),
    "retries": (int_at_least(0), "an integer >= 0", "retries"),
    "stall_timeout": (positive_number, SECONDS, "stall_timeout"),
    "insecure": (is_bool, "true or false", "insecure"),
    "bundle": (is_text, "a path (string)", "bundle"),
}
VERIFY_KEYS: Schema = {
    "enabled": (is_bool, "true or false", "enabled"),
    "load": (is_bool, "true or false", "load"),
    "generate": (is_bool, "true or false", "generate"),
    "prompt": (is_str, "a string", "prompt"),
    "num_predict": (int_at_least(1), "an integer >= 1", "num_predict"),
    "min_tokens_per_second": (nonneg_number, "a number >= 0", "min_tokens_per_second"),
}


def parse_model(source: str, index: int, table: Any, *, within: str = "") -> ModelSpec:
    """One `[[models]]` table. `within`: where the array sits ("groups.gpu." in a fleet
    inventory), so that errors name the exact key."""
    prefix = f"{within}models[{index}]"
    values = fields(source, prefix, table, MODEL_KEYS)
    if "keep_alive" in values:
        values["keep_alive"] = str(values["keep_alive"])
    has_name, has_choose = "name" in values, "choose" in values
    if has_name == has_choose:
        raise fail(source, prefix, "give exactly one of 'name' (a model) or 'choose' "
                   "(candidates, best first)")
    if has_choose and "base" in values:
        raise fail(source, prefix, "'choose' cannot be combined with 'from'")
    if "min_tokens_per_second" in values and not has_choose:
        raise fail(source, f"{prefix}.min_tokens_per_second", "is for a 'choose' list (the "
                   "least speed a candidate must reach); [verify] min_tokens_per_second "
                   "holds every model to a measured speed")
    custom_only = {"system", "template", "parameters"} & set(values)
    if custom_only and "base" not in values:
        raise fail(source, f"{prefix}.{sorted(custom_only)[0]}",
                   "only a custom model (with 'from') takes system/template/parameters")
    for key in ("name", "base"):
        if key in values:
            check_name(source, f"{prefix}.{'from' if key == 'base' else key}", values[key])
    for i, candidate in enumerate(values.get("choose", ())):
        check_name(source, f"{prefix}.choose[{i}]", candidate)
    return ModelSpec(**values)


def parse_models(source: str, raw: Any) -> tuple[ModelSpec, ...]:
    """The `[[models]]` array: each table checked, then the set (no model both pulled
    and created, no custom models built from each other in a circle)."""
    if not isinstance(raw, list):
        raise fail(source, "models", "expected [[models]] tables")
    models = tuple(parse_model(source, i, m) for i, m in enumerate(raw))
    custom = {parse_name(m.name).key for m in models if m.is_custom and m.name}
    for m in models:
        if not m.is_custom and m.name and parse_name(m.name).key in custom:
            raise fail(source, "models", f"'{m.name}' is declared both as a custom model "
                       "and as a model to pull")
    _check_cycles(source, models)
    return models


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
                raise fail(source, f"models[{index}].from",
                           "custom models built from each other in a circle: "
                           + " -> ".join(chain) if len(chain) > 2 else
                           f"the custom model '{spec.name}' is built from itself")
            seen.add(step)
            current = base_of[step][1]
