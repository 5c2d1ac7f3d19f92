"""GPUs as Ollama would see them: NVIDIA, AMD, Apple Silicon; none is a normal answer.

- NVIDIA: NVML (`pynvml`, from the optional `nvidia-ml-py` extra) when importable, else
  `nvidia-smi` CSV. No driver or no tool means "no NVIDIA GPU", never an error; a tool
  that is there but fails (driver mismatch) is reported as a note.
- AMD: amdgpu's sysfs files (`mem_info_vram_total`/`_used`, KFD topology for the gfx
  target), else `rocm-smi` or `amd-smi` JSON (their key names vary between releases).
- Apple Silicon: unified memory; Metal lets the GPU wire about 2/3 of RAM up to 32 GiB
  and 3/4 above (`iogpu.wired_limit_mb` overrides). Read with `sysctl`.

Every external command runs with a time limit, found on the PATH given (tests put fake
`nvidia-smi`/`rocm-smi`/`sysctl` executables there), and every sysfs path is under
`root`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from provision.hardware.speed import gpu_bandwidth

MIB = 1 << 20
GIB = 1 << 30
MIN_CUDA_COMPUTE = (5, 0)  # Ollama's CUDA builds need compute capability 5.0
AMD_IGPU_LIMIT = GIB  # Ollama treats an AMD GPU reporting less VRAM as an integrated GPU

T = TypeVar("T")


@dataclass(frozen=True)
class GPU:
    index: int
    vendor: str  # "nvidia", "amd", "apple"
    library: str  # Ollama's backend: "cuda", "rocm", "metal"
    name: str
    total: int  # bytes
    free: int  # bytes not used by anything (other processes' use is not free)
    driver: str = ""
    compute: str = ""  # "8.9" (CUDA compute capability), "gfx1100" (AMD), "" unknown
    uuid: str = ""
    unified: bool = False  # shares system RAM (Apple)
    usable: bool = True  # would Ollama use it?
    why_unusable: str = ""
    bandwidth: float | None = None  # peak GB/s, None when the model is unknown
    source: str = ""  # "nvml", "nvidia-smi", "sysfs", "rocm-smi", "amd-smi", "sysctl", "assumed"


@dataclass(frozen=True)
class GPUProbe:
    gpus: tuple[GPU, ...]
    notes: tuple[str, ...]  # tools that exist but failed, devices hidden by env vars


@dataclass(frozen=True)
class Tools:
    """Where to look: PATH for executables, root for sysfs, and how long to wait."""

    path: str
    root: Path = Path("/")
    timeout: float = 3.0
    use_nvml: bool = True


def probe_gpus(tools: Tools, environ: dict[str, str], platform: str, machine: str,
               sysctl: dict[str, str] | None = None) -> GPUProbe:
    notes: list[str] = []
    gpus: list[GPU] = []
    if platform == "darwin":
        if machine in ("arm64", "aarch64") and sysctl:
            gpus += apple_gpu(sysctl)
        return GPUProbe(tuple(gpus), ())
    nvidia = nvidia_gpus(tools, notes)
    gpus += _visible(nvidia, environ.get("CUDA_VISIBLE_DEVICES"), "CUDA_VISIBLE_DEVICES", notes)
    if platform.startswith("linux"):
        amd = amd_gpus(tools, notes)
        hidden = environ.get("ROCR_VISIBLE_DEVICES", environ.get("HIP_VISIBLE_DEVICES"))
        gpus += _visible(amd, hidden, "ROCR_VISIBLE_DEVICES/HIP_VISIBLE_DEVICES", notes)
    return GPUProbe(tuple(gpus), tuple(notes))


def _visible(gpus: list[GPU], spec: str | None, var: str, notes: list[str]) -> list[GPU]:
    """Apply a *_VISIBLE_DEVICES list (indices or UUID prefixes), as the runtime does."""
    if spec is None or not gpus:
        return gpus
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    kept = []
    for item in wanted:
        if item.lstrip("-").isdigit():
            if int(item) < 0:
                break  # the CUDA runtime stops at the first invalid entry
            match = [g for g in gpus if g.index == int(item)]
        else:
            match = [g for g in gpus if g.uuid and g.uuid.startswith(item)]
        if not match:
            break
        if match[0] not in kept:
            kept.append(match[0])
    if len(kept) < len(gpus):
        notes.append(f"{var}={spec} hides {len(gpus) - len(kept)} of {len(gpus)} "
                     f"{gpus[0].vendor.upper()} GPU(s) (if the Ollama server has it too)")
    return kept


# -- running things with a time limit ------------------------------------------------------


def run_tool(tools: Tools, name: str, args: list[str]) -> tuple[int, str, str] | None:
    """(exit code, stdout, stderr) of a tool on PATH, None when it is not there."""
    exe = shutil.which(name, path=tools.path)
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True,
                              timeout=tools.timeout, check=False, errors="replace")
    except subprocess.TimeoutExpired:
        return (-1, "", f"{name} did not answer within {tools.timeout:g} s")
    except OSError as exc:
        return (-1, "", f"{name} could not run: {exc}")
    return (done.returncode, done.stdout, done.stderr)


def _with_timeout(fn: Callable[[], T], seconds: float) -> T | None:
    """Run fn in a daemon thread; None when it does not finish in time (a hung driver)."""
    box: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if errors:
        raise errors[0]
    return box[0] if box else None


# -- NVIDIA ---------------------------------------------------------------------------------

_SMI_FIELDS = "index,uuid,name,memory.total,memory.used,memory.free,driver_version,compute_cap"


def nvidia_gpus(tools: Tools, notes: list[str]) -> list[GPU]:
    if tools.use_nvml:
        found = _nvml_gpus(tools, notes)
        if found is not None:
            return found
    result = run_tool(tools, "nvidia-smi",
                      [f"--query-gpu={_SMI_FIELDS}", "--format=csv,noheader,nounits"])
    if result is not None and result[0] != 0 and "compute_cap" in result[1] + result[2]:
        # Drivers before ~510 do not know the compute_cap field: ask without it.
        result = run_tool(tools, "nvidia-smi", [
            f"--query-gpu={_SMI_FIELDS.rsplit(',', 1)[0]}", "--format=csv,noheader,nounits"])
    if result is None:
        return []
    code, out, err = result
    if code != 0:
        message = (err.strip() or out.strip() or f"exit code {code}").splitlines()[0]
        if "no devices were found" not in message.lower():
            notes.append(f"nvidia-smi failed: {message}")
        return []
    return parse_nvidia_smi(out)


def parse_nvidia_smi(text: str) -> list[GPU]:
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 7 or not fields[0].isdigit():
            continue
        total, used, free = (_mib(f) for f in fields[3:6])
        if total is None:
            continue  # "[N/A]": a device without its own memory figures
        if free is None:
            free = total - (used or 0)
        compute = fields[7] if len(fields) > 7 and _mib(fields[7]) is not None else ""
        gpus.append(nvidia_gpu(int(fields[0]), fields[2], total, free, fields[6], compute,
                            fields[1], "nvidia-smi"))
    return gpus


def _mib(text: str) -> int | None:
    try:
        return int(float(text) * MIB)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def nvidia_gpu(index: int, name: str, total: int, free: int, driver: str, compute: str,
            uuid: str, source: str) -> GPU:
    usable, why = True, ""
    if compute:
        major, _, minor = compute.partition(".")
        if (int(major), int(minor or 0)) < MIN_CUDA_COMPUTE:
            usable = False
            why = f"compute capability {compute} < 5.0: Ollama's CUDA build cannot use it"
    return GPU(index=index, vendor="nvidia", library="cuda", name=name, total=total,
               free=max(free, 0), driver=driver, compute=compute, uuid=uuid, usable=usable,
               why_unusable=why, bandwidth=gpu_bandwidth(name), source=source)


def _nvml_gpus(tools: Tools, notes: list[str]) -> list[GPU] | None:
    """GPUs through NVML; None when pynvml is not installed (fall back to nvidia-smi)."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None

    def query() -> list[GPU]:
        pynvml.nvmlInit()
        try:
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
            found = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                found.append(nvidia_gpu(i, _text(pynvml.nvmlDeviceGetName(handle)),
                                     int(memory.total), int(memory.free), driver,
                                     f"{major}.{minor}",
                                     _text(pynvml.nvmlDeviceGetUUID(handle)), "nvml"))
            return found
        finally:
            pynvml.nvmlShutdown()

    try:
        found = _with_timeout(query, tools.timeout)
    except Exception as exc:  # noqa: BLE001 - NVMLError subclasses, by name below
        if type(exc).__name__ in ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded",
                                  "NVMLError_NoPermission"):
            if type(exc).__name__ != "NVMLError_LibraryNotFound":
                notes.append(f"NVML: {exc}")
            return []  # no driver: no NVIDIA GPU
        notes.append(f"NVML failed ({exc}); trying nvidia-smi")
        return None
    if found is None:
        notes.append(f"NVML did not answer within {tools.timeout:g} s; trying nvidia-smi")
        return None
    return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- AMD ------------------------------------------------------------------------------------


