"""What the tests of `--bundle` and `--seed` share (test_real_bundle_wiring.py,
test_real_fleet_seed.py): models with every kind of layer, inventories, and the tool's
answers read in one place.

The tool's documents are read only here (`statuses`, `drift_states`, `seed_bytes`,
`summary_bytes`), so that a change of their shape is one change here. `ok` and `ready`
are not read at all: exit codes say the same.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.real import RealOllama, run_cli, shared_ollama

SYSTEM_PROMPT = "You answer in one word."
LICENSE_TEXT = "Tiny test licence: use it for anything."
WEIGHTS = "application/vnd.ollama.image.model"


# --- models -------------------------------------------------------------------------------


def create_tiny(server: RealOllama, name: str, folder: Path, *, system: bool = False,
                gguf: Path | None = None) -> None:
    """`tiny` as the shared Modelfile makes it (template, parameters), from `gguf` (default
    tiny.gguf) and, with `system`, a system prompt and a licence: made from the file, as
    registry models are (one made FROM another model carries notes no create request
    can reproduce)."""
    shared = shared_ollama()
    modelfile = (shared / "Modelfile").read_text().replace(
        "FROM ./tiny.gguf", f"FROM {gguf or shared / 'tiny.gguf'}")
    if system:
        modelfile += f'\nSYSTEM "{SYSTEM_PROMPT}"\nLICENSE """{LICENSE_TEXT}"""\n'
    path = folder / f"{name.replace(':', '-')}.Modelfile"
    path.write_text(modelfile)
    server.ollama("create", name, "-f", str(path))


def other_weights(folder: Path) -> Path:
    """tiny.gguf with other tensor data at its end: a republished tag's new weights."""
    data = bytearray((shared_ollama() / "tiny.gguf").read_bytes())
    data[-64:] = bytes((b + 1) % 256 for b in data[-64:])
    path = folder / "tiny-v2.gguf"
    path.write_bytes(bytes(data))
    return path


def manifest_blobs(manifest: Mapping[str, Any]) -> dict[str, int]:
    """digest -> size of every blob a registry manifest names (config included)."""
    return {layer["digest"]: layer["size"]
            for layer in (manifest["config"], *manifest["layers"])}


def manifest_weights(manifest: Mapping[str, Any]) -> tuple[str, int]:
    (layer,) = [x for x in manifest["layers"] if x["mediaType"] == WEIGHTS]
    return layer["digest"], layer["size"]


def files_bytes(folder: Path) -> int:
    """Bytes of every file below `folder` (0 when there is no such folder)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) \
        if folder.is_dir() else 0


def inventory(path: Path, hosts: Iterable[tuple[str, str]], models: Iterable[str],
              extra: str = "") -> Path:
    """An inventory of `(name, url)` hosts, all in one group holding `models`; `extra`
    is appended TOML ([pull], [verify] ...)."""
    lines = []
    for name, url in hosts:
        lines += ["[[hosts]]", f'name = "{name}"', f'url = "{url}"', ""]
    lines.append("[groups.all]")
    for model in models:
        lines += ["[[groups.all.models]]", f'name = "{model}"']
    path.write_text("\n".join(lines) + "\n\n" + extra)
    return path


# --- the tool's answers -------------------------------------------------------------------


def run_json(env: dict[str, str], *args: str,
             timeout: float = 300) -> tuple[int, dict[str, Any], str]:
    """The command with `--json`: exit code, its document, its stderr (no traceback)."""
    done = run_cli(env, *args, "--json", timeout=timeout)
    assert "Traceback" not in done.stderr, done.stderr
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"not a JSON document (exit {done.returncode}):\n"
                             f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}") from None
    return done.returncode, doc, done.stderr


def statuses(doc: Mapping[str, Any]) -> dict[str, str]:
    """`pull --json`: model -> status."""
    return {m["name"]: m["status"] for m in doc["models"]}


def drift_states(doc: Mapping[str, Any], model: str) -> dict[str, str]:
    """`fleet --json`: host -> state (current, stale, missing, ...) of one model."""
    (entry,) = [d for d in doc["drift"] if d["model"] == model]
    return {h["host"]: h["state"] for h in entry["hosts"]}


def seed_bytes(doc: Mapping[str, Any]) -> tuple[int, int]:
    """`fleet --seed --json`: (bytes taken from the registry, bytes sent to the hosts)."""
    return doc["seed"]["registry_bytes"], doc["seed"]["sent_bytes"]


_SIZE = r"([0-9.]+) (B|KB|MB|GB|TB)"
_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def summary_bytes(text: str) -> tuple[float, float, int]:
    """`fleet --seed`'s summary line: (bytes from the registry, bytes sent, hosts sent
    to), as shown (decimal units, rounded)."""
    taken = re.search(_SIZE + " from the registry", text)
    sent = re.search(_SIZE + r" sent to (\d+) hosts?", text)
    assert taken and sent, f"no summary of the bytes moved in:\n{text}"
    return (float(taken.group(1)) * _UNITS[taken.group(2)],
            float(sent.group(1)) * _UNITS[sent.group(2)], int(sent.group(3)))


def usage_error(done: subprocess.CompletedProcess[str]) -> str:
    """An input error: exit 2, no traceback, a flag the parser knows; its error line."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert "unrecognized arguments" not in done.stderr, done.stderr
    errors = [x for x in done.stderr.splitlines() if "error:" in x]
    assert len(errors) == 1, done.stderr
    return errors[0]
