"""``tether ui`` over HTTP: a real dashboard process over a store of the test's own, real flows in other processes.

The browser's view (geometry, live updates, requests) is in test_ui_browser.py; here
the pages' content, the log download, the read-only default and the CSRF check of
actions, the loopback guard, the orphan story and the messages of the command.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

pytest.importorskip("starlette", reason="the dashboard needs the ui extra: pip install -e '.[ui]'")

from _dashboard import (
    STUCK,
    TETHER,
    dashboard,
    env,  # noqa: F401 - a fixture
    env_for,
    flows,  # noqa: F401 - a fixture
    home,  # noqa: F401 - a fixture
    own_postgres_database,
    resource_log,
    run_flow,
    running_run,
    start_flow,
    wait_until,
)
from tether import _cli_ui
from tether.store import open_store


def page_with(ui, path: str, pattern: str | re.Pattern[str]) -> str | None:
    """The page at ``path`` if it holds ``pattern`` (another process may not have got there yet)."""
    page = ui.get(path)[1]
    return page if re.search(pattern, page) else None


def test_runs_and_run_pages_show_what_the_store_recorded(env, flows, home):
    run_id = run_flow(env, flows, "nightly", "db_password=s3cr3t-value", expect=1)
    quick_id = run_flow(env, flows, "quick")
    with dashboard(env) as ui:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", ui.url)
        status, page, headers = ui.get("/")
        assert status == 200 and "default-src 'self'" in headers["content-security-policy"]
        rows = re.findall(r'<tr data-run-id="(\w+)" data-state="(\w+)">', page)
        assert rows == [(quick_id, "COMPLETED"), (run_id, "FAILED")]  # newest first
        assert "4 completed" in page and "1 failed" in page and 'data-resources="1"' in page

        status, page, _ = ui.get("/?state=failed")
        assert re.findall(r'data-run-id="(\w+)"', page) == [run_id]
        status, page, _ = ui.get("/?flow=quick")
        assert re.findall(r'data-run-id="(\w+)"', page) == [quick_id]
        status, page, _ = ui.get("/?within=hour&state=completed")
        assert re.findall(r'data-run-id="(\w+)"', page) == [quick_id]

        status, page, _ = ui.get(f"/runs/{run_id}")
        assert status == 200
        store = open_store(f"sqlite:///{home / 'tether.db'}")
        try:
            detail = store.flow_run(run_id)
        finally:
            store.close()
        lanes = dict(re.findall(r'<g class="lane" data-task-run-id="(\w+)" data-state="(\w+)"', page))
        assert lanes == {t.id: t.state_type for t in detail.task_runs}
        assert sorted(lanes.values()) == ["COMPLETED"] * 4 + ["FAILED"]
        (copy,) = detail.resources
        assert f'data-resource-id="{copy.id}"' in page and f'data-worker="{copy.host}:{copy.pid}"' in page
        assert 'data-outcome="commit"' in page and 'data-status="closed"' in page
        flaky = next(t for t in detail.task_runs if t.name == "flaky")
        assert flaky.run_count == 2 and f'data-task-run-id="{flaky.id}" data-state="COMPLETED"' in page
        assert 'data-state-name="AwaitingRetry"' in page and 'data-state-name="Retrying"' in page
        assert "ValueError: exploded on 7" in page and "Traceback (most recent call last)" in page
        assert "s3cr3t-value" not in page and "db_password" in page  # redacted by the store

        status, log, headers = ui.get(f"/runs/{run_id}/log.txt")
        assert status == 200 and headers["content-disposition"] == f'attachment; filename="tether-nightly-{run_id[:8]}.log"'
        assert re.search(r"INFO +load: loading part 2 through conn-main", log)
        assert re.search(r"INFO +warehouse|connecting to main", log)

        explode = next(t for t in detail.task_runs if t.name == "explode")
        status, page, _ = ui.get(f"/tasks/{explode.id}")
        assert status == 200 and "exploded on 7" in page and f'/runs/{run_id}' in page
        load = next(t for t in detail.task_runs if t.name == "load")
        status, page, _ = ui.get(f"/tasks/{load.id}")
        assert "loading part" in page and "warehouse (copy" in page

        status, page, headers = ui.get("/", headers={"X-Tether-Partial": "1"})
        assert status == 200 and not page.startswith("<!doctype") and headers["x-tether-token"]

        status, page, _ = ui.get(f"/runs/{run_id[:10]}")  # a part of an id is found
        assert status == 200 and f'data-flow-run-id="{run_id}"' in page
        status, page, _ = ui.get("/runs/no-such-run")
        assert status == 404 and "no-such-run" in page and "tether runs ls" in page


def test_answers_only_requests_addressed_to_loopback(env):
    with dashboard(env) as ui:
        status, _, _ = ui.get("/", headers={"Host": "attacker.example"})
        assert status == 400
        assert ui.get("/", headers={"Host": "localhost"})[0] == 200


DOOMED = textwrap.dedent(
    """
    import os
    import sys
    import tether.store
    from tether import flow, task, resource
    from tether.resources import remember

    def remove_file(handle):
        os.remove(handle["path"])

    @resource(reaper=remove_file)
    def marker(path):
        open(path, "w").close()
        remember({{"path": path}})
        yield path

    @task
    def block_forever(value):
        tether.store.flush()
        print("READY", flush=True)
        sys.stdin.readline()

    @flow
    def doomed():
        with marker({path!r}) as m:
            block_forever(m)

    if __name__ == "__main__":
        tether.store.enable()
        doomed()
    """
)


def test_orphans_are_marked_and_reaped_only_with_actions_allowed_and_the_csrf_token(env, tmp_path):
    kept = tmp_path / "marker.txt"
    script = tmp_path / "doomed.py"
    script.write_text(DOOMED.format(path=str(kept)))
    child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "READY", child.stderr.read()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()

    with dashboard(env) as ui:
        status, page, _ = ui.get("/resources")
        assert status == 200 and 'class="is-orphan"' in page and f"process {child.pid} on this host is gone" in page
        assert "tether reap" in page and "Reap now" not in page and "csrf" not in page
        status, page = ui.post("/actions/reap", "csrf=anything")
        assert status == 403 and "--allow-actions" in page
        assert kept.exists()

    with dashboard(env, "--allow-actions") as ui:
        status, page, _ = ui.get("/resources")
        token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page).group(1)
        assert "Reap now" in page
        status, page = ui.post("/actions/reap", "csrf=wrong")
        assert status == 403 and "CSRF token" in page and kept.exists()
        status, page = ui.post("/actions/reap", f"csrf={token}")
        assert status == 200 and "reaped" in page and not kept.exists()
        status, page, _ = ui.get("/resources")
        assert 'data-status="reaped"' in page and 'class="is-orphan"' not in page


HOLDING = textwrap.dedent(
    """
    import sys
    from tether import flow, task
    from tether.runners import ThreadPoolRunner

    @task(tags=["warehouse"])
    def hold(i):
        print("HOLDING", i, flush=True)
        sys.stdin.readline()
        return i

    @flow(task_runner=ThreadPoolRunner(2))
    def holders():
        return [f.result() for f in [hold.submit(i) for i in range(2)]]

    if __name__ == "__main__":
        import tether.store
        tether.store.enable()
        holders()
    """
)


def test_limits_page_shows_who_holds_a_slot_and_who_waits(env, tmp_path):
    subprocess.run([*TETHER, "limit", "set", "warehouse", "1"], env=env, check=True, capture_output=True)
    subprocess.run([*TETHER, "limit", "set", "other", "3"], env=env, check=True, capture_output=True)
    script = tmp_path / "holders.py"
    script.write_text(HOLDING)
    child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().startswith("HOLDING"), child.stderr.read()
        with dashboard(env) as ui:
            # The second task run's wait is written just after the first took the slot.
            page = wait_until(lambda: page_with(ui, "/limits", 'data-waiting="1"'), "the waiter on the page", child, 30)
            assert 'data-tag="warehouse" data-capacity="1" data-held="1" data-waiting="1"' in page
            assert 'data-tag="other" data-capacity="3" data-held="0" data-waiting="0"' in page
            assert f"<td>{os.uname().nodename}:{child.pid}</td>" in page and "<td>hold</td>" in page
            child.stdin.write("\n\n")
            child.stdin.flush()
            assert child.wait(timeout=60) == 0
            (run_id,) = re.findall(r'<tr data-run-id="(\w+)"', ui.get("/")[1])
            page = ui.get(f"/runs/{run_id}")[1]  # the second task run's wait for the slot is on its lane
            assert page.count('data-state-name="AwaitingConcurrencySlot"') == 1
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()


def test_beyond_loopback_it_warns_that_there_is_no_authentication(env):
    process = subprocess.Popen([*TETHER, "ui", "--host", "0.0.0.0", "--port", "0"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert re.fullmatch(r"http://0\.0\.0\.0:\d+/", process.stdout.readline().strip())
        assert "no authentication" in process.stderr.readline()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        process.stdout.close()
        process.stderr.close()


def test_a_port_in_use_and_a_missing_extra_say_how_to_fix_them(env, monkeypatch):
    with dashboard(env) as ui:
        port = ui.url.rsplit(":", 1)[1].strip("/")
        done = subprocess.run([*TETHER, "ui", "--port", port], env=env, capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr

    real = _cli_ui.importlib.util.find_spec
    monkeypatch.setattr(_cli_ui.importlib.util, "find_spec", lambda name: None if name == "uvicorn" else real(name))
    result = CliRunner().invoke(_cli_ui.ui, [])
    assert result.exit_code == 1 and 'uvicorn is not installed' in result.output
    assert 'pip install -e ".[ui]"' in result.output


def test_a_run_beyond_the_lane_limit_gets_bars_per_task_name_and_a_paged_list(env, flows):
    from tether.store._queries import LANE_LIMIT

    n = LANE_LIMIT + 50
    run_id = run_flow(env, flows, "many", f"n={n}")
    with dashboard(env) as ui:
        status, page, _ = ui.get(f"/runs/{run_id}")
        assert status == 200 and '<g class="lane"' not in page
        assert f'<g class="aggregate" data-task-name="noop" data-count="{n}">' in page
        assert page.count("<tr data-task-row=") == 100 and f"Page 1 of {(n + 99) // 100}" in page
        started = [int(x) for x in re.findall(r"<title>noop: (\d+) completed</title>", page)]
        assert sum(started) == n  # every task run is in one bar
        status, page, _ = ui.get(f"/runs/{run_id}?page={(n + 99) // 100 - 1}")
        assert page.count("<tr data-task-row=") == (n % 100 or 100)


def test_stretches_of_a_task_run_follow_its_state_changes():
    from types import SimpleNamespace as Change

    from tether.store._queries import Segment, segments

    changes = [
        Change(type="PENDING", name="AwaitingConcurrencySlot", timestamp=1.0, run_count=0),
        Change(type="RUNNING", name="Running", timestamp=2.0, run_count=1),
        Change(type="PENDING", name="AwaitingRetry", timestamp=3.0, run_count=1),
        Change(type="RUNNING", name="Retrying", timestamp=4.0, run_count=2),
        Change(type="COMPLETED", name="Cached", timestamp=5.0, run_count=2),
    ]
    assert segments(0.5, changes, now=9.0) == [
        Segment("PENDING", "Pending", 0.5, 1.0, 0),
        Segment("PENDING", "AwaitingConcurrencySlot", 1.0, 2.0, 0),
        Segment("RUNNING", "Running", 2.0, 3.0, 1),
        Segment("PENDING", "AwaitingRetry", 3.0, 4.0, 1),
        Segment("RUNNING", "Retrying", 4.0, 5.0, 2),
        Segment("COMPLETED", "Cached", 5.0, 5.0, 2),  # a final state is a tick
    ]
    running = [Change(type="RUNNING", name="Running", timestamp=1.0, run_count=1)]
    assert segments(1.0, running, now=9.0) == [Segment("RUNNING", "Running", 1.0, 9.0, 1)]  # no pending time; until now
    assert segments(1.0, running, now=None)[-1].end is None


def _tether_imports(path):
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "tether" or name.startswith("tether.")}


def test_the_dashboard_sits_on_top_and_reads_the_store_through_its_face():
    from pathlib import Path

    import tether

    root = Path(tether.__file__).parent
    for path in root.rglob("*.py"):
        inside = path.is_relative_to(root / "ui")
        for name in _tether_imports(path):
            if inside:
                assert name == "tether.store" or name.startswith("tether.ui"), f"{path} imports {name}"
            elif path.name != "_cli_ui.py":
                assert not name.startswith("tether.ui"), f"{path} imports the dashboard ({name})"
    # Every other command starts without the ui extra's packages.
    loaded = subprocess.run([sys.executable, "-c", ("import sys, tether.cli; print(sorted(m for m in "
                             "('starlette', 'uvicorn', 'jinja2') if m in sys.modules))")],
                            capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.fixture
def postgres_env(env, postgres_url):
    """``env`` with the run store in a PostgreSQL schema of the test's own, dropped at the end."""
    import uuid

    import sqlalchemy as sa

    schema = f"tether_ui_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield {**env, "TETHER_DATABASE_URL": f"{postgres_url}?options=-csearch_path%3D{schema}"}
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def test_the_pages_read_a_postgresql_store_too(postgres_env, flows):
    from tether.store._queries import LANE_LIMIT

    failed = run_flow(postgres_env, flows, "nightly", expect=1)
    n = LANE_LIMIT + 10
    large = run_flow(postgres_env, flows, "many", f"n={n}")
    with dashboard(postgres_env) as ui:
        page = ui.get("/")[1]
        assert re.findall(r'<tr data-run-id="(\w+)" data-state="(\w+)">', page) == [(large, "COMPLETED"),
                                                                                   (failed, "FAILED")]
        page = ui.get(f"/runs/{failed}")[1]
        assert sorted(re.findall(r'<g class="lane" data-task-run-id="\w+" data-state="(\w+)"', page)) == \
            ["COMPLETED"] * 4 + ["FAILED"]
        assert 'data-outcome="commit"' in page and "exploded on 7" in page
        page = ui.get(f"/runs/{large}")[1]
        assert sum(int(x) for x in re.findall(r"<title>noop: (\d+) completed</title>", page)) == n


