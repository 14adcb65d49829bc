"""The dashboard in a real browser: Debian's Chromium driven by Playwright (``executable_path``; no download).

A ``tether ui`` process serves a store of the test's own while real flows run in
other processes. The browser checks what a person sees: the runs listed, the
run page's task runs and resource copies with their states and a geometry that
matches the recorded times, a failed task's error, a new run appearing without a
reload, a run's artifacts (a script inside one shown as text, not run; a progress
moving live), and that every request the page makes stays on 127.0.0.1. Screenshots go
to the test's directory, and to $TETHER_UI_SCREENSHOTS if set (docs/run-page.png
is made that way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the dashboard needs the ui extra: pip install -e '.[ui]'")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (the dev extra)")

from _artifact_flows import ARTIFACT_FLOWS
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
from tether.store import open_store, run_artifacts

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing; install Debian's package with: apt-get install -y chromium"
        if os.environ.get("TETHER_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (TETHER_REQUIRE_SERVICES=1, so this fails instead of skipping)")
        pytest.skip(message)
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Requests:
    """Every URL the page asked for."""

    def __init__(self, page) -> None:
        self.urls: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))

    def assert_all_on(self, origin: str) -> None:
        elsewhere = [u for u in self.urls if not (u.startswith((origin, "data:")))]
        assert self.urls and not elsewhere, f"requests beyond {origin}: {elsewhere}"


def screenshot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    wanted = os.environ.get("TETHER_UI_SCREENSHOTS")
    if wanted:
        shutil.copy(path, Path(wanted) / name)


def test_run_page_shows_tasks_and_resource_copies_where_and_as_recorded(browser, env, flows, home, tmp_path):
    run_id = run_flow(env, flows, "nightly", "parts=3", "db_password=s3cr3t-value", expect=1)
    store = open_store(f"sqlite:///{home / 'tether.db'}")
    try:
        detail = store.flow_run(run_id)
    finally:
        store.close()
    with dashboard(env) as ui:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requests = Requests(page)
        page.goto(ui.url)
        row = page.locator(f'tr[data-run-id="{run_id}"]')
        assert row.get_attribute("data-state") == "FAILED"
        assert "4 completed" in row.inner_text() and "1 failed" in row.inner_text()
        row.locator("a").first.click()
        page.wait_for_url(f"**/runs/{run_id}")

        svg = page.locator("svg.timeline")
        t0 = float(svg.get_attribute("data-t0"))
        x0 = float(svg.get_attribute("data-x0"))
        per_second = float(svg.get_attribute("data-px-per-second"))
        assert t0 <= min(t.created for t in detail.task_runs) and t0 <= detail.flow_run.created

        for t in detail.task_runs:
            lane = page.locator(f'svg [data-task-run-id="{t.id}"]')
            assert lane.get_attribute("data-state") == t.state_type
        loads = [t for t in detail.task_runs if t.name == "load"]
        assert len(loads) == 3
        widths = []
        for t in loads:
            running = page.locator(f'svg [data-task-run-id="{t.id}"] rect.seg[data-state="RUNNING"]')
            assert float(running.get_attribute("x")) == pytest.approx(x0 + (t.start_time - t0) * per_second, abs=0.02)
            assert float(running.get_attribute("width")) == pytest.approx((t.end_time - t.start_time) * per_second,
                                                                          abs=0.02)
            widths.append((running.bounding_box()["width"], t.end_time - t.start_time))
        # What is drawn on the screen has the recorded durations' proportions (the work was 1:2:3).
        (w1, d1), (w2, d2), (w3, d3) = sorted(widths)
        assert w2 / w1 == pytest.approx(d2 / d1, rel=0.05) and w3 / w1 == pytest.approx(d3 / d1, rel=0.05)

        (copy,) = detail.resources
        band = page.locator(f'svg [data-resource-id="{copy.id}"]')
        assert band.get_attribute("data-outcome") == "commit" and band.get_attribute("data-worker") == f"{copy.host}:{copy.pid}"
        rect = band.locator("rect.copy")
        assert float(rect.get_attribute("x")) == pytest.approx(x0 + (copy.created - t0) * per_second, abs=0.02)
        assert float(rect.get_attribute("width")) == pytest.approx((copy.cleaned_at - copy.created) * per_second, abs=0.02)
        # The copy was open from before the first load started until after the last one ended.
        box = rect.bounding_box()
        for t in loads:
            run_box = page.locator(f'svg [data-task-run-id="{t.id}"] rect.seg[data-state="RUNNING"]').bounding_box()
            assert box["x"] <= run_box["x"] and run_box["x"] + run_box["width"] <= box["x"] + box["width"] + 0.5
        assert sorted(band.get_attribute("data-used-by").split()) == sorted(t.id for t in loads)

        explode = next(t for t in detail.task_runs if t.name == "explode")
        error = page.locator(f'[data-error-of="{explode.id}"]')
        assert error.is_visible() and "ValueError: exploded on 7" in error.inner_text()
        assert "Traceback (most recent call last)" in error.inner_text()
        assert "s3cr3t-value" not in page.content()

        screenshot(page, tmp_path, "run-page.png")
        page.goto(ui.url)
        screenshot(page, tmp_path, "runs-page.png")
        requests.assert_all_on(ui.url)
        page.close()


def test_a_new_run_appears_live_without_a_reload(browser, env, flows):
    first = run_flow(env, flows, "quick")
    with dashboard(env) as ui:
        page = browser.new_page()
        requests = Requests(page)
        page.goto(ui.url)
        page.wait_for_selector("#live.on")  # the event stream is open
        page.evaluate("window.notReloaded = true")
        assert page.locator("tr[data-run-id]").count() == 1
        second = run_flow(env, flows, "quick")
        page.wait_for_selector(f'tr[data-run-id="{second}"][data-state="COMPLETED"]', timeout=20_000)
        assert page.evaluate("window.notReloaded") is True
        ids = page.eval_on_selector_all("tr[data-run-id]", "rows => rows.map(r => r.dataset.runId)")
        assert ids == [second, first]
        requests.assert_all_on(ui.url)
        page.close()


GATED = """
import sys
from tether import flow, task

