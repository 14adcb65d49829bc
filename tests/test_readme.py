"""Every code block of the README runs as written.

Python blocks run as scripts, each in a fresh directory and TETHER_HOME; the one
that reads MySQL gets a MariaDB database of this test's own (``MYSQL_DB``). Shell
blocks run in bash from the checkout, with this venv's ``tether`` on PATH. The
``make`` block is the two commands themselves (CI runs one of them), so it is not
run again here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import create_seed_tables

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\w+)\n(?P<body>.*?)^(?P=indent)```", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str, str]]:
    """(id, language, code) for every fenced block, named after the README section it is in."""
    text = README.read_text()
    found = []
    for match in _FENCE.finditer(text):
        heading = re.findall(r"^## (.+)$", text[: match.start()], re.MULTILINE)
        section = re.sub(r"\W+", "-", heading[-1].lower()).strip("-") if heading else "top"
        code = textwrap.dedent("\n".join(line[len(match["indent"]):] for line in match["body"].splitlines()))
        found.append((f"{section}-{len(found)}", match["lang"], code))
    return found


BLOCKS = _blocks()
PYTHON = [pytest.param(code, id=name) for name, lang, code in BLOCKS if lang == "python"]
SHELL = [pytest.param(code, id=name) for name, lang, code in BLOCKS if lang == "bash" and not code.lstrip().startswith("make ")]


def test_the_readme_has_the_blocks_this_test_runs():
    assert len(PYTHON) >= 5 and len(SHELL) >= 2
    assert any(code.lstrip().startswith("make demo") for _, lang, code in BLOCKS if lang == "bash")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "TETHER_HOME": str(tmp_path / "home"), **extra}
    env.pop("TETHER_STORE", None)  # as a user runs it: recorded in TETHER_HOME
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def seed_tables(request, tmp_path):
    """The seed's tables in a MariaDB database of this test's own, for the blocks that read MySQL."""
    code = request.node.callspec.params["code"]
    if "mysql" not in code:
        return {}
    database = request.getfixturevalue("mariadb_database")
    create_seed_tables(database, sales=20)
    return {"MYSQL_HOST": "127.0.0.1", "MYSQL_USER": "root", "MYSQL_PWD": "", "MYSQL_DB": database}


@pytest.mark.parametrize("code", PYTHON)
def test_a_python_block_runs_as_written(code, seed_tables, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(tmp_path, **seed_tables),
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, f"README block failed:\n{code}\n--- stderr:\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("code", SHELL)
def test_a_shell_block_runs_as_written(code, tmp_path):
    result = subprocess.run(
        ["bash", "-e", "-c", code], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"README block failed:\n{code}\n--- stdout:\n{result.stdout[-2000:]}\n--- stderr:\n{result.stderr[-3000:]}"


def test_the_first_example_runs_once_under_tether_run(tmp_path):
    """`tether run FILE:FLOW` imports the file: a bare call at the bottom would run it twice."""
    first = next(code for _, lang, code in BLOCKS if lang == "python" and "def etl" in code)
    script = tmp_path / "example.py"
    script.write_text(first)
    result = subprocess.run(
        [sys.executable, "-m", "tether.cli", "run", f"{script}:etl"], cwd=tmp_path, env=_env(tmp_path),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).count("total=45") == 1
