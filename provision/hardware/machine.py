"""This machine as Ollama would use it: CPU, RAM, GPUs and the disk where models go.

Fast by design (the goal is well under 200 ms without GPU tools): on Linux everything
comes from /proc and /sys (py-cpuinfo's `get_cpu_info()` sleeps a second to time the
clock, so it is used only where nothing else says what the CPU can do), macOS asks
`sysctl` once, GPU tools run with a time limit.

Container limits count: CPU affinity and cgroup `cpu.max` cap the cores, cgroup memory
limits cap the RAM (see `provision.hardware.cgroup`).

Every input is injectable: `root` for /proc and /sys, `path` for the GPU tools,
`environ`, `platform`; tests build fake trees and fake executables in temp dirs.
"""

from __future__ import annotations

import os
import platform as platform_module
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from provision.hardware.cgroup import read_limits
from provision.hardware.gpus import GPU, Tools, probe_gpus
from provision.hardware.speed import DEFAULT_RAM_BANDWIDTH
from provision.server import OllamaServer
from provision.server.models_dir import SOURCES, models_dir

FLAGS = ("avx", "avx2", "avx512f", "fma", "f16c")  # what decides llama.cpp's CPU speed
_ARM_FLAGS = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve"}


@dataclass(frozen=True)
class CPU:
    model: str
    logical: int  # logical CPUs this process may run on (affinity)
    physical: int | None  # physical cores among them (None: unknown)
    quota: float | None  # cgroup cpu.max in CPUs (None: no limit)
    flags: tuple[str, ...]  # of FLAGS (x86) or neon/dotprod/i8mm/sve (ARM)
    host_logical: int  # logical CPUs in the whole machine

    @property
    def usable(self) -> float:
        """CPUs' worth of compute this process gets."""
        cores = float(self.logical)
        return min(cores, self.quota) if self.quota else cores


@dataclass(frozen=True)
class Memory:
    total: int  # bytes this process may use (host RAM, or the cgroup limit if smaller)
    available: int  # bytes free for a new model now
    swap_total: int
    swap_free: int
    host_total: int  # the machine's RAM
    limit: int | None = None  # cgroup memory limit (None: none)
    cgroup: str = ""  # "v1", "v2", "v1+v2", ""
    bandwidth: float = DEFAULT_RAM_BANDWIDTH  # GB/s
    bandwidth_assumed: bool = True  # not measured


@dataclass(frozen=True)
class Disk:
    path: str  # where the server keeps models
    source: str  # a models_dir.SOURCES key ("server", ...), "assumed" or "remote"
    free: int | None  # bytes; None: cannot tell (a remote server's disk)

    @property
    def described(self) -> str:
        """Where the figure comes from, for people ("as the server says", ...)."""
        return SOURCES.get(self.source, self.source)


@dataclass(frozen=True)
class Machine:
    os: str  # "linux", "darwin", "windows", ...
    arch: str  # "x86_64", "arm64", ...
    cpu: CPU
    memory: Memory
    gpus: tuple[GPU, ...]
    disk: Disk
    source: str = "probed"  # "probed", or "assumed (...)" for --assume
    notes: tuple[str, ...] = field(default=())
    probe_seconds: float = 0.0

    @property
    def usable_gpus(self) -> tuple[GPU, ...]:
        return tuple(g for g in self.gpus if g.usable)

    @property
    def vram_total(self) -> int:
        return sum(g.total for g in self.usable_gpus)


