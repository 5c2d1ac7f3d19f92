"""The machine probe: CPU, RAM (container limits), GPUs of every kind, on fake trees.

Fake /proc and /sys trees live in temp dirs and fake GPU tools on a temp PATH; their
outputs are real tools' outputs (tests/hardware_fakes.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from provision.cli import main
from provision.hardware.machine import Disk, probe_machine
from tests.hardware_fakes import (
    CPUINFO_ARM,
    GIB,
    MIB,
    NVIDIA_SMI_470_NO_CC,
    NVIDIA_SMI_550,
    NVIDIA_SMI_NO_DRIVER,
    SYSCTL_M2_PRO,
    amd_smi,
    amd_sysfs,
    cgroup_v2,
    cpuinfo_x86,
    executable,
    linux_tree,
    printing,
    rocm_smi,
    write,
)

DISK = Disk(path="/models", source="assumed", free=100 * GIB)


def probe(root: Path, bin_dir: Path | None = None, **kwargs):
    bin_dir = bin_dir or root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("environ", {})
    kwargs.setdefault("platform", "linux")
    kwargs.setdefault("machine", "x86_64")
    return probe_machine(root=root, path=str(bin_dir), disk=DISK, **kwargs)


# -- CPU ------------------------------------------------------------------------------------


def test_cpu_model_cores_and_flags_from_proc_cpuinfo(tmp_path: Path) -> None:
    linux_tree(tmp_path, cpuinfo=cpuinfo_x86(sockets=2, cores=8, threads=2))
    m = probe(tmp_path)
    assert m.cpu.model == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert (m.cpu.logical, m.cpu.physical, m.cpu.host_logical) == (32, 16, 32)
    assert m.cpu.flags == ("avx", "avx2", "avx512f", "fma", "f16c")


def test_affinity_limits_cores_to_the_allowed_cpus(tmp_path: Path) -> None:
    # CPUs 0-3 are the first threads of 4 cores; 16-19 their hyperthread siblings.
    linux_tree(tmp_path, cpuinfo=cpuinfo_x86(sockets=2, cores=8, threads=2))
    m = probe(tmp_path, affinity={0, 1, 2, 3, 16, 17, 18, 19})
    assert (m.cpu.logical, m.cpu.physical, m.cpu.host_logical) == (8, 4, 32)


def test_cgroup_v2_cpu_max_is_a_quota_in_cpus(tmp_path: Path) -> None:
    linux_tree(tmp_path, cpuinfo=cpuinfo_x86(cores=8, threads=2))
    cgroup_v2(tmp_path, "/ci.slice/job.scope", cpu_max="250000 100000\n")
    m = probe(tmp_path)
    assert m.cpu.quota == 2.5 and m.cpu.usable == 2.5 and m.cpu.logical == 16


def test_arm_cpu_reports_neon_and_dotprod(tmp_path: Path) -> None:
    linux_tree(tmp_path, cpuinfo=CPUINFO_ARM)
    m = probe(tmp_path, machine="aarch64")
    assert m.cpu.flags == ("neon", "dotprod")
    assert m.cpu.model == "Neoverse-N1 board" and m.cpu.logical == 2


# -- RAM and container limits ------------------------------------------------------------


def test_ram_and_swap_from_meminfo_without_cgroups(tmp_path: Path) -> None:
    linux_tree(tmp_path, total=64 * GIB, available=50 * GIB, swap=8 * GIB)
    m = probe(tmp_path)
    assert (m.memory.total, m.memory.available) == (64 * GIB, 50 * GIB)
    assert (m.memory.swap_total, m.memory.swap_free, m.memory.limit) == (8 * GIB, 8 * GIB, None)


def test_cgroup_v2_memory_limit_caps_total_and_available(tmp_path: Path) -> None:
    linux_tree(tmp_path, total=64 * GIB, available=60 * GIB)
    cgroup_v2(tmp_path, "/ci.slice/job.scope", memory_max=f"{7 * GIB}\n",
              memory_current=f"{3 * GIB}\n",
              memory_stat=f"anon {2 * GIB}\nfile {1 * GIB}\ninactive_file {GIB // 2}\n")
    write(tmp_path, "sys/fs/cgroup/ci.slice/memory.max", "max\n")
    m = probe(tmp_path)
    assert m.memory.total == 7 * GIB and m.memory.host_total == 64 * GIB
    # Page cache that can be dropped (inactive_file) does not count as used.
    assert m.memory.available == 7 * GIB - (3 * GIB - GIB // 2)
    assert m.memory.limit == 7 * GIB and m.memory.cgroup == "v2"
    assert any("cgroup memory limit 7.0 GiB" in n for n in m.notes)


def test_a_parents_smaller_limit_applies_to_its_children(tmp_path: Path) -> None:
    linux_tree(tmp_path, total=64 * GIB, available=60 * GIB)
    cgroup_v2(tmp_path, "/runner/job", memory_max="max\n")
    write(tmp_path, "sys/fs/cgroup/runner/memory.max", f"{12 * GIB}\n")
    assert probe(tmp_path).memory.total == 12 * GIB


def test_cgroup_v2_swap_max_zero_means_no_swap(tmp_path: Path) -> None:
    linux_tree(tmp_path, total=16 * GIB, available=10 * GIB, swap=4 * GIB)
    cgroup_v2(tmp_path, "/", memory_max=f"{8 * GIB}\n")
    write(tmp_path, "sys/fs/cgroup/memory.swap.max", "0\n")
    m = probe(tmp_path)
    assert (m.memory.swap_total, m.memory.swap_free) == (0, 0)


def test_cgroup_v1_docker_without_cgroup_namespace(tmp_path: Path) -> None:
    """Docker on a v1 host: the path is the host's, the mount starts at the container."""
    linux_tree(tmp_path, total=32 * GIB, available=30 * GIB)
    cid = "/docker/4f1c2e3d5a6b"
    write(tmp_path, "proc/self/cgroup",
          f"12:memory:{cid}\n4:cpu,cpuacct:{cid}\n1:name=systemd:{cid}\n")
    write(tmp_path, "proc/self/mountinfo",
          f"650 640 0:41 {cid} /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
          f"651 640 0:42 {cid} /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup "
          "rw,cpu,cpuacct\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", f"{6 * GIB}\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.usage_in_bytes", f"{GIB}\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.stat", "cache 0\ntotal_inactive_file 0\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "150000\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    m = probe(tmp_path)
    assert (m.memory.total, m.memory.available) == (6 * GIB, 5 * GIB)
    assert m.cpu.quota == 1.5 and m.memory.cgroup == "v1"


def test_cgroup_v1_unlimited_is_no_limit(tmp_path: Path) -> None:
    linux_tree(tmp_path, total=32 * GIB, available=30 * GIB)
    write(tmp_path, "proc/self/cgroup", "4:memory:/\n3:cpu,cpuacct:/\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    m = probe(tmp_path)
    assert (m.memory.total, m.memory.limit, m.cpu.quota) == (32 * GIB, None, None)


# -- NVIDIA ---------------------------------------------------------------------------------


def test_nvidia_smi_cards_with_free_memory_and_compute_capability(tmp_path: Path) -> None:
    linux_tree(tmp_path)
    printing(tmp_path / "bin", "nvidia-smi", NVIDIA_SMI_550)
    m = probe(tmp_path)
    assert [g.name for g in m.gpus] == ["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3060"]
    g = m.gpus[0]
    assert (g.total, g.free) == (24564 * MIB, 22262 * MIB)  # used + free < total: reserved
    assert (g.vendor, g.library, g.compute, g.driver) == ("nvidia", "cuda", "8.9", "550.54.15")
    assert g.uuid.startswith("GPU-8f6f") and g.usable and g.bandwidth == 1008
    assert m.vram_total == (24564 + 12288) * MIB


def test_old_driver_without_compute_cap_and_a_card_too_old(tmp_path: Path) -> None:
    linux_tree(tmp_path)
    # The 470 driver rejects the compute_cap field (exit 2, message on stdout).
    printing(tmp_path / "bin", "nvidia-smi", 'Field "compute_cap" is not a valid field to '
             "query.\n", code=2, when="compute_cap", otherwise=(NVIDIA_SMI_470_NO_CC, 0))
    m = probe(tmp_path)
    assert [(g.name, g.compute, g.total) for g in m.gpus] == [("Tesla K80", "", 11441 * MIB)]
    assert m.gpus[0].usable  # compute capability unknown: not flagged
    printing(tmp_path / "bin", "nvidia-smi", NVIDIA_SMI_470_NO_CC.replace(
        "470.223.02", "470.223.02, 3.7"))
    k80 = probe(tmp_path).gpus[0]
    assert not k80.usable and "compute capability 3.7 < 5.0" in k80.why_unusable


def test_no_nvidia_tool_is_no_nvidia_gpu_not_an_error(tmp_path: Path) -> None:
    linux_tree(tmp_path)
    m = probe(tmp_path)
    assert m.gpus == () and m.notes == ()


def test_nvidia_smi_without_a_driver_is_a_note(tmp_path: Path) -> None:
    linux_tree(tmp_path)
    printing(tmp_path / "bin", "nvidia-smi", NVIDIA_SMI_NO_DRIVER, code=9)
    m = probe(tmp_path)
    assert m.gpus == ()
    assert m.notes == ("nvidia-smi failed: NVIDIA-SMI has failed because it couldn't "
                       "communicate with the NVIDIA driver. Make sure that the latest NVIDIA "
                       "driver is installed and running.",)


def test_a_hung_nvidia_smi_is_cut_off(tmp_path: Path) -> None:
    linux_tree(tmp_path)
    executable(tmp_path / "bin", "nvidia-smi", "exec sleep 30\n")
    m = probe(tmp_path, gpu_timeout=0.3)
    assert m.gpus == () and m.notes == ("nvidia-smi failed: nvidia-smi did not answer within "
                                        "0.3 s",)


def test_cuda_visible_devices_hides_cards(tmp_path: Path) -> None:
    linux_tree(tmp_path)
    printing(tmp_path / "bin", "nvidia-smi", NVIDIA_SMI_550)
    m = probe(tmp_path, environ={"CUDA_VISIBLE_DEVICES": "1"})
    assert [g.name for g in m.gpus] == ["NVIDIA GeForce RTX 3060"]
    assert "CUDA_VISIBLE_DEVICES=1 hides 1 of 2 NVIDIA GPU(s)" in m.notes[0]
    by_uuid = probe(tmp_path, environ={"CUDA_VISIBLE_DEVICES": "GPU-8f6f2a5c"})
    assert [g.index for g in by_uuid.gpus] == [0]
    assert probe(tmp_path, environ={"CUDA_VISIBLE_DEVICES": "-1"}).gpus == ()


def test_nvml_is_used_when_pynvml_is_importable(tmp_path: Path, monkeypatch) -> None:
    """The optional nvidia-ml-py extra: a module named pynvml on sys.path."""
    module = tmp_path / "site" / "pynvml.py"
    write(tmp_path, "site/pynvml.py", '''
class NVMLError_LibraryNotFound(Exception):
    pass

class _Memory:
    total, free, used = 85899345920, 84986691584, 912654336

def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlSystemGetDriverVersion(): return "560.35.03"
def nvmlDeviceGetCount(): return 1
def nvmlDeviceGetHandleByIndex(i): return i
def nvmlDeviceGetMemoryInfo(h): return _Memory()
def nvmlDeviceGetCudaComputeCapability(h): return (9, 0)
def nvmlDeviceGetName(h): return b"NVIDIA H100 80GB HBM3"
def nvmlDeviceGetUUID(h): return "GPU-5e6f7a8b-0000-1111-2222-333344445555"
''')
    monkeypatch.syspath_prepend(str(module.parent))
    monkeypatch.delitem(__import__("sys").modules, "pynvml", raising=False)
    linux_tree(tmp_path)
    from provision.hardware.gpus import Tools, nvidia_gpus

    notes: list[str] = []
    gpus = nvidia_gpus(Tools(path=str(tmp_path / "bin")), notes)
    assert [(g.name, g.total, g.free, g.compute, g.driver, g.source) for g in gpus] == [
        ("NVIDIA H100 80GB HBM3", 80 * GIB, 84986691584, "9.0", "560.35.03", "nvml")]
    assert gpus[0].bandwidth == 3350 and notes == []


# -- AMD ------------------------------------------------------------------------------------


def test_amd_from_sysfs_with_gfx_target_and_igpu_skipped(tmp_path: Path) -> None:
    linux_tree(tmp_path)
    amd_sysfs(tmp_path, [("Radeon RX 7900 XTX", 25753026560, 1157627904, 110000),
                         ("AMD Radeon Graphics", 512 * MIB, 64 * MIB, 110003)])
    m = probe(tmp_path)
    big, igpu = m.gpus
    assert (big.name, big.total, big.free, big.compute, big.library) == (
        "Radeon RX 7900 XTX", 25753026560, 25753026560 - 1157627904, "gfx1100", "rocm")
    assert big.usable and big.driver == "6.8.5" and big.bandwidth == 960
    assert not igpu.usable and "integrated GPU" in igpu.why_unusable
    assert igpu.compute == "gfx1103"
    assert m.usable_gpus == (big,)


def test_amd_from_rocm_smi_json_when_sysfs_says_nothing(tmp_path: Path) -> None:
    linux_tree(tmp_path)
    rocm_smi(tmp_path / "bin")
    m = probe(tmp_path)
    assert [(g.name, g.total, g.free, g.compute, g.driver, g.source) for g in m.gpus] == [
        ("Radeon RX 7900 XTX", 25753026560, 25753026560 - 1157627904, "gfx1100", "6.8.5",
         "rocm-smi")]


def test_amd_from_amd_smi_json(tmp_path: Path) -> None:
    linux_tree(tmp_path)
    amd_smi(tmp_path / "bin")
    m = probe(tmp_path)
    assert [(g.name, g.total, g.free, g.compute, g.driver, g.source) for g in m.gpus] == [
        ("AMD Instinct MI300X", 196592 * MIB, 196309 * MIB, "gfx942", "6.7.0", "amd-smi")]
    assert m.gpus[0].bandwidth == 5300


# -- Apple Silicon --------------------------------------------------------------------------


def test_apple_silicon_unified_memory_and_metal_share(tmp_path: Path) -> None:
    printing(tmp_path / "bin", "sysctl", SYSCTL_M2_PRO)
    m = probe(tmp_path, platform="darwin", machine="arm64")
    assert m.os == "darwin" and m.memory.total == 32 * GIB
    (gpu,) = m.gpus
    assert (gpu.vendor, gpu.library, gpu.unified, gpu.name) == (
        "apple", "metal", True, "Apple M2 Pro")
    assert gpu.total == 32 * GIB * 2 // 3  # 2/3 of RAM up to 32 GiB
    assert gpu.bandwidth == 200 and m.cpu.physical == 12


def test_apple_wired_limit_overrides_the_share(tmp_path: Path) -> None:
    printing(tmp_path / "bin", "sysctl", SYSCTL_M2_PRO.replace("hw.memsize: 34359738368",
                                                               "hw.memsize: 68719476736")
             .replace("iogpu.wired_limit_mb: 0", "iogpu.wired_limit_mb: 57344"))
    gpu = probe(tmp_path, platform="darwin", machine="arm64").gpus[0]
    assert gpu.total == 56 * GIB
    printing(tmp_path / "bin", "sysctl", SYSCTL_M2_PRO.replace("hw.memsize: 34359738368",
                                                               "hw.memsize: 68719476736"))
    assert probe(tmp_path, platform="darwin", machine="arm64").gpus[0].total == 48 * GIB


# -- the real machine and the command -----------------------------------------------------


def test_probe_of_this_machine_is_sane() -> None:
    m = probe_machine()
    assert m.cpu.logical >= 1 and m.cpu.host_logical >= m.cpu.logical
    assert 0 < m.memory.available <= m.memory.total
    assert m.disk.free is None or m.disk.free >= 0


def test_hardware_json_describes_the_machine_and_round_trips_as_assume(
        tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")  # nothing listens: no server needed
    assert main(["hardware", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "ollama-provision.hardware/1" and doc["models"] == []
    machine = doc["machine"]
    assert machine["memory"]["total"] > 0 and machine["cpu"]["logical"] >= 1
    # Saved on one machine, it describes that machine anywhere else.
    report = tmp_path / "server.json"
    report.write_text(json.dumps(doc))
    assert main(["hardware", "--json", "--assume", str(report)]) == 0
    again = json.loads(capsys.readouterr().out)["machine"]
    for key in ("cpu", "memory", "gpus", "disk", "os"):
        assert again[key] == machine[key]
    assert again["source"].startswith("assumed")
