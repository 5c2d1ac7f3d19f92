"""`--assume`: describe another machine (a server, a CI runner) instead of probing this one.

Two forms, combinable; later values win, GPUs add up:

- flags, comma-separated KEY=VALUE: `ram=64G,gpu=2x24G:RTX 4090,disk=500G`
- a profile file, TOML or JSON (`--assume runner.toml`): the same keys at the top level
  with `[[gpu]]` tables, or the `machine` object of `ollama-provision hardware --json`
  run on the other machine (so a report from there can be judged here).

Keys: `ram` (total; required), `ram-free` (default: ram), `swap`, `disk` (free space
for models), `cpu` (cores), `ram-bw` (GB/s), `os` (linux, darwin, windows), `ollama`
(the server version, which decides the default context). `gpu` takes `none`, `apple`
(unified memory: the Metal share of `ram`) or colon-separated parts in any order: a size
with an optional count and free memory (`24G`, `2x80G`, `24G/20G`), a vendor (`nvidia`,
`amd`), a bandwidth (`1008GB/s`), a compute capability (`cc=8.9`), and the rest as the
name (`RTX 4090`, which also looks up the bandwidth). Sizes are binary, like `free` and
`nvidia-smi` print them: `G`, `GB` and `GiB` all mean 2^30 bytes; a bare number is bytes.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from provision.errors import UsageError
from provision.hardware.gpus import GPU, amd_gpu, apple_gpu, nvidia_gpu
from provision.hardware.machine import CPU, Disk, Machine, Memory
from provision.hardware.speed import DEFAULT_RAM_BANDWIDTH
from provision.output import printable
from provision.versions import parse_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_KEYS = ("ram", "ram-free", "swap", "disk", "cpu", "ram-bw", "os", "ollama", "gpu", "name")
_LIBRARY = {"nvidia": "cuda", "amd": "rocm", "apple": "metal"}


@dataclass(frozen=True)
class Assumption:
    machine: Machine
    server_version: str | None  # `ollama=`: the version whose defaults apply


MAX_BYTES = 1 << 60  # 1 EiB: more than any machine has, less than any overflow
MAX_GPUS = 64


def parse_size(text: str, what: str = "size") -> int:
    match = re.fullmatch(r"\s*(\d{1,20}(?:\.\d{1,20})?)\s*([KMGT]?)(?:I?B)?\s*", str(text),
                         re.IGNORECASE)
    if not match:
        raise UsageError(f"--assume: '{_shown(text)}' is not a {what} like 16G, 512M or 1.5T")
    return _bounded_size(float(match[1]) * _UNITS[match[2].upper()], what)


def _bounded_size(value: float, what: str) -> int:
    if not 0 <= value <= MAX_BYTES:  # also refuses nan
        raise UsageError(f"--assume: the {what} is out of range (at most 1 EiB)")
    return int(value)


def _shown(text: Any) -> str:
    """A value quoted in an error: one short line."""
    value = str(text)
    return printable(value if len(value) <= 60 else value[:60] + "...")


def parse_assume(specs: list[str]) -> Assumption:
    """Merge every --assume into one machine; raise UsageError (exit 2) on bad input."""
    values: dict[str, Any] = {}
    gpus: list[dict[str, Any]] = []
    profile_machine: Machine | None = None
    version: str | None = None
    for spec in specs:
        text = spec.strip()
        if not text:
            raise UsageError("--assume needs KEY=VALUE pairs or a profile file")
        path = Path(text).expanduser()
        if "=" not in text or _is_file(path):
            data = _load_profile(path)
            if _is_report(data):
                machine_data = data.get("machine", data)
                profile_machine = machine_from_json(machine_data)
                version = (data.get("server") or {}).get("version") or version
                continue
            for key, value in data.items():
                if key in ("gpu", "gpus"):
                    items = value if isinstance(value, list) else [value]
                    gpus += [_gpu_entry(item) for item in items]
                else:
                    values[_key(key)] = value
        else:
            for pair in _split_pairs(text):
                key, _, value = pair.partition("=")
                key = _key(key)
                if key == "gpu":
                    gpus += [_gpu_entry(part) for part in value.split("+")]
                else:
                    values[key] = value.strip()
    version = _ollama_version(values.pop("ollama")) if "ollama" in values else version
    if profile_machine is not None and not values and not gpus:
        return Assumption(replace(profile_machine, source=f"assumed ({profile_machine.source})"),
                          version)
    return Assumption(_build(values, gpus, profile_machine), version)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def _ollama_version(value: Any) -> str:
    text = str(value).strip()
    if len(text) > 40 or parse_version(text) is None and text not in ("0.0.0", "dev"):
        raise UsageError(f"--assume: ollama='{_shown(text)}' is not a version like 0.13.5")
    return text


def _split_pairs(text: str) -> list[str]:
    pairs: list[str] = []
    for chunk in text.split(","):
        if "=" in chunk or not pairs:
            pairs.append(chunk.strip())
        else:
            pairs[-1] += "," + chunk  # a comma inside a value (a GPU name)
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--assume: '{_shown(pair)}' is not KEY=VALUE",
                             hint="e.g. --assume ram=32G,gpu=24G,disk=200G")
    return pairs


def _key(key: str) -> str:
    normal = key.strip().lower().replace("_", "-")
    normal = {"memory": "ram", "ram-available": "ram-free", "ram-bandwidth": "ram-bw",
              "cores": "cpu", "version": "ollama", "ollama-version": "ollama",
              "gpus": "gpu"}.get(normal, normal)
    if normal not in _KEYS:
        raise UsageError(f"--assume: unknown key '{_shown(key)}'",
                         hint="keys: " + ", ".join(k for k in _KEYS if k != "name"))
    return normal


def _load_profile(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"--assume: cannot read profile {path}: {exc.strerror or exc}",
                         hint="flags look like ram=32G,gpu=24G") from None
    try:
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"--assume: {path} is not valid TOML or JSON: "
                         f"{_shown(exc) if not isinstance(exc, RecursionError) else 'too deep'}"
                         ) from None
    if not isinstance(data, dict):
        raise UsageError(f"--assume: {path} must hold a table/object of machine facts")
    return data


def _is_report(data: dict[str, Any]) -> bool:
    machine = data.get("machine", data)
    return isinstance(machine, dict) and isinstance(machine.get("memory"), dict)


def _gpu_entry(item: Any) -> dict[str, Any]:
    """A GPU from a flag string (`2x24G:nvidia:RTX 4090`) or a profile table."""
    if isinstance(item, dict):
        entry = {str(k).lower(): v for k, v in item.items()}
        for key in ("memory", "total", "free"):
            if key in entry:
                entry[key] = _size(entry[key], "GPU memory")
        entry["count"] = _count(entry.get("count", 1))
        if "bandwidth" in entry:
            entry["bandwidth"] = _number(entry["bandwidth"], "GPU bandwidth")
        if "memory" not in entry and "total" not in entry and entry.get("vendor") != "apple":
            raise UsageError("--assume: a [[gpu]] entry needs memory = \"24G\"")
        return entry
    text = str(item).strip()
    if text.lower() in ("none", "", "0"):
        return {"none": True}
    entry: dict[str, Any] = {"count": 1}
    name_parts = []
    for part in text.split(":"):
        word = part.strip()
        low = word.lower()
        size = re.fullmatch(r"(?:(\d+)\s*x\s*)?([\d.]+\s*[kmgt]?(?:i?b)?)(?:/([\d.]+\s*[kmgt]?"
                            r"(?:i?b)?))?", low)
        if low in _LIBRARY:
            entry["vendor"] = low
        elif re.fullmatch(r"[\d.]+\s*gb/s", low):
            entry["bandwidth"] = _number(low[:-4], "GPU bandwidth")
        elif low.startswith("cc="):
            entry["compute"] = word[3:]
        elif size and re.search(r"[kmgt]", low):
            entry["count"] = _count(size[1] or 1)
            entry["memory"] = parse_size(size[2], "GPU memory")
            if size[3]:
                entry["free"] = parse_size(size[3], "GPU memory")
        elif word:
            name_parts.append(word)
    if name_parts:
        entry["name"] = " ".join(name_parts)
    if "memory" not in entry and entry.get("vendor") != "apple":
        raise UsageError(f"--assume: gpu='{_shown(text)}' has no memory size",
                         hint="e.g. gpu=24G, gpu=2x80G:H100, gpu=amd:24G, gpu=apple, gpu=none")
    return entry


def _build(values: dict[str, Any], gpu_entries: list[dict[str, Any]],
           base: Machine | None) -> Machine:
    if "ram" not in values and base is None:
        raise UsageError("--assume needs ram=SIZE (the other machine's RAM)",
                         hint="e.g. --assume ram=32G,gpu=24G")
    os_name = str(values.get("os", base.os if base else "linux")).lower()
    if os_name not in ("linux", "darwin", "windows", "macos"):
        raise UsageError(f"--assume: os='{_shown(os_name)}' is not linux, darwin or windows")
    os_name = "darwin" if os_name == "macos" else os_name
    total = _size(values["ram"], "RAM") if "ram" in values else base.memory.total  # type: ignore[union-attr]
    free = _size(values["ram-free"], "RAM") if "ram-free" in values else total
    if free > total:
        raise UsageError("--assume: ram-free is larger than ram")
    swap = _size(values["swap"], "swap") if "swap" in values else 0
    bandwidth = _number(values["ram-bw"], "ram-bw") if "ram-bw" in values else None
    cores = int(_number(values["cpu"], "cpu")) if "cpu" in values else (
        base.cpu.logical if base else 0)
    apple = any(e.get("vendor") == "apple" for e in gpu_entries) or os_name == "darwin"
    gpus: list[GPU] = []
    if not any(e.get("none") for e in gpu_entries):
        for entry in gpu_entries:
            gpus += _gpus(entry, len(gpus), total)
    elif base is None:
        gpus = []
    if base is not None and not gpu_entries:
        gpus = list(base.gpus)
    if apple:
        os_name = "darwin"
        unified = next((g for g in gpus if g.unified), None)
        bandwidth = bandwidth or (unified.bandwidth if unified else None)
    disk = Disk(path="(assumed)", source="assumed",
                free=_size(values["disk"], "disk") if "disk" in values else None)
    if base is not None and "disk" not in values:
        disk = base.disk
    memory = Memory(total=total, available=free, swap_total=swap, swap_free=swap,
                    host_total=total, bandwidth=bandwidth or DEFAULT_RAM_BANDWIDTH,
                    bandwidth_assumed=bandwidth is None)
    cpu = CPU(model=str(values.get("name") or "assumed CPU"), logical=cores or 0,
              physical=None, quota=None, flags=(), host_logical=cores or 0)
    if base is not None:
        cpu = replace(base.cpu, logical=cores or base.cpu.logical)
    label = ", ".join(f"{k}={v}" for k, v in values.items()) or "profile"
    return Machine(os=os_name, arch="arm64" if apple else "x86_64", cpu=cpu, memory=memory,
                   gpus=tuple(gpus), disk=disk, source=f"assumed ({label})")


def _gpus(entry: dict[str, Any], start: int, ram: int) -> list[GPU]:
    vendor = str(entry.get("vendor") or "nvidia").lower()
    if vendor == "apple":
        name = str(entry.get("name") or "Apple Silicon")
        if not name.lower().startswith("apple"):
            name = f"Apple {name}"
        found = apple_gpu({"hw.memsize": str(ram), "machdep.cpu.brand_string": name})
        if entry.get("memory"):
            found = [replace(found[0], total=entry["memory"], free=entry["memory"])]
        if entry.get("bandwidth"):
            found = [replace(found[0], bandwidth=float(entry["bandwidth"]))]
        return [replace(g, source="assumed") for g in found]
    if vendor not in _LIBRARY:
        raise UsageError(f"--assume: GPU vendor '{_shown(vendor)}' is not nvidia, amd or apple")
    total = _size(entry.get("memory") or entry.get("total") or 0, "GPU memory")
    free = _size(entry.get("free") or total, "GPU memory")
    if free > total:
        raise UsageError("--assume: a GPU's free memory is larger than its total")
    name = str(entry.get("name") or f"assumed {vendor.upper()} GPU")
    compute = str(entry.get("compute") or "")
    if compute and vendor == "nvidia":
        _version(compute)
    found = []
    for i in range(_count(entry.get("count") or 1)):
        gpu = nvidia_gpu(start + i, name, total, free, "", compute, "", "assumed") \
            if vendor == "nvidia" else amd_gpu(start + i, name, total, free, "", compute,
                                               "assumed")
        if entry.get("bandwidth"):
            gpu = replace(gpu, bandwidth=float(entry["bandwidth"]))
        found.append(gpu)
    return found


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise UsageError(f"--assume: compute capability '{_shown(text)}' is not like 8.9") \
            from None


def _size(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise UsageError(f"--assume: the {what} '{value}' is not a size like 16G")
    if isinstance(value, (int, float)):
        return _bounded_size(value, what)
    return parse_size(str(value), what)


def _number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"--assume: {what}='{_shown(value)}' is not a number") from None
    if not 0 <= number <= 1e9:  # also refuses inf and nan
        raise UsageError(f"--assume: {what}='{_shown(value)}' is out of range")
    return number


def _count(value: Any) -> int:
    number = _number(value, "GPU count")
    if not number.is_integer() or not 1 <= number <= MAX_GPUS:
        raise UsageError(f"--assume: a GPU count of {_shown(value)} is not 1 to {MAX_GPUS}")
    return int(number)


# -- the machine as JSON (the `machine` object of `hardware --json`), and back ---------------


def machine_to_json(machine: Machine) -> dict[str, Any]:
    return {
        "source": machine.source,
        "os": machine.os,
        "arch": machine.arch,
        "cpu": {"model": machine.cpu.model, "logical": machine.cpu.logical or None,
                "physical": machine.cpu.physical, "quota": machine.cpu.quota,
                "usable": machine.cpu.usable or None, "flags": list(machine.cpu.flags),
                "host_logical": machine.cpu.host_logical or None},
        "memory": {"total": machine.memory.total, "available": machine.memory.available,
                   "swap_total": machine.memory.swap_total,
                   "swap_free": machine.memory.swap_free,
                   "host_total": machine.memory.host_total,
                   "cgroup_limit": machine.memory.limit, "cgroup": machine.memory.cgroup,
                   "bandwidth_gbs": machine.memory.bandwidth,
                   "bandwidth_assumed": machine.memory.bandwidth_assumed},
        "gpus": [{"index": g.index, "vendor": g.vendor, "library": g.library, "name": g.name,
                  "total": g.total, "free": g.free, "driver": g.driver, "compute": g.compute,
                  "uuid": g.uuid, "unified": g.unified, "usable": g.usable,
                  "why_unusable": g.why_unusable, "bandwidth_gbs": g.bandwidth,
                  "source": g.source} for g in machine.gpus],
        "disk": {"path": machine.disk.path, "source": machine.disk.source,
                 "free": machine.disk.free},
        "notes": list(machine.notes),
        "probe_ms": round(machine.probe_seconds * 1000, 1),
    }


def machine_from_json(data: dict[str, Any]) -> Machine:
    try:
        cpu, memory, disk = data["cpu"], data["memory"], data.get("disk") or {}
        gpus = tuple(
            GPU(index=int(g.get("index", i)), vendor=str(g["vendor"]),
                library=str(g.get("library") or _LIBRARY.get(g["vendor"], "cuda")),
                name=str(g.get("name", "")), total=int(g["total"]),
                free=int(g.get("free", g["total"])), driver=str(g.get("driver", "")),
                compute=str(g.get("compute", "")), uuid=str(g.get("uuid", "")),
                unified=bool(g.get("unified", False)), usable=bool(g.get("usable", True)),
                why_unusable=str(g.get("why_unusable", "")),
                bandwidth=g.get("bandwidth_gbs"), source=str(g.get("source", "report")))
            for i, g in enumerate(data.get("gpus") or []))
        return Machine(
            os=str(data.get("os", "linux")), arch=str(data.get("arch", "x86_64")),
            cpu=CPU(model=str(cpu.get("model", "")), logical=int(cpu.get("logical") or 0),
                    physical=cpu.get("physical"), quota=cpu.get("quota"),
                    flags=tuple(cpu.get("flags") or ()),
                    host_logical=int(cpu.get("host_logical") or cpu.get("logical") or 0)),
            memory=Memory(total=int(memory["total"]), available=int(memory["available"]),
                          swap_total=int(memory.get("swap_total") or 0),
                          swap_free=int(memory.get("swap_free") or 0),
                          host_total=int(memory.get("host_total") or memory["total"]),
                          limit=memory.get("cgroup_limit"), cgroup=str(memory.get("cgroup", "")),
                          bandwidth=float(memory.get("bandwidth_gbs") or DEFAULT_RAM_BANDWIDTH),
                          bandwidth_assumed=bool(memory.get("bandwidth_assumed", True))),
            gpus=gpus,
            disk=Disk(path=str(disk.get("path", "")), source=str(disk.get("source", "report")),
                      free=disk.get("free")),
            source=str(data.get("source", "report")),
            notes=tuple(data.get("notes") or ()),
        )
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise UsageError("--assume: the machine report is incomplete or malformed "
                         f"({_shown(exc)})") from None
