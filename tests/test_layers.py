"""The package layout is the pipeline, and stays so: `lint-imports` (import-linter) checks
the contracts in pyproject.toml ([tool.importlinter]): the layers, the ground modules,
no import cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_are_kept() -> None:
    tool = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or \
        shutil.which("lint-imports")
    assert tool is not None, "lint-imports is missing: pip install -e '.[test]'"
    done = subprocess.run([tool, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for contract in ("The pipeline's packages are layered",
                     "The ground modules import nothing above them",
                     "No modules import each other in a circle"):
        assert f"{contract} KEPT" in done.stdout, done.stdout
