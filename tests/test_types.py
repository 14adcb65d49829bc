"""`mypy --strict` is clean on tether's source, for the oldest Python it supports (issue #14, item 8).

Run here so that CI (the README's test command) checks it on every change; it takes
about 20 s with a cold cache.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_strict_is_clean_on_the_source(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "mypy-cache"), "src/tether"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, f"mypy --strict src/tether found problems:\n{done.stdout}{done.stderr}"
