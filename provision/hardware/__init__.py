"""Can this machine (or a described one) run the models, before anything is downloaded?

`machine` (CPU, memory, GPUs through `gpus`, cgroup limits through `cgroup`, disk) or
`assume` (a described machine) → `needs` (what a model needs: installed, from the
registry's GGUF header through `gguf` and `architecture`, or rough) → `fit` (where it
would run, memory, tokens/s through `speed`) → `report` (`assess`: every model, and
`alternatives` for what does not fit) → `gate` (apply's decision per declaration).
"""

from __future__ import annotations

from provision.hardware.assume import Assumption, machine_to_json, parse_assume
from provision.hardware.fit import Fit, Verdict, fit_model
from provision.hardware.gate import (
    DEFAULT_MIN_TOKENS_PER_SECOND,
    HARDWARE_KEYS,
    REQUIREMENTS,
    Candidate,
    GateDecision,
    HardwareSpec,
    gate,
)
from provision.hardware.machine import Disk, Machine, probe_machine
from provision.hardware.needs import ModelNeeds, from_registry, model_needs
from provision.hardware.report import HardwareReport, ModelReport, assess, assess_model
from provision.hardware.speed import speed_range, speed_words

__all__ = [
    "DEFAULT_MIN_TOKENS_PER_SECOND", "HARDWARE_KEYS", "REQUIREMENTS", "Assumption",
    "Candidate", "Disk", "Fit", "GateDecision", "HardwareReport", "HardwareSpec", "Machine",
    "ModelNeeds", "ModelReport", "Verdict", "assess", "assess_model", "fit_model",
    "from_registry", "gate", "machine_to_json", "model_needs", "parse_assume",
    "probe_machine", "speed_range", "speed_words",
]