def test_deployments_page_shows_schedules_next_times_and_runs_of_tether_serve(env, flows):

    other = run_flow(env, flows, "quick")  # not served: the deployment filter leaves it out
    serve = subprocess.Popen([*TETHER, "serve", f"{flows}:quick", "--name", "every-second", "--interval", "1"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with dashboard(env, "--allow-actions") as ui:
            page = wait_until(lambda: page_with(ui, "/deployments", 'data-status="completed"'),
                              "the serve process to run a scheduled time", serve)
            assert 'data-deployment="every-second" data-paused="false"' in page, serve.stderr.read() if serve.poll() else page
            assert 'data-status="completed"' in page and "interval" in page and 'class="next"' in page
            served = re.search(r'data-status="completed">.*?<a href="/runs/(\w+)">', page).group(1)
            runs = ui.get("/?deployment=every-second")[1]
            ids = re.findall(r'<tr data-run-id="(\w+)"', runs)
            assert served in ids and other not in ids
            assert 'data-deployment="every-second"' in runs
            assert re.findall(r'<tr data-run-id="(\w+)"', ui.get("/")[1])[-1] == other

            token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page).group(1)
            assert ui.post("/actions/deployments/every-second/pause", "csrf=wrong")[0] == 403
            status, page = ui.post("/actions/deployments/every-second/pause", f"csrf={token}")
            assert status == 200 and 'data-deployment="every-second" data-paused="true"' in page and "Resume" in page
            listed = subprocess.run([*TETHER, "deployments", "ls", "--json"], env=env, capture_output=True,
                                    text=True, check=True)
            assert '"paused": true' in listed.stdout
            assert ui.post("/actions/deployments/no-such/resume", f"csrf={token}")[0] == 404
            # While paused, each scheduled time is skipped, with its reason on the page.
            skipped = re.compile(r'data-status="skipped">.*?<td class="message">the deployment was paused</td>', re.DOTALL)
            if not skipped.search(page):
                page = wait_until(lambda: page_with(ui, "/deployments", skipped), "a time skipped while paused, on the page", serve)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
        serve.stderr.close()


def test_the_timeline_draws_cache_hits_slot_waits_and_a_rolled_back_copy_with_its_error():
    from tether.store import LedgerEntry, RunView, StoredFlowRun, StoredTaskRun, TaskLane
    from tether.store._queries import Segment
    from tether.ui import _timeline

    def task(task_id, name, state, start, end):
        return StoredTaskRun(id=task_id, flow_run_id="f1", name=name, state_type=state, state_name=name,
                             state_message=None, error=None, run_count=1, created=start, start_time=start,
                             end_time=end, parameters=None, tags=None)

    flow_run = StoredFlowRun(id="f1", name="etl", parent_id=None, state_type="FAILED", state_name="Failed",
                             state_message=None, error=None, run_count=1, created=0.0, start_time=0.0, end_time=10.0,
                             parameters={}, tags=[], pid=1, host="h", heartbeat=0.0)
    cached = TaskLane(task("t1", "Cached", "COMPLETED", 1.0, 1.0), [Segment("COMPLETED", "Cached", 1.0, 1.0, 1)])
    waited = TaskLane(task("t2", "Completed", "COMPLETED", 2.0, 6.0), [
        Segment("PENDING", "AwaitingConcurrencySlot", 2.0, 4.0, 0),
        Segment("RUNNING", "Running", 4.0, 6.0, 1),
        Segment("COMPLETED", "Completed", 6.0, 6.0, 1),
    ])
    copy = LedgerEntry(id=7, scope_id="s1", name="warehouse", flow_run_id="f1", host="h", pid=42, pid_started=None,
                       created=1.5, setup_outcome="succeeded", setup_error=None, setup_at=2.0, handle=None,
                       reaper=None, reaper_file=None, scope_outcome="failed", cleanup_outcome="failed",
                       cleanup_error="RuntimeError: could not roll back", cleanup_seconds=0.5, cleaned_at=8.0,
                       heartbeat=None, used_by=["t2"])
    view = RunView(flow_run=flow_run, task_total=2, start=0.0, end=10.0, lanes=[cached, waited], buckets=[],
                   bucket_seconds=0.1, task_page=[], page=0, page_size=100, failures=[], failure_total=0,
                   resources=[copy], subflows=[], logs=[], log_total=0, task_names={"t2": "load"})
    svg = str(_timeline.render(view, now=10.0, task_href="/tasks/"))
    per_second = _timeline.PLOT / 10.0
    x = re.search(r'class="seg s-PENDING n-AwaitingConcurrencySlot"[^>]* x="([\d.]+)"[^>]* width="([\d.]+)"', svg)
    assert float(x.group(1)) == pytest.approx(_timeline.X0 + 2.0 * per_second, abs=0.01)
    assert float(x.group(2)) == pytest.approx(2.0 * per_second, abs=0.01)
    assert 'class="seg s-COMPLETED n-Cached final"' in svg
    band = re.search(r'<g class="band o-rollback" data-resource-id="7"[^>]*>.*?</g>', svg).group(0)
    assert 'data-worker="h:42"' in band and 'data-used-by="t2"' in band and 'data-status="cleanup-failed"' in band
    assert "RuntimeError: could not roll back" in band and "used by load" in band
    cleanup = re.search(r'<rect class="cleanup" x="([\d.]+)"', band)
    assert float(cleanup.group(1)) == pytest.approx(_timeline.X0 + 7.5 * per_second, abs=0.01)


def test_cancelling_a_run_is_refused_read_only_and_without_the_csrf_token(tmp_path):
    env = env_for(tmp_path / "home")
    env["CANCEL_LOG"] = str(tmp_path / "resource.log")
    script = tmp_path / "stuck.py"
    script.write_text(STUCK)
    process = start_flow(env, script, "stuck")
    store = open_store(f"sqlite:///{tmp_path / 'home' / 'tether.db'}")
    try:
        wait_until(lambda: "waiting with conn-main" in resource_log(env), "the task holding the resource", process)
        run = running_run(store, "stuck", process)
        with dashboard(env) as ui:
            status, page, _ = ui.get(f"/runs/{run.id}")
            assert status == 200 and "Cancel run" not in page and f"tether runs cancel {run.id}" in page
            status, page = ui.post(f"/actions/runs/{run.id}/cancel", "csrf=anything")
            assert status == 403 and "--allow-actions" in page and f"(tether runs cancel {run.id})" in page
        with dashboard(env, "--allow-actions") as ui:
            status, page, _ = ui.get(f"/runs/{run.id}")
            assert "Cancel run" in page
            token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            status, page = ui.post(f"/actions/runs/{run.id}/cancel", "csrf=wrong")
            assert status == 403 and "CSRF token" in page
            status, page = ui.post("/actions/runs/no-such-run/cancel", f"csrf={token}")
            assert status == 404 and "No flow run in the store" in page
        assert process.poll() is None and resource_log(env)[-1] == "waiting with conn-main"  # never signalled
    finally:
        process.kill()
        process.communicate()
        store.close()


def test_on_postgresql_the_watcher_hears_of_a_new_run_by_notification_not_by_polling(env, flows, postgres_url):
    import asyncio

    from tether.store import change_token
    from tether.ui._live import ChangeWatcher

    with own_postgres_database(postgres_url) as url:
        store = open_store(url)
        # A slow poll only once an hour: within this test, only a notification can make the watcher read again.
        watcher = ChangeWatcher(lambda: change_token(store), wait_for_change=store.wait_for_change,
                                fallback_seconds=3600.0)
        try:
            before, version = watcher.token(), watcher.version
            assert watcher.token() == before
            run_id = run_flow({**env, "TETHER_DATABASE_URL": url}, flows, "quick")

            async def until_changed() -> None:
                while watcher.token() == before:
                    seen = watcher.version
                    await watcher.changed_since(seen, timeout=60.0)
                    assert watcher.version != seen, "no notification within 60 s of the run's commit"

            asyncio.run(until_changed())
            assert watcher.version > version
            assert store.flow_run(run_id).flow_run.state_type == "COMPLETED"
        finally:
            watcher.close()
            store.close()


def test_a_run_whose_process_died_is_marked_gone_and_reap_now_records_it_crashed(tmp_path):
    env = env_for(tmp_path / "home")
    env["CANCEL_LOG"] = str(tmp_path / "resource.log")
    script = tmp_path / "stuck.py"
    script.write_text(STUCK)
    process = start_flow(env, script, "stuck")
    store = open_store(f"sqlite:///{tmp_path / 'home' / 'tether.db'}")
    try:
        wait_until(lambda: "waiting with conn-main" in resource_log(env), "the task holding the resource", process)
        run = running_run(store, "stuck", process)
        with dashboard(env, "--allow-actions") as ui:  # opened while the run's process lives: nothing crashed yet
            page = ui.get(f"/runs/{run.id}")[1]
            assert "Cancel run" in page and "data-process-gone" not in page
            process.kill()  # SIGKILL: the run's end is never recorded
            process.communicate()
            page = ui.get("/")[1]
            row = re.search(rf'<tr data-run-id="{run.id}" data-state="RUNNING">.*?</tr>', page, re.DOTALL).group(0)
            assert "process gone" in row and f"process {process.pid} on this host is gone" in row
            page = ui.get(f"/runs/{run.id}")[1]
            assert "Cancel run" not in page and "data-process-gone" in page
            assert f"but process {process.pid} on this host is gone" in page and "tether reap" in page
            token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page).group(1)
            status, page = ui.post("/actions/reap", f"csrf={token}")
            assert status == 200
            assert f'data-crashed-run="{run.id}"' in page and f"process {process.pid} on this host is gone" in page
            page = ui.get(f"/runs/{run.id}")[1]
            assert re.search(r'<span class="state s-CRASHED">Crashed</span> stuck', page)
            assert "data-process-gone" not in page and "Cancel run" not in page
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        store.close()


