"""The models on a server: what is declared, what the registry has, and getting them there.

`spec` (declared models, `[pull]`, `[verify]`) → `registry` (manifests and blobs, read
directly) → `plan` (what a pull would download, and the disk) → `pull` (the server
downloads; progress, retries, resume; its events are every transfer's, `progress` draws
them) → `source` (where a server's models come from: the registry, or a store this
machine uploads from) → `drift` (the weights a server has against the reference's,
and the fleet's majority) → `create` (custom models) → `verify` (load, place, time) →
`steps` (those steps for one server, shared by `apply` and `fleet`).
"""

from __future__ import annotations

from provision.models.create import CreateOutcome, CreateStatus, CustomModel, ensure_custom_model
from provision.models.drift import (
    DriftState,
    FleetDrift,
    ModelDrift,
    Reference,
    ReferenceDigest,
    UpgradeResult,
    check_server,
    drift_of,
    drift_to_json,
    fleet_drift,
    needs_pull_again,
    pull_upgrade,
    server_weights,
)
from provision.models.plan import (
    DownloadPlan,
    InsufficientDisk,
    ModelPlan,
    build_plan,
    ensure_disk_space,
)
from provision.models.registry import (
    ModelConfig,
    ModelFiles,
    ModelManifest,
    RegistryClient,
    RegistryError,
    SkipUnreachable,
    parse_manifest,
)
from provision.models.source import ModelSource, ServerPull
from provision.models.spec import ModelSpec, PullSpec, VerifySpec
from provision.models.steps import Checked, ServerSteps, Target, pull_names
from provision.models.verify import EndpointCheck, Verification, check_endpoint, verify_model

__all__ = [
    "Checked", "CreateOutcome", "CreateStatus", "CustomModel", "DownloadPlan", "DriftState",
    "EndpointCheck", "FleetDrift", "InsufficientDisk", "ModelConfig", "ModelDrift", "ModelFiles",
    "ModelManifest", "ModelPlan", "ModelSource", "ModelSpec", "PullSpec", "RegistryClient",
    "Reference", "ReferenceDigest", "RegistryError", "ServerPull", "ServerSteps",
    "SkipUnreachable", "Target",
    "UpgradeResult", "Verification", "VerifySpec", "build_plan", "check_endpoint",
    "check_server", "drift_of", "drift_to_json", "ensure_custom_model", "ensure_disk_space",
    "fleet_drift", "needs_pull_again", "parse_manifest", "pull_names", "pull_upgrade",
    "server_weights", "verify_model",
]