def amd_gpus(tools: Tools, notes: list[str]) -> list[GPU]:
    found = _amd_sysfs(tools.root)
    if found:
        return found
    for tool, probe in (("rocm-smi", _rocm_smi), ("amd-smi", _amd_smi)):
        if shutil.which(tool, path=tools.path):
            found = probe(tools, notes)
            if found:
                return found
    return []


def _amd_sysfs(root: Path) -> list[GPU]:
    drm = root / "sys/class/drm"
    try:
        cards = sorted((p for p in drm.iterdir() if re.fullmatch(r"card\d+", p.name)),
                       key=lambda p: int(p.name[4:]))
    except OSError:
        return []
    targets = _kfd_gfx_targets(root)
    driver = _read(root / "sys/module/amdgpu/version")
    gpus: list[GPU] = []
    for card in cards:
        device = card / "device"
        if _read(device / "vendor").lower() != "0x1002":
            continue
        total = _int(_read(device / "mem_info_vram_total"))
        if total is None:
            continue
        used = _int(_read(device / "mem_info_vram_used")) or 0
        name = _read(device / "product_name") or f"AMD GPU {_read(device / 'device')}".strip()
        compute = targets[len(gpus)] if len(gpus) < len(targets) else ""
        gpus.append(amd_gpu(len(gpus), name, total, total - used, driver, compute, "sysfs"))
    return gpus


