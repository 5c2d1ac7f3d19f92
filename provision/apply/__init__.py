"""`apply`: one machine (or CI runner) brought to one manifest, step by step.

`manifest` (the TOML it runs from) → `run` (check → hardware → plan → pull and create →
verify → configure Codex and the other clients, on one `OllamaServer`) → `result`
(a StepResult per step, an ApplyModelResult per model, the exit code); `log` announces
the steps.
"""

from __future__ import annotations

from provision.apply.log import StepLog
from provision.apply.manifest import (
    ApplyManifest,
    ClientsSpec,
    CodexSpec,
    ServerSpec,
    load_manifest,
    parse_manifest,
)
from provision.apply.result import ApplyModelResult, ApplyResult, StepResult, StepStatus
from provision.apply.run import INTERRUPTED_TEXT, ApplyOptions, run_apply

__all__ = [
    "INTERRUPTED_TEXT", "ApplyManifest", "ApplyModelResult", "ApplyOptions", "ApplyResult",
    "ClientsSpec", "CodexSpec", "ServerSpec", "StepLog", "StepResult", "StepStatus",
    "load_manifest", "parse_manifest", "run_apply",
]
