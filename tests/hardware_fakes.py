"""Fake machines for the hardware tests: /proc and /sys trees, and GPU tools on a PATH.

The outputs are what real tools print (nvidia-smi 550 on an RTX 4090 + RTX 3060, a
470-series driver that does not know `compute_cap`, rocm-smi 6.x, amd-smi 24.x on an
MI300X, macOS sysctl on an M2 Pro), so the parsers are tested against the real formats.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

GIB = 1 << 30
MIB = 1 << 20

NVIDIA_SMI_550 = (
    "0, GPU-8f6f2a5c-7d4b-4a0e-9f62-3e1b2c4d5e6f, NVIDIA GeForce RTX 4090, 24564, 1893, 22262, "
    "550.54.15, 8.9\n"
    "1, GPU-1c2d3e4f-5a6b-7c8d-9e0f-a1b2c3d4e5f6, NVIDIA GeForce RTX 3060, 12288, 256, 11787, "
    "550.54.15, 8.6\n"
)
# A 470 driver on a Tesla K80 board: no compute_cap field, and Kepler (3.7) is too old.
NVIDIA_SMI_470_NO_CC = """\
0, GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9, Tesla K80, 11441, 0, 11441, 470.223.02
"""
NVIDIA_SMI_NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
                        "driver. Make sure that the latest NVIDIA driver is installed and "
                        "running.\n")

ROCM_SMI_JSON = {
    "card0": {"Card Series": "Radeon RX 7900 XTX", "Card Model": "0x744c",
              "Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]", "Card SKU": "EXT",
              "Subsystem ID": "0x5304", "Device Rev": "0xc8", "Node ID": "1",
              "GUID": "45341", "GFX Version": "gfx1100",
              "VRAM Total Memory (B)": "25753026560",
              "VRAM Total Used Memory (B)": "1157627904"},
    "system": {"Driver version": "6.8.5"},
}
AMD_SMI_METRIC = [{"gpu": 0, "mem_usage": {
    "total_vram": {"value": 196592, "unit": "MB"}, "used_vram": {"value": 283, "unit": "MB"},
    "free_vram": {"value": 196309, "unit": "MB"},
    "total_visible_vram": {"value": 196592, "unit": "MB"},
    "used_visible_vram": {"value": 283, "unit": "MB"},
    "free_visible_vram": {"value": 196309, "unit": "MB"},
    "total_gtt": {"value": 128716, "unit": "MB"}, "used_gtt": {"value": 11, "unit": "MB"},
    "free_gtt": {"value": 128705, "unit": "MB"}}}]
AMD_SMI_STATIC = [{"gpu": 0, "asic": {
    "market_name": "AMD Instinct MI300X", "vendor_id": "0x1002",
    "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]", "subvendor_id": "0x1002",
    "device_id": "0x74a1", "subsystem_id": "0x74a1", "rev_id": "0x00",
    "asic_serial": "0x6A1F3B2C4D5E6F70", "oam_id": 0, "num_compute_units": 304,
    "target_graphics_version": "gfx942"}, "driver": {"name": "amdgpu", "version": "6.7.0"}}]

SYSCTL_M2_PRO = """\
hw.memsize: 34359738368
hw.physicalcpu: 12
hw.logicalcpu: 12
machdep.cpu.brand_string: Apple M2 Pro
iogpu.wired_limit_mb: 0
vm.swapusage: total = 0.00M  used = 0.00M  free = 0.00M  (encrypted)
"""


def executable(bin_dir: Path, name: str, script: str) -> Path:
    """A shell script on a fake PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)
    return path


