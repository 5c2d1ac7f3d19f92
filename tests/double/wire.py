"""What goes on the wire the way Go writes it: JSON, times, sizes, versions, durations.

Ollama is a Go program: its JSON comes from `encoding/json` (compact, `<>&` escaped,
integral floats without `.0`, float32 values with their shortest digits), its times are
RFC3339Nano in UTC, its sizes `format.HumanBytes2` / `format.HumanNumber` (Ollama's
`format/bytes.go`, `format/format.go`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

KIB, MIB, GIB = 1024, 1024**2, 1024**3


class F32(float):
    """A float that came from a GGUF f32: encoded with float32's shortest digits, as Go
    encodes a float32 (`1e-5` -> `0.00001`)."""


_HTML_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _f32_shortest(x: float) -> str:
    target = struct.unpack("<f", struct.pack("<f", x))[0]
    for precision in range(1, 10):
        text = f"{target:.{precision}g}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == target:
            return text
    return repr(target)


def _go_float(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"json: unsupported value: {x}")
    digits = _f32_shortest(x) if isinstance(x, F32) else repr(float(x))
    value = abs(float(digits))
    if value != 0 and (value < 1e-6 or value >= 1e21):
        mantissa, _, exp = f"{Decimal(digits):e}".partition("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        sign = "-" if int(exp) < 0 else "+"
        exp_digits = str(abs(int(exp)))
        if sign == "+" and len(exp_digits) < 2:
            exp_digits = exp_digits.zfill(2)
        return f"{mantissa}e{sign}{exp_digits}"
    text = format(Decimal(digits), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _go_json_into(obj: Any, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=False).translate(_HTML_ESCAPES))
    elif isinstance(obj, int):
        out.append(str(int(obj)))
    elif isinstance(obj, float):
        out.append(_go_float(obj))
    elif isinstance(obj, dict):
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(key), ensure_ascii=False).translate(_HTML_ESCAPES))
            out.append(":")
            _go_json_into(value, out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        if obj and all(type(v) is str for v in obj):  # fast path: vocabularies
            text = json.dumps(list(obj), ensure_ascii=False, separators=(",", ":"))
            out.append(text.translate(_HTML_ESCAPES))
            return
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            _go_json_into(value, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(obj).__name__}")


def go_json(obj: Any) -> str:
    """JSON as Go's encoding/json writes it (what Ollama sends): compact, `<>&` escaped,
    integral floats without `.0`, float32 values with their shortest digits."""
    out: list[str] = []
    _go_json_into(obj, out)
    return "".join(out)


def rfc3339(ns: int) -> str:
    """Go's RFC3339Nano in UTC (`2026-11-21T07:51:16.083532401Z`)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        stamp += "." + f"{frac:09d}".rstrip("0")
    return stamp + "Z"


def human_bytes2(n: int) -> str:
    """Ollama's format.HumanBytes2 (used in the memory error): `5.6 GiB`."""
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    if n >= KIB:
        return f"{n / KIB:.1f} KiB"
    return f"{n} B"


def human_number(n: int) -> str:
    """Ollama's format.HumanNumber (parameter_size): `8.0B`, `1.2B`, `38K`."""
    if n >= 1_000_000_000:
        value = n / 1_000_000_000
        return f"{value:.0f}B" if value == math.floor(value) else f"{value:.1f}B"
    if n >= 1_000_000:
        value = n / 1_000_000
        return f"{value:.0f}M" if value == math.floor(value) else f"{value:.2f}M"
    if n >= 1_000:
        return f"{n / 1_000:.0f}K"
    return str(n)


def version_tuple(version: str) -> tuple[int, ...]:
    """`0.13.5` -> (0, 13, 5); suffixes (`-rc1`) and a leading `v` ignored."""
    parts = []
    for piece in version.lstrip("v").split("-")[0].split(".")[:3]:
        digits = re.match(r"\d*", piece).group(0)  # type: ignore[union-attr]
        parts.append(int(digits or 0))
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_keep_alive(value: Any) -> float | None:
    """keep_alive as Ollama reads it: seconds (number), Go duration string, negative =
    forever (None)."""
    if value is None:
        return 300.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
            sign = -1 if text.startswith("-") else 1
            seconds = 0.0
            for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text):
                seconds += float(number) * units[unit]
            seconds *= sign
    return None if seconds < 0 else seconds


def sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(v) for v in value]
    return value


def go_v(value: Any) -> str:
    """Go's %v of a JSON value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)