def probe_machine(
    *,
    root: Path | str = "/",
    path: str | None = None,
    environ: dict[str, str] | None = None,
    platform: str | None = None,
    machine: str | None = None,
    affinity: set[int] | None = None,
    disk: Disk | None = None,
    server: OllamaServer | None = None,
    gpu_timeout: float = 3.0,
    use_nvml: bool = True,
) -> Machine:
    """Probe this machine (or a fake tree under `root`, for tests).

    `affinity` defaults to `os.sched_getaffinity` on the real root; `disk` to where the
    local server at `server` keeps its models (as it says itself, else `OLLAMA_MODELS` or
    the install's default).
    """
    started = time.perf_counter()
    base = Path(root)
    real = base == Path("/")
    env = dict(os.environ if environ is None else environ)
    plat = platform or sys.platform
    arch = machine or platform_module.machine()
    notes: list[str] = []
    sysctl = _sysctl(env.get("PATH", os.defpath) if path is None else path, gpu_timeout) \
        if plat == "darwin" else {}
    if plat.startswith("linux"):
        cpu, memory = _linux(base, real, affinity)
    elif plat == "darwin":
        cpu, memory = _darwin(sysctl, real)
    else:
        cpu, memory = _generic()
    tools = Tools(path=env.get("PATH", os.defpath) if path is None else path, root=base,
                  timeout=gpu_timeout, use_nvml=use_nvml and real)
    found = probe_gpus(tools, env, plat, arch, sysctl)
    notes += found.notes
    if memory.limit is not None:
        notes.append(f"cgroup memory limit {memory.limit / (1 << 30):.1f} GiB "
                     f"(the host has {memory.host_total / (1 << 30):.1f} GiB)")
    if disk is None:
        where = models_dir(environ=env, server=server)
        disk = Disk(path=str(where.path), source=where.source, free=where.free_bytes)
    os_name = {"win32": "windows", "cygwin": "windows"}.get(plat, plat.rstrip("0123456789"))
    return Machine(os=os_name, arch=arch, cpu=cpu, memory=memory, gpus=found.gpus, disk=disk,
                   notes=tuple(notes), probe_seconds=time.perf_counter() - started)


# -- Linux ----------------------------------------------------------------------------------


def _linux(root: Path, real: bool, affinity: set[int] | None) -> tuple[CPU, Memory]:
    processors = _cpuinfo(root / "proc/cpuinfo")
    host_logical = len(processors) or (os.cpu_count() or 1)
    if affinity is None and real and hasattr(os, "sched_getaffinity"):
        affinity = set(os.sched_getaffinity(0))
    ids = [p for p in processors if affinity is None or p in affinity] \
        or sorted(affinity or range(host_logical))
    limits = read_limits(root)
    first = processors[ids[0]] if ids and ids[0] in processors else \
        next(iter(processors.values()), {})
    cores = {(processors[i].get("physical id", "0"), processors[i]["core id"])
             for i in ids if i in processors and "core id" in processors[i]}
    physical = len(cores) if cores else (len(ids) if processors else None)
    cpu = CPU(
        model=first.get("model name") or first.get("Model") or first.get("Hardware")
        or platform_module.processor() or "unknown CPU",
        logical=len(ids),
        physical=physical,
        quota=limits.cpu_quota,
        flags=_flags(first.get("flags") or first.get("Features") or ""),
        host_logical=host_logical,
    )
    info = _meminfo(root / "proc/meminfo")
    if not info and real:
        import psutil  # some 10 ms: only where /proc says nothing

        vm, sw = psutil.virtual_memory(), psutil.swap_memory()
        info = {"MemTotal": vm.total, "MemAvailable": vm.available,
                "SwapTotal": sw.total, "SwapFree": sw.free}
    host_total = info.get("MemTotal", 0)
    available = info.get("MemAvailable",
                         info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0))
    swap_total, swap_free = info.get("SwapTotal", 0), info.get("SwapFree", 0)
    total = host_total
    limit = limits.memory_limit if limits.memory_limit and (
        not host_total or limits.memory_limit < host_total) else None
    if limit is not None:
        total = limit
        available = min(available, max(limit - (limits.memory_used or 0), 0))
    if limits.swap_limit is not None:
        swap_total = min(swap_total, limits.swap_limit)
        swap_free = min(swap_free, swap_total)
    memory = Memory(total=total, available=available, swap_total=swap_total,
                    swap_free=swap_free, host_total=host_total, limit=limit,
                    cgroup=limits.version)
    return cpu, memory


