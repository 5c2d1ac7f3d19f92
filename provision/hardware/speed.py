"""Memory bandwidth, which bounds generation speed: tokens/s ≈ bandwidth ÷ bytes per token.

Generating one token reads every active weight once, so a device's peak memory
bandwidth (GB/s, from vendor spec sheets) divided by the weights it holds bounds the
speed; real runs reach about 55-85 % of peak. System RAM bandwidth cannot be read
from the OS: a typical dual-channel desktop figure is assumed unless `--assume
ram-bw=GB/s` says otherwise.
"""

from __future__ import annotations

EFFICIENCY = (0.55, 0.85)  # share of peak bandwidth real generation reaches
DEFAULT_RAM_BANDWIDTH = 50.0  # GB/s: dual-channel DDR4-3200 / DDR5-4800 class

# Peak bandwidth in GB/s by (part of) the name the driver reports; longest match wins.
GPU_BANDWIDTH: dict[str, float] = {
    # NVIDIA data centre
    "B200": 8000, "H200": 4800, "GH200": 4000, "H100 NVL": 3900, "H100 PCIe": 2000,
    "H100": 3350, "A100-SXM4-80GB": 2039, "A100 80GB": 1935, "A100": 1555, "A40": 696,
    "A30": 933, "A10G": 600, "A10": 600, "A16": 200, "A2": 200, "L40S": 864, "L40": 864,
    "L4": 300, "T4": 320, "V100": 900, "P100": 732, "P40": 347, "P4": 192,
    # NVIDIA workstation
    "RTX 6000 Ada": 960, "RTX A6000": 768, "RTX A5000": 768, "RTX A4000": 448,
    "Quadro RTX 8000": 672, "TITAN RTX": 672,
    # NVIDIA GeForce
    "RTX 5090": 1792, "RTX 5080": 960, "RTX 5070 Ti": 896, "RTX 5070": 672,
    "RTX 5060 Ti": 448, "RTX 4090": 1008, "RTX 4080 SUPER": 736, "RTX 4080": 717,
    "RTX 4070 Ti SUPER": 672, "RTX 4070 Ti": 504, "RTX 4070 SUPER": 504, "RTX 4070": 504,
    "RTX 4060 Ti": 288, "RTX 4060": 272, "RTX 3090 Ti": 1008, "RTX 3090": 936,
    "RTX 3080 Ti": 912, "RTX 3080": 760, "RTX 3070 Ti": 608, "RTX 3070": 448,
    "RTX 3060 Ti": 448, "RTX 3060": 360, "RTX 3050": 224, "RTX 2080 Ti": 616,
    "RTX 2080": 448, "RTX 2070": 448, "RTX 2060": 336, "GTX 1080 Ti": 484,
    "GTX 1080": 320, "GTX 1070": 256, "GTX 1660": 192, "GTX 1650": 128, "GTX 1060": 192,
    # AMD
    "MI300X": 5300, "MI300A": 5300, "MI250X": 3277, "MI250": 3277, "MI210": 1638,
    "MI100": 1229, "RX 7900 XTX": 960, "RX 7900 XT": 800, "RX 7900 GRE": 576,
    "RX 7800 XT": 624, "RX 7700 XT": 432, "RX 7600": 288, "RX 6950 XT": 576,
    "RX 6900 XT": 512, "RX 6800 XT": 512, "RX 6800": 512, "RX 6700 XT": 384,
    "PRO W7900": 864, "PRO W7800": 576,
    # Apple (unified memory: the same figure serves CPU and GPU)
    "M1 Ultra": 800, "M1 Max": 400, "M1 Pro": 200, "M1": 68, "M2 Ultra": 800,
    "M2 Max": 400, "M2 Pro": 200, "M2": 100, "M3 Ultra": 819, "M3 Max": 400,
    "M3 Pro": 150, "M3": 100, "M4 Max": 546, "M4 Pro": 273, "M4": 120,
}


def gpu_bandwidth(name: str) -> float | None:
    """Peak GB/s for a GPU by the name its driver reports, or None when unknown."""
    words = _words(name)
    best: tuple[int, float] | None = None
    for key, value in GPU_BANDWIDTH.items():
        # Whole words only: "A10" must not match "A100", nor "M2" match "M2 Pro" alone.
        if _words(key) in words and (best is None or len(key) > best[0]):
            best = (len(key), value)
    return None if best is None else best[1]


def _words(text: str) -> str:
    for mark in "-()_":
        text = text.replace(mark, " ")
    return " " + " ".join(text.upper().split()) + " "


def tokens_per_second(parts: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Range of tokens/s when each (bytes, GB/s) part is read once per token, in turn."""
    seconds = 0.0
    for nbytes, bandwidth in parts:
        if nbytes <= 0:
            continue
        if not bandwidth:
            return None
        seconds += nbytes / (bandwidth * 1e9)
    if seconds <= 0:
        return None
    return (EFFICIENCY[0] / seconds, EFFICIENCY[1] / seconds)


def speed_range(speed: tuple[float, float] | None) -> str:
    """An estimate as people read it: `3.2-5.0`, `15-24`, `>1000` (tokens/s); `-`: none."""
    if speed is None:
        return "-"
    low, high = speed
    if low > 1000:
        return ">1000"
    return f"{low:.0f}-{high:.0f}" if low >= 10 else f"{low:.1f}-{high:.1f}"


def speed_words(speed: tuple[float, float]) -> str:
    """In a sentence: `about 6.3-9.7 tokens/s`, `over 1000 tokens/s`."""
    shown = speed_range(speed)
    return f"over {shown[1:]} tokens/s" if shown.startswith(">") else f"about {shown} tokens/s"