def _kfd_gfx_targets(root: Path) -> list[str]:
    """gfx targets of the GPU nodes in the KFD topology (CPU nodes report 0), in order."""
    nodes = root / "sys/class/kfd/kfd/topology/nodes"
    try:
        entries = sorted((p for p in nodes.iterdir() if p.name.isdigit()),
                         key=lambda p: int(p.name))
    except OSError:
        return []
    targets = []
    for node in entries:
        for line in _read(node / "properties").splitlines():
            key, _, value = line.partition(" ")
            if key == "gfx_target_version" and value.strip().isdigit() and int(value):
                targets.append(_gfx_name(int(value)))
    return targets


def _gfx_name(version: int) -> str:
    # 110000 -> gfx1100, 90010 -> gfx90a: major, then minor and stepping in hex.
    major, minor, step = version // 10000, version // 100 % 100, version % 100
    return f"gfx{major}{minor:x}{step:x}"


def amd_gpu(index: int, name: str, total: int, free: int, driver: str, compute: str,
         source: str) -> GPU:
    usable, why = True, ""
    if total < AMD_IGPU_LIMIT:
        usable, why = False, "integrated GPU (less than 1 GiB VRAM): Ollama skips it"
    elif compute.startswith("gfx") and len(compute) >= 4 and compute[3] in "678":
        usable, why = False, f"{compute} is older than ROCm supports (gfx9 and newer)"
    return GPU(index=index, vendor="amd", library="rocm", name=name, total=total,
               free=max(free, 0), driver=driver, compute=compute, usable=usable,
               why_unusable=why, bandwidth=gpu_bandwidth(name), source=source)


def _rocm_smi(tools: Tools, notes: list[str]) -> list[GPU]:
    result = run_tool(tools, "rocm-smi", ["--showproductname", "--showmeminfo", "vram",
                                          "--showdriverversion", "--json"])
    if result is None:
        return []
    code, out, err = result
    try:
        data = json.loads(out)
    except ValueError:
        notes.append(f"rocm-smi failed: {(err or out).strip().splitlines()[:1] or code}")
        return []
    return parse_rocm_smi(data)


