"""The README's main job, as a newcomer runs it, and its variants."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).parent.parent
FLOW = ROOT / "examples" / "etl" / "flow.py"


def test_main_job_in_a_fresh_home_and_again(tmp_path):
    home = tmp_path / "newcomer"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["HOME"] = str(home)
    for rows in (400, 500):  # run again: the warehouse table from the first run is replaced
        result = subprocess.run([sys.executable, str(FLOW), "--rows", str(rows)], capture_output=True, text=True,
                                env=env, timeout=300, cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "Rows: extracted 500 sales and 50 customers, merged 500, loaded 500" in result.stdout
    assert "sql_engine: opened" in result.stdout and "used by extract_sales_from_db, extract_customers_from_db" in result.stdout
    assert "cleanup succeeded" in result.stdout
    assert "runs show" in result.stdout
    warehouse = home / ".tether" / "etl_warehouse.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sales_by_customer").fetchone()[0] == 500
    run_id = result.stdout.split("runs show ")[1].split()[0]
    shown = subprocess.run([sys.executable, "-m", "tether.cli", "runs", "show", run_id], capture_output=True,
                           text=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "extract_sales_from_db" in shown.stdout and "sql_engine" in shown.stdout


def test_etl_with_mariadb_as_the_source(mariadb_url, tmp_path):
    spec = importlib.util.spec_from_file_location("etl_example", FLOW)
    etl_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(etl_module)
    etl_module.create_sample_data.fn(mariadb_url, 300)
    warehouse = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    counts = etl_module.etl(mariadb_url, warehouse, 300)
    assert counts == {"extracted_sales": 300, "extracted_customers": 30, "merged": 300, "loaded": 300}


def test_etl_through_tether_run_on_dask(tmp_path):
    pytest.importorskip("distributed", reason="needs the dask extra: pip install 'tether[dask]'")
    env = {**os.environ, "TETHER_HOME": str(tmp_path / "home"), "TETHER_STORE": "on"}
    result = subprocess.run(
        [sys.executable, "-m", "tether.cli", "run", f"{FLOW}:etl", "--runner", "dask", "-p", "rows=200"],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with duckdb.connect(str(tmp_path / "home" / "etl_warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sales_by_customer").fetchone()[0] == 200
