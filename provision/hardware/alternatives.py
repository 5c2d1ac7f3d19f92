"""When a model does not fit: a smaller quantization or size of it that would.

The registry cannot list a model's tags, so candidates follow the Ollama library's
naming (`70b`, `70b-instruct-q3_K_M`, `8b`) and each costs one manifest request; a
missing tag is a cheap 404. Lookups are capped (`MAX_LOOKUPS`) and only made for a
model that does not fit.

- Smaller quantization, same size: the same architecture, so it is judged from the
  manifest alone (the weights scale with the blob size).
- Smaller size: the family's sizes when it is a known family, else common sizes, only
  those small enough to possibly fit; judged from its own GGUF header.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from provision.errors import ProvisionError
from provision.hardware.fit import Fit
from provision.hardware.needs import AVERAGE_BPW, ModelNeeds, from_registry
from provision.models.registry import ModelFiles
from provision.names import ModelName

MAX_LOOKUPS = 8  # manifest requests per model that does not fit
_QUANT_STEPS = ("q4_K_M", "q3_K_M", "q2_K")  # what the library publishes for most models
_FAMILY_SIZES = {
    "llama3.1": (405, 70, 8), "llama3": (70, 8), "llama3.2": (3, 1), "llama3.3": (70,),
    "llama2": (70, 13, 7), "qwen2.5": (72, 32, 14, 7, 3, 1.5, 0.5),
    "qwen2.5-coder": (32, 14, 7, 3, 1.5, 0.5), "qwen3": (235, 32, 30, 14, 8, 4, 1.7, 0.6),
    "qwen2": (72, 7, 1.5, 0.5), "gemma2": (27, 9, 2), "gemma3": (27, 12, 4, 1),
    "deepseek-r1": (671, 70, 32, 14, 8, 7, 1.5), "phi3": (14, 3.8), "mistral": (7,),
    "mixtral": ("8x22", "8x7"), "codellama": (70, 34, 13, 7),
}
_COMMON_SIZES = (405, 123, 72, 70, 34, 32, 27, 24, 22, 14, 13, 12, 9, 8, 7, 4, 3, 2, 1.5,
                 1, 0.5)


@dataclass(frozen=True)
class Alternative:
    name: str  # e.g. "llama3.1:70b-instruct-q2_K"
    kind: str  # "quantization" or "size"
    needs: ModelNeeds
    fit: Fit


def find_alternatives(name: ModelName, needs: ModelNeeds, registry: ModelFiles,
                      fit_of: Callable[[ModelNeeds], Fit], memory: int) -> list[Alternative]:
    """At most one smaller quantization and one smaller size that fit (`fit_of` says so).

    `memory` is all the memory the machine could give a model (VRAM + RAM + swap): sizes
    that cannot fit in it are not even looked up.
    """
    lookups = [0]
    found: list[Alternative] = []

    def manifest_of(tag: str) -> tuple[ModelName, int, int] | None:
        if lookups[0] >= MAX_LOOKUPS:
            return None
        lookups[0] += 1
        candidate = replace(name, tag=tag)
        try:
            manifest = registry.manifest(candidate)
        except ProvisionError:
            return None
        weights = manifest.weights
        return (candidate, manifest.total_size, weights.size) if weights else None

    size_tag, quant = _split_tag(name.tag)
    for step in _quant_candidates(quant) if size_tag or quant else []:
        if quant:  # 70b-instruct-q4_K_M -> 70b-instruct-q3_K_M
            tag = name.tag[: len(name.tag) - len(quant)] + step
        else:  # 70b (the library's default, q4_K_M) -> 70b-instruct-q3_K_M
            tag = f"{size_tag}-instruct-{step}"
        hit = manifest_of(tag)
        if hit is None:
            continue
        candidate, download, blob = hit
        scale = blob / max(needs.weights, 1)
        alt = replace(needs, name=candidate.short, quantization=step.upper(), weights=blob,
                      layers=tuple(int(x * scale) for x in needs.layers),
                      output=int(needs.output * scale), cpu_only=int(needs.cpu_only * scale),
                      download=download, disk_size=download, source="registry",
                      detail="registry: manifest (same architecture, weights scaled)")
        fit = fit_of(alt)
        if fit.fits:
            found.append(Alternative(candidate.short, "quantization", alt, fit))
            break
    current = _billions(size_tag)
    if current:
        bpw = AVERAGE_BPW.get(needs.quantization, 4.89)
        sizes = _FAMILY_SIZES.get(name.model.lower(), _COMMON_SIZES)
        for size in sizes:
            billions = _billions(f"{size}b")
            if not billions or billions >= current or billions * 1e9 * bpw / 8 > memory:
                continue
            if manifest_of(f"{size}b") is None:
                continue
            candidate = replace(name, tag=f"{size}b")
            try:
                alt = from_registry(candidate, registry)
            except ProvisionError:
                continue
            fit = fit_of(alt)
            if fit.fits:
                found.append(Alternative(candidate.short, "size", alt, fit))
                break
    return found


def _split_tag(tag: str) -> tuple[str, str]:
    """('70b', 'q4_K_M') from '70b-instruct-q4_K_M'; ('8b', '') from '8b'."""
    size = re.match(r"^((?:\d+x)?\d+(?:\.\d+)?[bm])(?:-|$)", tag.lower())
    quant = re.search(r"(q\d_k_[sml]|q\d_k|q\d_\d|fp16|f16|bf16)$", tag, re.IGNORECASE)
    return (size[1] if size else ""), (quant[1] if quant else "")


def _quant_candidates(current: str) -> list[str]:
    if not current:
        return list(_QUANT_STEPS[1:])  # the default tag is usually q4_K_M
    order = ["fp16", "q8_0", "q6_K", "q5_K_M", "q5_K_S", "q4_K_M", "q4_K_S", "q4_0", "q3_K_L",
             "q3_K_M", "q3_K_S", "q2_K"]
    lower = current.lower()
    index = next((i for i, q in enumerate(order) if q.lower() == lower), None)
    if index is None:
        return []
    return [q for q in _QUANT_STEPS if order.index(q) > index]


def _billions(size: str) -> float | None:
    match = re.fullmatch(r"(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])", size.lower())
    if not match:
        return None
    value = float(match[2]) * (int(match[1]) if match[1] else 1)
    return value / 1000 if match[3] == "m" else value