def _cpuinfo(path: Path) -> dict[int, dict[str, str]]:
    """/proc/cpuinfo as {processor number: fields}; shared fields (ARM) copied to each."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    processors: dict[int, dict[str, str]] = {}
    shared: dict[str, str] = {}
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if fields.get("processor", "").isdigit():
            processors[int(fields["processor"])] = fields
        else:
            shared.update(fields)  # e.g. "Hardware" / "Model" after the list on ARM
    for fields in processors.values():
        for key, value in shared.items():
            fields.setdefault(key, value)
    return processors


def _flags(text: str) -> tuple[str, ...]:
    words = set(text.lower().split())
    x86 = tuple(f for f in FLAGS if f in words)
    arm = tuple(dict.fromkeys(v for k, v in _ARM_FLAGS.items() if k in words))
    return x86 or arm


def _meminfo(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    info = {}
    for line in lines:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            info[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return info


# -- macOS ----------------------------------------------------------------------------------

_SYSCTL_KEYS = ("hw.memsize", "hw.physicalcpu", "hw.logicalcpu", "machdep.cpu.brand_string",
                "machdep.cpu.features", "machdep.cpu.leaf7_features", "iogpu.wired_limit_mb",
                "vm.swapusage")


def _sysctl(path: str, timeout: float) -> dict[str, str]:
    """One `sysctl` call for every key; unknown keys (older macOS) are just absent."""
    exe = shutil.which("sysctl", path=path) or ("/usr/sbin/sysctl"
                                                 if Path("/usr/sbin/sysctl").exists() else None)
    if exe is None:
        return {}
    try:
        done = subprocess.run([exe, *_SYSCTL_KEYS], capture_output=True, text=True,
                              timeout=timeout, check=False, errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return {}
    values = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _darwin(sysctl: dict[str, str], real: bool) -> tuple[CPU, Memory]:
    logical = _int(sysctl.get("hw.logicalcpu")) or os.cpu_count() or 1
    features = " ".join((sysctl.get("machdep.cpu.features", ""),
                         sysctl.get("machdep.cpu.leaf7_features", ""))).lower()
    features = features.replace("avx1.0", "avx")
    brand = sysctl.get("machdep.cpu.brand_string", "")
    flags = _flags(features) or (("neon", "dotprod") if brand.startswith("Apple") else ())
    cpu = CPU(model=brand or "unknown CPU", logical=logical,
              physical=_int(sysctl.get("hw.physicalcpu")), quota=None, flags=flags,
              host_logical=logical)
    total = _int(sysctl.get("hw.memsize")) or 0
    available = total
    swap_total = swap_free = 0
    if real:
        import psutil  # some 10 ms: only on macOS

        vm, sw = psutil.virtual_memory(), psutil.swap_memory()
        total, available, swap_total, swap_free = vm.total, vm.available, sw.total, sw.free
    memory = Memory(total=total, available=available, swap_total=swap_total,
                    swap_free=swap_free, host_total=total)
    return cpu, memory


# -- elsewhere (Windows, BSD): psutil, and py-cpuinfo for the CPU's features ----------------


def _generic() -> tuple[CPU, Memory]:
    import psutil  # some 10 ms: only where neither /proc nor sysctl tells

    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    info = _slow_cpuinfo()
    logical = len(psutil.Process().cpu_affinity() or []) if hasattr(
        psutil.Process, "cpu_affinity") else (os.cpu_count() or 1)
    cpu = CPU(model=str(info.get("brand_raw") or platform_module.processor() or "unknown CPU"),
              logical=logical or (os.cpu_count() or 1),
              physical=psutil.cpu_count(logical=False), quota=None,
              flags=_flags(" ".join(info.get("flags", []))),
              host_logical=os.cpu_count() or 1)
    memory = Memory(total=vm.total, available=vm.available, swap_total=sw.total,
                    swap_free=sw.free, host_total=vm.total)
    return cpu, memory


_CPUINFO_CACHE: dict[str, object] = {}


def _slow_cpuinfo() -> dict[str, object]:
    """py-cpuinfo: about a second, so once per process and only where nothing else works."""
    if not _CPUINFO_CACHE:
        try:
            import cpuinfo  # its probe takes a second: only when /proc has no model

            _CPUINFO_CACHE.update(cpuinfo.get_cpu_info())
        except Exception:  # noqa: BLE001 - a CPU we cannot describe is not an error
            _CPUINFO_CACHE["brand_raw"] = ""
    return _CPUINFO_CACHE


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None
