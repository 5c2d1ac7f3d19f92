"""What a pull would download, read from the registry before anything moves.

For each model: its manifest (the sum of its blobs), and its config blob (parameter size,
quantization). For a server on this machine: which blobs its store already holds (shared
layers are not downloaded twice) and the free disk space where it keeps models. Ollama
itself checks no free space before a pull, so `pull` refuses up front from this plan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from provision.errors import EXIT_NOT_READY, ProvisionError
from provision.models.registry import (
    ModelFiles,
    RegistryClient,
    RegistryError,
    SkipUnreachable,
)
from provision.names import ModelName
from provision.output import human_bytes
from provision.server import Inventory, OllamaServer
from provision.server.models_dir import ModelsDir, models_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPlan:
    name: ModelName
    present: bool  # /api/tags lists it
    will_pull: bool  # missing, or --force
    size: int | None = None  # every blob, as the registry lists them (None: unknown)
    download: int | None = None  # of which not yet in the local blob store
    blobs: int = 0
    parameter_size: str = ""
    quantization: str = ""
    family: str = ""
    error: str | None = None  # why the registry could not tell
    hint: str | None = None
    error_status: int | None = None  # the registry's HTTP status (404: unknown model)


@dataclass(frozen=True)
class DownloadPlan:
    models: tuple[ModelPlan, ...]
    download: int  # bytes to download in all; a blob shared by several models counts once
    disk: ModelsDir | None  # the local server's models directory; None for a remote server

    @property
    def fits(self) -> bool | None:
        if self.disk is None or self.disk.free_bytes is None:
            return None
        return self.download <= self.disk.free_bytes

    @property
    def ok(self) -> bool:
        return self.fits is not False and not any(m.error for m in self.models if m.will_pull)


class InsufficientDisk(ProvisionError):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, exit_code=EXIT_NOT_READY, hint=hint)


def build_plan(
    names: list[ModelName],
    server: OllamaServer,
    inventory: Inventory | None,
    *,
    force: bool = False,
    insecure: bool = False,
    details: bool = True,
    registry: ModelFiles | None = None,
) -> DownloadPlan:
    """Ask the registry about every model that would be pulled (those `inventory` lacks,
    all with `force`). `details=False` skips the config blobs (the disk check needs only
    sizes); a server on this machine is asked where it keeps its models.
    """
    environ = server.environ
    disk = models_dir(environ, server=server) if server.address.is_loopback else None
    store = disk.path / "blobs" if disk is not None else None
    counted: set[str] = set()
    download = 0
    plans: list[ModelPlan] = []
    owned = registry is None
    # A registry that does not answer is not waited on again for every model.
    registry = SkipUnreachable(registry or RegistryClient(insecure=insecure, environ=environ))
    try:
        for name in names:
            present = inventory is not None and inventory.find(name) is not None
            will_pull = force or not present
            if not will_pull:
                plans.append(ModelPlan(name=name, present=True, will_pull=False))
                continue
            try:
                manifest = registry.manifest(name)
                config = registry.config(manifest) if details else None
            except RegistryError as exc:
                plans.append(ModelPlan(name=name, present=present, will_pull=True,
                                       error=exc.message, hint=exc.hint,
                                       error_status=exc.status))
                continue
            new = 0
            for layer in (manifest.config, *manifest.layers):
                if layer.digest in counted or _in_store(store, layer.digest, layer.size):
                    continue
                counted.add(layer.digest)
                new += layer.size
            download += new
            plans.append(ModelPlan(
                name=name, present=present, will_pull=True, size=manifest.total_size,
                download=new, blobs=len(manifest.layers) + 1,
                parameter_size=config.model_type if config else "",
                quantization=config.file_type if config else "",
                family=config.model_family if config else "",
            ))
    finally:
        if owned:
            registry.close()
    return DownloadPlan(models=tuple(plans), download=download, disk=disk)


def _in_store(store: Path | None, digest: str, size: int) -> bool:
    """Is this blob already complete in the local server's store (Ollama's file name)?"""
    if store is None:
        return False
    path = store / digest.replace(":", "-", 1)
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def ensure_disk_space(names: list[ModelName], server: OllamaServer, *,
                      insecure: bool = False, files: ModelFiles | None = None) -> DownloadPlan:
    """Refuse (InsufficientDisk, exit 1) when the local server's disk cannot hold the pull
    (or the upload: `files` is then the store the models come from).

    Best effort: a model the registry cannot describe from here is left to the pull
    itself, which explains its own error.
    """
    plan = build_plan(names, server, None, force=True, insecure=insecure, details=False,
                      registry=files)
    unknown = [m.name.short for m in plan.models if m.error]
    if unknown:
        log.debug("disk check: no size for %s", ", ".join(unknown))
    if plan.fits is False and plan.disk is not None:
        raise InsufficientDisk(
            f"not enough disk space: this pull needs {human_bytes(plan.download)}, "
            f"{human_bytes(plan.disk.free_bytes or 0)} is free at {plan.disk.path} "
            f"({plan.disk.described}); nothing was downloaded",
            hint="free space there, or set OLLAMA_MODELS (in the server's environment) to a "
            "bigger disk and restart the server; --no-disk-check skips this check",
        )
    return plan

