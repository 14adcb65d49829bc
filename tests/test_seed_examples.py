"""The seed's examples (examples/seed/), changed only in their imports, run against MariaDB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import create_seed_tables, mariadb_sessions

EXAMPLES = Path(__file__).parent.parent / "examples" / "seed"


@pytest.fixture
def seed_database(mariadb_database):
    """The seed's tables in this test's own database (the examples read MYSQL_DB)."""
    create_seed_tables(mariadb_database)
    return mariadb_database


def run_example(name: str, tmp_path: Path, database: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYSQL_HOST": "127.0.0.1", "MYSQL_USER": "root", "MYSQL_PWD": "", "MYSQL_DB": database,
           "TETHER_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("script", ["prefect2_called.py", "prefect1_resource_manager.py", "prefect2_submitted.py"])
def test_seed_example_runs_and_closes_its_connection(script, seed_database, tmp_path):
    result = run_example(script, tmp_path, seed_database)
    assert result.returncode == 0, result.stderr
    if script == "prefect2_submitted.py":
        assert "loaded 50 rows" in result.stdout
    assert mariadb_sessions(seed_database) == 0  # the example's process has exited: nothing left open


def test_seed_examples_differ_from_the_seed_only_in_imports():
    for script in ("prefect2_called.py", "prefect1_resource_manager.py"):
        source = (EXAMPLES / script).read_text()
        assert "prefect" not in source.replace("Prefect", "").split("# ", 1)[-1].split("\n", 1)[1]
        assert "from tether import" in source