def parse_rocm_smi(data: dict[str, Any]) -> list[GPU]:
    driver = ""
    system = data.get("system") if isinstance(data, dict) else None
    if isinstance(system, dict):
        driver = str(system.get("Driver version", ""))
    gpus = []
    cards = sorted((k for k in data if re.fullmatch(r"card\d+", k)), key=lambda k: int(k[4:]))
    for key in cards:
        card = data[key]
        total = _find_number(card, ("total memory",), exclude=("used",))
        used = _find_number(card, ("used memory", "total used"))
        if total is None:
            continue
        name = str(card.get("Card Series") or card.get("Card series") or card.get("Card model")
                   or card.get("Card Model") or f"AMD GPU {key}")
        compute = str(card.get("GFX Version") or card.get("gfx_version") or "")
        gpus.append(amd_gpu(int(key[4:]), name, total, total - (used or 0), driver, compute,
                         "rocm-smi"))
    return gpus


def _find_number(card: dict[str, Any], needles: tuple[str, ...],
                 exclude: tuple[str, ...] = ()) -> int | None:
    for key, value in card.items():
        low = key.lower()
        if any(n in low for n in needles) and not any(x in low for x in exclude):
            number = _int(str(value))
            if number is not None:
                return number
    return None


def _amd_smi(tools: Tools, notes: list[str]) -> list[GPU]:
    usage = run_tool(tools, "amd-smi", ["metric", "--mem-usage", "--json"])
    if usage is None or usage[0] != 0:
        if usage is not None:
            notes.append(f"amd-smi failed: {(usage[2] or usage[1]).strip()[:200]}")
        return []
    static = run_tool(tools, "amd-smi", ["static", "--asic", "--driver", "--json"])
    try:
        metric_data = json.loads(usage[1])
        static_data = json.loads(static[1]) if static and static[0] == 0 else []
    except ValueError:
        notes.append("amd-smi printed something that is not JSON")
        return []
    return parse_amd_smi(metric_data, static_data)


def parse_amd_smi(metric: Any, static: Any) -> list[GPU]:
    names: dict[int, tuple[str, str, str]] = {}
    for entry in _amd_smi_entries(static):
        asic = entry.get("asic") or {}
        driver = entry.get("driver") or {}
        names[int(entry.get("gpu", len(names)))] = (
            str(asic.get("market_name") or "AMD GPU"),
            str(asic.get("target_graphics_version") or ""),
            str(driver.get("version") or "") if isinstance(driver, dict) else "",
        )
    gpus = []
    for entry in _amd_smi_entries(metric):
        index = int(entry.get("gpu", len(gpus)))
        usage = entry.get("mem_usage") or {}
        total = _amd_smi_size(usage.get("total_vram"))
        if total is None:
            continue
        free = _amd_smi_size(usage.get("free_vram"))
        if free is None:
            free = total - (_amd_smi_size(usage.get("used_vram")) or 0)
        name, compute, driver = names.get(index, ("AMD GPU", "", ""))
        gpus.append(amd_gpu(index, name, total, free, driver, compute, "amd-smi"))
    return gpus


def _amd_smi_entries(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):  # newer releases wrap the list
        data = data.get("gpu_data", [data])
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


def _amd_smi_size(value: Any) -> int | None:
    """{"value": 196592, "unit": "MB"}, "196592 MB" or a bare number of MB."""
    unit = "MB"
    if isinstance(value, dict):
        unit = str(value.get("unit", "MB"))
        value = value.get("value")
    elif isinstance(value, str):
        parts = value.split()
        value, unit = parts[0] if parts else "", parts[1] if len(parts) > 1 else "MB"
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    scale = {"B": 1, "KB": 1 << 10, "MB": MIB, "GB": GIB}.get(unit.upper().replace("I", ""), MIB)
    return int(number * scale)


# -- Apple Silicon --------------------------------------------------------------------------


def apple_gpu(sysctl: dict[str, str]) -> list[GPU]:
    memsize = _int(sysctl.get("hw.memsize", ""))
    if not memsize:
        return []
    wired = _int(sysctl.get("iogpu.wired_limit_mb", "")) or 0
    if wired > 0:
        share = wired * MIB
    else:
        share = memsize * 2 // 3 if memsize <= 32 * GIB else memsize * 3 // 4
    name = sysctl.get("machdep.cpu.brand_string", "") or "Apple Silicon"
    return [GPU(index=0, vendor="apple", library="metal", name=name, total=share, free=share,
                unified=True, bandwidth=gpu_bandwidth(name), source="sysctl")]


# -- small helpers --------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        return None
