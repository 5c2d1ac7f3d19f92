"""Container limits: what cgroup v1/v2 allow this process, which psutil does not see.

A CI runner or a container reports the host's RAM and CPUs in /proc; the kernel kills
or throttles the process at the cgroup's limits. Both versions are read (a hybrid host
mounts both), every level from this process's cgroup up to the mount is consulted (a
parent's limit applies to its children), and the smallest limit wins.

Paths come from `/proc/self/cgroup` and `/proc/self/mountinfo` under `root`, so tests
build a fake tree in a temp dir.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number.
_V1_UNLIMITED = 1 << 62


@dataclass(frozen=True)
class CgroupLimits:
    memory_limit: int | None = None  # bytes; None: no limit
    memory_used: int | None = None  # bytes the cgroup uses, reclaimable page cache excluded
    swap_limit: int | None = None  # bytes of swap allowed; None: no limit
    cpu_quota: float | None = None  # CPUs' worth of time allowed (cpu.max); None: no limit
    version: str = ""  # "v1", "v2", "v1+v2" or "" (no cgroups)


@dataclass(frozen=True)
class _Hierarchy:
    version: int  # 1 or 2
    controllers: frozenset[str]  # v1 only
    mount: Path  # mount point (under root)
    directory: Path  # this process's cgroup directory (under root)


def read_limits(root: Path = Path("/")) -> CgroupLimits:
    hierarchies = _hierarchies(root)
    if not hierarchies:
        return CgroupLimits()
    memory: list[int] = []
    used: list[int] = []
    swap: list[int] = []
    cpu: list[float] = []
    versions = set()
    for h in hierarchies:
        if h.version == 2:
            versions.add("v2")
            memory += _walk(h, _file("memory.max", _bytes_or_max))
            swap += _walk(h, _file("memory.swap.max", _bytes_or_max))
            cpu += _walk(h, _file("cpu.max", _cpu_max))
            current = _read_int(h.directory / "memory.current")
            if current is not None:
                used.append(max(current - _stat(h.directory, "inactive_file"), 0))
        else:
            versions.add("v1")
            if "memory" in h.controllers:
                memory += _walk(h, _file("memory.limit_in_bytes", _v1_bytes))
                memsw = _walk(h, _file("memory.memsw.limit_in_bytes", _v1_bytes))
                current = _read_int(h.directory / "memory.usage_in_bytes")
                if current is not None:
                    used.append(max(current - _stat(h.directory, "total_inactive_file"), 0))
                if memsw and memory:
                    swap.append(max(min(memsw) - min(memory), 0))
            if "cpu" in h.controllers:
                cpu += _walk(h, _v1_cpu)
    return CgroupLimits(
        memory_limit=min(memory) if memory else None,
        memory_used=min(used) if used and memory else None,
        swap_limit=min(swap) if swap else None,
        cpu_quota=min(cpu) if cpu else None,
        version="+".join(sorted(versions)),
    )


def _hierarchies(root: Path) -> list[_Hierarchy]:
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    mounts = _mounts(root)
    found: list[_Hierarchy] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers_text, path = parts
        if controllers_text == "":
            version, controllers = 2, frozenset()
            mount = mounts.get("cgroup2")
            default = root / "sys/fs/cgroup"
            if mount is None and (root / "sys/fs/cgroup/unified").is_dir():
                default = root / "sys/fs/cgroup/unified"  # hybrid layout
        else:
            version = 1
            controllers = frozenset(c for c in controllers_text.split(",") if c)
            if not controllers & {"memory", "cpu"}:
                continue
            mount = next((m for key, m in mounts.items()
                          if key != "cgroup2" and controllers & set(key.split(","))), None)
            default = root / "sys/fs/cgroup" / ",".join(sorted(controllers))
            if not default.is_dir():
                name = "memory" if "memory" in controllers else "cpu"
                default = root / "sys/fs/cgroup" / name
        mount_point, mount_root = mount if mount is not None else (default, "/")
        found.append(_Hierarchy(version, controllers, mount_point,
                                _directory(mount_point, mount_root, path)))
    return found


def _mounts(root: Path) -> dict[str, tuple[Path, str]]:
    """cgroup mounts from mountinfo: "cgroup2" or v1 controllers -> (mount point, root)."""
    try:
        lines = (root / "proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return {}
    mounts: dict[str, tuple[Path, str]] = {}
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        fstype, options = tail[0], tail[2]
        point = root / fields[4].lstrip("/")
        if fstype == "cgroup2":
            mounts.setdefault("cgroup2", (point, fields[3]))
        elif fstype == "cgroup":
            names = [o for o in options.split(",") if o not in ("rw", "ro") and "=" not in o]
            if names:
                mounts.setdefault(",".join(names), (point, fields[3]))
    return mounts


def _directory(mount: Path, mount_root: str, path: str) -> Path:
    # Without a cgroup namespace the path is the host's (/docker/<id>) while the mount
    # already starts there: strip the mount's own root first.
    relative = path
    if mount_root not in ("/", "") and (path + "/").startswith(mount_root.rstrip("/") + "/"):
        relative = path[len(mount_root.rstrip("/")):]
    directory = mount / relative.lstrip("/")
    return directory if directory.is_dir() else mount


def _walk(h: _Hierarchy, read: Callable[[Path], T | None]) -> list[T]:
    """What `read` finds at every level from this cgroup up to the mount point."""
    values: list[T] = []
    current = h.directory
    while True:
        value = read(current)
        if value is not None:
            values.append(value)
        if current == h.mount or h.mount not in current.parents:
            return values
        current = current.parent


def _file(name: str, parse: Callable[[str], T | None]) -> Callable[[Path], T | None]:
    def read(directory: Path) -> T | None:
        try:
            return parse((directory / name).read_text().strip())
        except (OSError, ValueError):
            return None

    return read


def _bytes_or_max(text: str) -> int | None:
    return None if text == "max" else int(text)


def _v1_bytes(text: str) -> int | None:
    value = int(text)
    return None if value >= _V1_UNLIMITED or value < 0 else value


def _cpu_max(text: str) -> float | None:
    quota, _, period = text.partition(" ")
    if quota == "max":
        return None
    return int(quota) / int(period or 100000)


def _v1_cpu(directory: Path) -> float | None:
    quota = _read_int(directory / "cpu.cfs_quota_us")
    period = _read_int(directory / "cpu.cfs_period_us")
    if quota is None or quota <= 0 or not period:
        return None
    return quota / period


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stat(directory: Path, key: str) -> int:
    try:
        for line in (directory / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0