def printing(bin_dir: Path, name: str, stdout: str, code: int = 0,
             when: str | None = None, otherwise: tuple[str, int] | None = None) -> Path:
    """A tool that prints `stdout` (optionally only when its arguments contain `when`)."""
    body = f"cat <<'EOF'\n{stdout}EOF\nexit {code}\n"
    if when is not None:
        other_out, other_code = otherwise or ("", 0)
        body = (f'case "$*" in *{when}*)\n{body};;\n*)\ncat <<\'EOF\'\n{other_out}EOF\n'
                f"exit {other_code}\n;;\nesac\n")
    return executable(bin_dir, name, body)


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cpuinfo_x86(sockets: int = 1, cores: int = 4, threads: int = 2,
                model: str = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
                flags: str = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 avx512f "
                "avx512bw avx512vl") -> str:
    """Like /proc/cpuinfo on x86: hyperthreads are listed after all first threads."""
    blocks = []
    n = 0
    for _thread in range(threads):
        for socket in range(sockets):
            for core in range(cores):
                blocks.append(
                    f"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\n"
                    f"physical id\t: {socket}\nsiblings\t: {cores * threads}\n"
                    f"core id\t\t: {core}\ncpu cores\t: {cores}\nflags\t\t: {flags}\n")
                n += 1
    return "\n".join(blocks) + "\n"


CPUINFO_ARM = """\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0c

processor\t: 1
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0c

Hardware\t: Neoverse-N1 board
"""


def meminfo(total: int, available: int, swap_total: int = 0, swap_free: int = 0) -> str:
    kb = 1024
    return (f"MemTotal:       {total // kb} kB\nMemFree:        {available // 2 // kb} kB\n"
            f"MemAvailable:   {available // kb} kB\nBuffers:          123456 kB\n"
            f"Cached:         4567890 kB\nSwapTotal:      {swap_total // kb} kB\n"
            f"SwapFree:       {swap_free // kb} kB\n")


def linux_tree(root: Path, *, total: int = 32 * GIB, available: int = 30 * GIB,
               cpuinfo: str | None = None, swap: int = 0) -> Path:
    write(root, "proc/meminfo", meminfo(total, available, swap, swap))
    write(root, "proc/cpuinfo", cpuinfo if cpuinfo is not None else cpuinfo_x86())
    return root


def cgroup_v2(root: Path, path: str = "/", **files: str) -> Path:
    """cgroup v2 at /sys/fs/cgroup, this process in `path`, with files (memory_max=...)."""
    write(root, "proc/self/cgroup", f"0::{path}\n")
    write(root, "proc/self/mountinfo",
          "24 1 0:22 / / rw,relatime - ext4 /dev/root rw\n"
          "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 "
          "cgroup2 rw,nsdelegate,memory_recursiveprot\n")
    directory = root / "sys/fs/cgroup" / path.lstrip("/")
    directory.mkdir(parents=True, exist_ok=True)
    write(root, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
    for name, text in files.items():
        write(directory, name.replace("_", ".", 1), text)
    return directory


def amd_sysfs(root: Path, cards: list[tuple[str, int, int, int]]) -> None:
    """amdgpu cards: (product name, VRAM total, VRAM used, gfx_target_version)."""
    write(root, "sys/class/kfd/kfd/topology/nodes/0/properties",
          "cpu_cores_count 16\nsimd_count 0\ngfx_target_version 0\n")
    for i, (name, total, used, gfx) in enumerate(cards):
        device = f"sys/class/drm/card{i}/device"
        write(root, f"{device}/vendor", "0x1002\n")
        write(root, f"{device}/device", "0x744c\n")
        write(root, f"{device}/product_name", name + "\n")
        write(root, f"{device}/mem_info_vram_total", f"{total}\n")
        write(root, f"{device}/mem_info_vram_used", f"{used}\n")
        write(root, f"sys/class/drm/card{i}-DP-1/status", "connected\n")  # a connector
        write(root, f"sys/class/kfd/kfd/topology/nodes/{i + 1}/properties",
              f"cpu_cores_count 0\nsimd_count 192\ngfx_target_version {gfx}\n"
              f"drm_render_minor {128 + i}\n")
    write(root, "sys/module/amdgpu/version", "6.8.5\n")


def rocm_smi(bin_dir: Path) -> Path:
    return printing(bin_dir, "rocm-smi", json.dumps(ROCM_SMI_JSON) + "\n")


def amd_smi(bin_dir: Path) -> Path:
    return executable(bin_dir, "amd-smi", (
        'case "$1" in\n'
        f"metric) cat <<'EOF'\n{json.dumps(AMD_SMI_METRIC)}\nEOF\n;;\n"
        f"static) cat <<'EOF'\n{json.dumps(AMD_SMI_STATIC)}\nEOF\n;;\n"
        "*) echo 'usage: amd-smi' >&2; exit 2;;\nesac\n"))