@task
def gate():
    print("WAITING", flush=True)
    sys.stdin.readline()
    return "through"

@flow
def gated():
    return gate()

if __name__ == "__main__":
    import tether.store
    tether.store.enable()
    gated()
"""


def test_a_running_run_page_follows_the_run_without_a_reload(browser, env, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "gated.py"
    script.write_text(GATED)
    child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "WAITING", child.stderr.read()
        with dashboard(env) as ui:
            page = browser.new_page(viewport={"width": 1000, "height": 400})
            requests = Requests(page)
            page.goto(ui.url)
            page.wait_for_selector('tr[data-run-id][data-state="RUNNING"]', timeout=20_000)
            assert "running for" in page.locator('tr[data-state="RUNNING"]').inner_text()
            page.locator('tr[data-state="RUNNING"] a').first.click()
            lane = page.wait_for_selector('svg .lane[data-state="RUNNING"]', timeout=20_000)
            task_run_id = lane.get_attribute("data-task-run-id")
            page.wait_for_selector("#live.on")
            page.evaluate("window.notReloaded = true")
            page.evaluate("window.scrollTo(0, 300)")
            scrolled = page.evaluate("window.scrollY")
            assert scrolled > 0
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.wait(timeout=60) == 0
            page.wait_for_selector(f'svg .lane[data-task-run-id="{task_run_id}"][data-state="COMPLETED"]',
                                   timeout=20_000)
            page.wait_for_selector('svg .flow-lane[data-state="COMPLETED"]', timeout=20_000)
            assert page.evaluate("window.notReloaded") is True
            assert page.evaluate("window.scrollY") == scrolled  # the update kept the reader's place
            requests.assert_all_on(ui.url)
            page.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()


def test_a_run_is_cancelled_from_its_page_and_its_resource_cleaned_up(browser, tmp_path):
    env = env_for(tmp_path / "home")
    env["CANCEL_LOG"] = str(tmp_path / "resource.log")
    script = tmp_path / "stuck.py"
    script.write_text(STUCK)
    process = start_flow(env, script, "stuck")
    store = open_store(f"sqlite:///{tmp_path / 'home' / 'tether.db'}")
    try:
        wait_until(lambda: "waiting with conn-main" in resource_log(env), "the task holding the resource", process)
        run = running_run(store, "stuck", process)
        with dashboard(env, "--allow-actions") as ui:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests = Requests(page)
            page.goto(f"{ui.url}runs/{run.id}")
            page.wait_for_selector("#live.on")
            button = page.get_by_role("button", name="Cancel run")
            assert f"sends SIGTERM to process {process.pid}" in page.locator("div.actions").inner_text()
            button.click()
            page.wait_for_url(f"**/runs/{run.id}?cancel=sent")
            # The page follows the run until it ends Cancelled, without a reload.
            page.evaluate("window.notReloaded = true")
            page.wait_for_selector('svg .flow-lane[data-state="CANCELLED"]', timeout=30_000)
            page.wait_for_selector('[data-notice="cancel-sent"]:has-text("the run ended Cancelled")', timeout=30_000)
            assert page.evaluate("window.notReloaded") is True
            assert page.get_by_role("button", name="Cancel run").count() == 0  # nothing left to cancel
            assert process.wait(timeout=60) == 143
            screenshot(page, tmp_path, "run-cancelled.png")

            # Asked again (an old tab): refused, saying why.
            status, said = ui.post(f"/actions/runs/{run.id}/cancel",
                                   "csrf=" + page.locator('meta[name="csrf-token"]').get_attribute("content"))
            assert status == 409 and "already ended Cancelled" in said and "nothing left to cancel" in said
            requests.assert_all_on(ui.url)
            page.close()
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
        ended = store.flow_run(run.id) if "run" in locals() else None
        store.close()
    assert resource_log(env) == ["setup main", "waiting with conn-main", "cleanup main failed Terminated"]
    assert ended is not None and ended.flow_run.state_type == "CANCELLED"
    [copy] = ended.resources
    assert (copy.scope_outcome, copy.cleanup_outcome) == ("failed", "succeeded")


def test_on_a_postgresql_store_a_new_run_appears_live(browser, env, flows, postgres_url):
    with own_postgres_database(postgres_url) as url:
        pg = {**env, "TETHER_DATABASE_URL": url}
        first = run_flow(pg, flows, "quick")
        with dashboard(pg) as ui:
            page = browser.new_page()
            requests = Requests(page)
            page.goto(ui.url)
            page.wait_for_selector("#live.on")
            assert "postgresql" in page.locator("header.top .meta").inner_text()
            page.evaluate("window.notReloaded = true")
            second = run_flow(pg, flows, "quick")
            page.wait_for_selector(f'tr[data-run-id="{second}"][data-state="COMPLETED"]', timeout=20_000)
            assert page.evaluate("window.notReloaded") is True
            ids = page.eval_on_selector_all("tr[data-run-id]", "rows => rows.map(r => r.dataset.runId)")
            assert ids == [second, first]
            requests.assert_all_on(ui.url)
            page.close()


def test_a_runs_artifacts_are_on_its_page_a_script_in_one_is_text_and_a_progress_moves_live(browser, env, tmp_path):
    script = tmp_path / "artifact_flows.py"
    script.write_text(ARTIFACT_FLOWS)
    report_id = run_flow(env, script, "report")
    gate = tmp_path / "gate"
    process = subprocess.Popen([*TETHER, "run", f"{script}:slow_progress", "-p", f"gate={gate}"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = open_store(f"sqlite:///{tmp_path / 'home' / 'tether.db'}")
    try:
        slow = running_run(store, "slow_progress", process)
        wait_until(lambda: [a for a in run_artifacts(store, slow.id) if a.key == "slow-progress"],
                   "the slow flow's progress artifact", process)
        with dashboard(env) as ui:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests = Requests(page)
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(f"{ui.url}runs/{report_id}")
            shown = page.eval_on_selector_all(
                "[data-artifact-key]", "els => els.map(e => [e.dataset.artifactKey, e.dataset.artifactType])")
            assert shown == [["sales-report", "markdown"], ["sales-table", "table"], ["dash-link", "link"],
                             ["bad-link", "link"], ["load-progress", "progress"]]
            report = page.locator('[data-artifact-key="sales-report"]')
            assert report.locator("h1").inner_text() == "Weekly sales"
            assert report.locator("li").all_inner_texts() == ["EU", "US"]
            # The script in the markdown is on the page as text a person reads, and it did not run.
            assert '<script>document.title = "owned"; window.owned = 1;</script>' in report.inner_text()
            assert report.locator("script").count() == 0
            assert page.evaluate("window.owned") is None and page.title() != "owned" and dialogs == []
            table = page.locator('[data-artifact-key="sales-table"] table')
            assert table.locator("th").all_inner_texts() == ["region", "sales"]
            assert table.locator("td").all_inner_texts() == ["EU", "3", "US", "5"]
            link = page.locator('[data-artifact-key="dash-link"] a[href="https://example.com/dash"]')
            assert link.inner_text() == "Dashboard"
            bad = page.locator('[data-artifact-key="bad-link"]')
            assert bad.locator(".a-link a").count() == 0 and "javascript:alert(1)" in bad.inner_text()
            assert page.locator('[data-artifact-key="load-progress"] progress').get_attribute("value") == "75.00"
            bar = page.locator('[data-artifact-key="load-progress"] progress').bounding_box()
            timeline = page.locator(".timeline-box").bounding_box()
            assert bar["y"] > timeline["y"] + timeline["height"]  # below the timeline
            screenshot(page, tmp_path, "run-artifacts.png")

            # A progress artifact updated while its run goes on: the page shows the new value, without a reload.
            page.goto(f"{ui.url}runs/{slow.id}")
            progress = '[data-artifact-key="slow-progress"][data-artifact-type="progress"] progress'
            assert page.locator(progress).get_attribute("value") == "10.00"
            page.wait_for_selector("#live.on")
            page.evaluate("window.notReloaded = true")
            Path(f"{gate}.1").write_text("")
            page.wait_for_selector(f'{progress}[value="60.00"]', timeout=20_000)
            assert "60%" in page.locator('[data-artifact-key="slow-progress"]').inner_text()
            assert page.evaluate("window.notReloaded") is True
            Path(f"{gate}.2").write_text("")
            assert process.wait(timeout=60) == 0
            requests.assert_all_on(ui.url)
            page.close()
    finally:
        for step in (1, 2):
            Path(f"{gate}.{step}").write_text("")  # never leave the flow waiting
        if process.poll() is None:
            process.kill()
        process.communicate()
        store.close()
