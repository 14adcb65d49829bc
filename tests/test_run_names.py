"""Run names as the user sees them (issue #16 item 8, #15 item 2): a ``task_run_name`` /
``flow_run_name`` template or callable names the run in the store, in ``tether runs show`` and
``tether runs ls`` (text and ``--json``), while the flow's and task's own names stay what runs are
grouped and filtered by; mapped runs of a task without a template are numbered. And the
migration that adds the run names: a store of the previous revision keeps its runs, read as
named by their flow and task.

The CLI is the real entry point, in a subprocess, on a store of the test's own (``TETHER_HOME``
in ``tmp_path``).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from tether.store import StoreLocation, open_store
from tether.store._db import make_engine
from tether.store._migrate import MIGRATIONS, run_migrations
from tether.store._schema import HEAD

_SCRIPT = Path(sys.executable).with_name("tether")
TETHER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tether.cli"]

FLOW = textwrap.dedent(
    """
    from tether import flow, task
    from tether.runtime import task_run


    @task(task_run_name="load-{region}")
    def load(region: str) -> str:
        return task_run.name


    def shouted() -> str:
        return "shout-" + task_run.parameters["word"]


    @task(task_run_name=shouted)
    def shout(word: str) -> str:
        return word.upper()


    @task
    def add(x: int) -> int:
        return x + 1


    def nightly(parameters) -> str:
        return "nightly-" + parameters["day"]


    @flow(flow_run_name="etl-{day}")
    def etl(day: str = "mon"):
        seen = [load("eu"), load.submit("us").result()]
        shout("hi")
        add.map([1, 2, 3]).result()
        return seen


    @flow(flow_run_name=nightly)
    def report(day: str = "tue"):
        return add(1)


    @flow
    def plain():
        return add(1)
    """
)


@pytest.fixture
def env(tmp_path):
    values = {**os.environ, "TETHER_HOME": str(tmp_path / "home"), "TETHER_LOGGING_LEVEL": "WARNING"}
    values.pop("TETHER_DATABASE_URL", None)
    values.pop("TETHER_STORE", None)
    (tmp_path / "names.py").write_text(FLOW)
    return values


def tether(env, cwd, *args):
    done = subprocess.run([*TETHER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"tether {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def run_id_of(done: subprocess.CompletedProcess[str]) -> str:
    (found,) = set(re.findall(r"\(([0-9a-f]{32})\)", done.stdout + done.stderr))
    return found


def test_templates_and_callables_name_the_runs_in_the_store_and_in_runs_show_and_ls(env, tmp_path):
    etl = run_id_of(tether(env, tmp_path, "run", "names.py:etl"))
    report = run_id_of(tether(env, tmp_path, "run", "names.py:report"))
    plain = run_id_of(tether(env, tmp_path, "run", "names.py:plain"))

    # The store keeps the task's name, and the run's own only where it differs from it.
    with sqlite3.connect(tmp_path / "home" / "tether.db") as db:
        rows = sorted(db.execute("select name, run_name from task_runs where flow_run_id = ?", (etl,)), key=str)
        flows = dict(db.execute("select id, run_name from flow_runs"))
    assert rows == sorted([("load", "load-eu"), ("load", "load-us"), ("shout", "shout-hi")] + [("add", None)] * 3, key=str)
    assert flows == {etl: "etl-mon", report: "nightly-tue", plain: None}

    detail = json.loads(tether(env, tmp_path, "runs", "show", etl, "--json").stdout)
    assert (detail["flow_run"]["name"], detail["flow_run"]["run_name"]) == ("etl", "etl-mon")
    named = sorted((t["name"], t["run_name"]) for t in detail["task_runs"])
    assert named == sorted([("load", "load-eu"), ("load", "load-us"), ("shout", "shout-hi")] + [("add", "add")] * 3)

    listed = {r["id"]: (r["name"], r["run_name"]) for r in json.loads(tether(env, tmp_path, "runs", "ls", "--json").stdout)}
    assert listed == {etl: ("etl", "etl-mon"), report: ("report", "nightly-tue"), plain: ("plain", "plain")}

    wide = {**env, "COLUMNS": "200"}
    shown = tether(wide, tmp_path, "runs", "show", etl).stdout
    assert "Flow run 'etl-mon' (flow etl)" in shown
    lanes = [line.split()[0] for line in shown.splitlines() if re.match(r"\s*(load|shout|add)\S* ", line)]
    # A template's name as it rendered it; mapped runs without one numbered in creation order.
    assert sorted(lanes) == ["add-0", "add-1", "add-2", "load-eu", "load-us", "shout-hi"]

    table = tether(wide, tmp_path, "runs", "ls").stdout
    line_of = {run_id: next(line for line in table.splitlines() if run_id in line) for run_id in (etl, report, plain)}
    assert "etl-mon (etl)" in line_of[etl] and "nightly-tue (report)" in line_of[report]
    assert re.search(rf"{plain}\s+plain\s", line_of[plain])


def _columns(engine: sa.Engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def test_a_store_of_the_previous_revision_is_upgraded_and_its_runs_read_as_named_by_their_flow(store_url):
    location = StoreLocation.resolve(store_url)
    engine = make_engine(location)
    try:
        with engine.begin() as conn:
            run_migrations(conn, "0005")
            conn.exec_driver_sql("INSERT INTO flow_runs (id, name, run_count, created) VALUES ('old', 'etl', 0, 1.0)")
            conn.exec_driver_sql(
                "INSERT INTO task_runs (id, flow_run_id, name, run_count, created) VALUES ('t1', 'old', 'load', 0, 1.0)"
            )
        assert "run_name" not in _columns(engine, "task_runs")
        upgraded = open_store(store_url)
        try:
            detail = upgraded.flow_run("old")
            assert (detail.flow_run.name, detail.flow_run.run_name) == ("etl", "etl")
            assert [(t.name, t.run_name) for t in detail.task_runs] == [("load", "load")]
            with upgraded.engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == HEAD == "0006"
        finally:
            upgraded.close()
        # And back: the downgrade drops both columns (on SQLite by copying the tables), keeping the rows.
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0005")
        assert "run_name" not in _columns(engine, "task_runs") | _columns(engine, "flow_runs")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT name FROM task_runs WHERE id = 't1'").scalar() == "load"
    finally:
        engine.dispose()
