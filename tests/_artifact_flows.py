"""The flows of the artifact tests (tests/test_artifacts_shown.py, tests/test_ui_browser.py): real flows that
publish markdown, table, link and progress artifacts, one from a task run, one with a ``<script>`` in its
markdown and one with a ``javascript:`` link; and a flow whose progress moves only when the test says so."""

from __future__ import annotations

import textwrap

ARTIFACT_FLOWS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tether import flow, task
    from tether.artifacts import (
        create_link_artifact, create_markdown_artifact, create_progress_artifact, create_table_artifact,
        update_progress_artifact,
    )

    REPORT = '''# Weekly sales

    Up **3 %** on last week, see [the dashboard](https://example.com/dash).

    <script>document.title = "owned"; window.owned = 1;</script>

    - EU
    - US
    '''

    @task
    def summarize(region, rows):
        create_table_artifact(rows, key="sales-table", description="Sales by region")
        return len(rows)

    @flow
    def report():
        create_markdown_artifact(REPORT, key="sales-report", description="The weekly summary")
        summarize("all", [{"region": "EU", "sales": 3}, {"region": "US", "sales": 5}])
        create_link_artifact("https://example.com/dash", link_text="Dashboard", key="dash-link")
        create_link_artifact("javascript:alert(1)", link_text="Bad link", key="bad-link")
        progress = create_progress_artifact(40.0, key="load-progress", description="Loading")
        update_progress_artifact(progress, 75.0)
        return "done"

    def wait_for(path):
        # The test creates the file when it has seen what came before; polling a file is how another
        # process can tell this one, and it waits for that, not for an amount of time.
        while not Path(path).exists():
            time.sleep(0.02)

    @flow
    def slow_progress(gate: str):
        progress = create_progress_artifact(10.0, key="slow-progress", description="Step by step")
        wait_for(gate + ".1")
        update_progress_artifact(progress, 60.0)
        wait_for(gate + ".2")
        return "done"
    """
)