def test_a_run_on_another_host_is_not_offered_a_cancel_button(env, home):
    import time
    import uuid

    import sqlalchemy as sa

    from tether.store._db import write
    from tether.store._schema import flow_runs

    store = open_store(f"sqlite:///{home / 'tether.db'}")
    run_id, now = uuid.uuid4().hex, time.time()
    try:
        write(store.engine, lambda conn: conn.execute(sa.insert(flow_runs).values(
            id=run_id, name="elsewhere", state_type="RUNNING", state_name="Running", run_count=1, created=now,
            start_time=now, updated=now, pid=4242, host="another-machine", heartbeat=now,
        )))
    finally:
        store.close()
    with dashboard(env, "--allow-actions") as ui:
        status, page, _ = ui.get(f"/runs/{run_id}")
        assert status == 200 and "Cancel run" not in page
        assert f"It runs on host another-machine: cancel it there with <code>tether runs cancel {run_id}</code>" in page
        token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page).group(1)
        status, page = ui.post(f"/actions/runs/{run_id}/cancel", f"csrf={token}")  # an old tab: refused, saying why
        assert status == 409 and "runs on host &#39;another-machine&#39; (process 4242)" in page
        assert f'<a href="/runs/{run_id}">Back</a>' in page


NAMED = textwrap.dedent(
    """
    from tether import flow, task

    @task(task_run_name="load-{region}")
    def load(region: str) -> str:
        return region

    @task
    def add(x: int) -> int:
        return x + 1

    @flow(flow_run_name="etl-{day}")
    def etl(day: str = "mon"):
        load("eu")
        load.submit("us").result()
        return add(1)
    """
)


