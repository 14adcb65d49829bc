"""A run's artifacts in ``tether runs show`` (text at 80 columns, and --json), for a real flow run by
``tether run`` in its own process; and the store's change token moving with them, for live pages.

The dashboard's run page is test_ui_artifacts.py's (HTTP) and test_ui_browser.py's (a real browser);
storing and reading artifacts is test_variables_artifacts.py's.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from _artifact_flows import ARTIFACT_FLOWS
from _dashboard import TETHER, env, home, run_flow  # noqa: F401 - env and home are fixtures
from tether.store import ArtifactTable, change_token, open_store, run_artifacts


@pytest.fixture
def flows(tmp_path):
    script = tmp_path / "artifact_flows.py"
    script.write_text(ARTIFACT_FLOWS)
    return script


def tether(env, *args: str) -> str:
    done = subprocess.run([*TETHER, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"tether {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_runs_show_lists_each_artifact_with_its_content_at_80_columns(env, flows):
    run_id = run_flow(env, flows, "report")
    shown = tether({**env, "COLUMNS": "80"}, "runs", "show", run_id)
    lines = shown.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    section = lines[lines.index("Artifacts (5)"):]
    headings = [line.split()[:2] for line in section if line.startswith("  ") and not line.startswith("    ")]
    assert headings == [["sales-report", "markdown"], ["sales-table", "table"], ["dash-link", "link"],
                        ["bad-link", "link"], ["load-progress", "progress"]]
    text = "\n".join(section)
    # Who made each one: the table came from the task run, the others from the flow run itself.
    assert re.search(r"^  sales-table\s+table\s+from task run summarize \(\w{8}\)", text, re.MULTILINE)
    assert re.search(r"^  sales-report\s+markdown\s+from the flow run", text, re.MULTILINE)
    # The markdown as written (console markup in it would have been eaten: the brackets are all there).
    assert "    # Weekly sales" in text and "[the dashboard](https://example.com/dash)" in text
    assert '<script>document.title = "owned"; window.owned = 1;</script>' in text
    assert "    The weekly summary" in text and "    Sales by region" in text
    # The table's rows as a small table: a header line, then one line per row, columns aligned.
    table = [line.split() for line in section if line.startswith("    ")]
    assert ["region", "sales"] in table and ["EU", "3"] in table and ["US", "5"] in table
    assert "    [Dashboard](https://example.com/dash)" in text and "[Bad link](javascript:alert(1))" in text
    # The progress after its update, not its first value.
    assert re.search(r"^    Loading\n    [█░]{20} 75%$", text, re.MULTILINE) and "40%" not in text

    detail = tether_json(env, "runs", "show", run_id)
    by_key = {a["key"]: a for a in detail["artifacts"]}
    assert [a["key"] for a in detail["artifacts"]] == ["sales-report", "sales-table", "dash-link", "bad-link",
                                                      "load-progress"]
    (task_run,) = detail["task_runs"]
    assert by_key["sales-table"]["task_run_id"] == task_run["id"]
    assert by_key["sales-table"]["task_run_name"] == "summarize"
    assert by_key["sales-table"]["columns"] == ["region", "sales"]
    assert by_key["sales-table"]["rows"] == [["EU", 3], ["US", 5]]
    assert by_key["load-progress"]["data"] == 75.0 and by_key["dash-link"]["task_run_id"] is None
    assert all(a["flow_run_id"] == run_id for a in detail["artifacts"])


def tether_json(env, *args: str):
    return json.loads(tether(env, *args, "--json"))


def test_a_run_without_artifacts_shows_no_artifacts_section(env, flows, tmp_path):
    quiet = tmp_path / "quiet.py"
    quiet.write_text("from tether import flow\n\n@flow\ndef quiet():\n    return 1\n")
    run_id = run_flow(env, quiet, "quiet")
    assert "Artifacts" not in tether(env, "runs", "show", run_id)
    assert tether_json(env, "runs", "show", run_id)["artifacts"] == []


def test_the_change_token_moves_when_an_artifact_is_created_or_its_progress_updated(home, env, flows):
    run_id = run_flow(env, flows, "report")
    store = open_store(f"sqlite:///{home / 'tether.db'}")
    try:
        before = change_token(store)
        artifacts = ArtifactTable(store.engine)
        made = artifacts.create("progress", 5.0, "extra-progress", None, run_id, None)
        created = change_token(store)
        assert created != before
        artifacts.update(made, 55.0)
        assert change_token(store) != created
        assert [a.data for a in run_artifacts(store, run_id) if a.key == "extra-progress"] == [55.0]
    finally:
        store.close()