def test_the_run_page_labels_lanes_with_the_run_names_and_the_runs_list_filters_by_flow(env, tmp_path, home):
    """A ``task_run_name`` template's name labels its lane (the task's name is in its title), the
    ``flow_run_name`` one heads the run and the runs list, and the list still filters by the flow's name."""
    script = tmp_path / "named.py"
    script.write_text(NAMED)
    run_id = run_flow(env, script, "etl")
    store = open_store(f"sqlite:///{home / 'tether.db'}")
    try:
        ids = {t.run_name: t.id for t in store.flow_run(run_id).task_runs}
    finally:
        store.close()
    assert set(ids) == {"load-eu", "load-us", "add"}
    with dashboard(env) as ui:
        status, page, _ = ui.get(f"/runs/{run_id}")
        assert status == 200
        labels = dict(re.findall(r'data-task-run-id="(\w+)".*?<text class="label"[^>]*>([^<]*) [^ <]+</text>', page))
        assert labels == {ids["load-eu"]: "load-eu", ids["load-us"]: "load-us", ids["add"]: "add"}
        assert "load-eu" in page and "(task load)" in page and ">flow etl-mon<" in page
        assert re.search(r"<h1>.*etl-mon.*flow <a href=\"/\?flow=etl\">etl</a>", page)

        status, page, _ = ui.get("/?flow=etl")
        assert re.findall(r'data-run-id="(\w+)"', page) == [run_id]
        assert ">etl-mon</a>" in page and 'data-flow="etl"' in page
        status, page, _ = ui.get("/?flow=etl-mon")  # a run's own name is not a flow's
        assert re.findall(r'data-run-id="(\w+)"', page) == []

        status, page, _ = ui.get(f"/tasks/{ids['load-us']}")
        assert status == 200 and "<title>" in page and re.search(r"<h1[^>]*>.*load-us.*task load", page)
