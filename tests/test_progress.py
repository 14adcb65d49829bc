"""The live view of `tether run`: counts by what task runs are doing, failures, the summary."""

from __future__ import annotations

import subprocess
import sys
import threading

from rich.console import Console

from tether import flow, resource, task
from tether._context import events
from tether._progress import Progress
from tether.limits import set as set_limit
from tether.runners import ThreadPoolRunner
from tether.testing import FakeClock


def text_of(renderable) -> str:
    console = Console(width=120, record=True, force_terminal=False)
    console.print(renderable)
    return console.export_text()


def test_the_view_counts_what_task_runs_are_doing_and_names_failures():
    release, started = threading.Event(), threading.Event()
    progress = Progress(clock=iter([0.0, 2.0, 3.5, 3.5, 3.5]).__next__)
    seen: dict[str, str] = {}

    @resource
    def conn():
        yield {"open": True}

    @task
    def hold(c):
        started.set()
        release.wait(10)

    @task
    def bad(c):
        raise ValueError("bad row 3\nsecond line")

    @flow(task_runner=ThreadPoolRunner(4))
    def main():
        with conn() as c:
            held = hold.submit(c)
            failed = bad.submit(c)
            failed.result(raise_on_failure=False)  # looked at: the flow itself completes
            started.wait(10)
            seen["during"] = text_of(progress.render())
            release.set()
        held.wait()

    events().subscribe(progress)
    try:
        state = main(return_state=True)
    finally:
        events().unsubscribe(progress)
    during = seen["during"]
    assert "1/2" in during and "50%" in during and "2.0 s" in during
    assert "1 running" in during and "1 failed" in during and "resources 1 open" in during
    assert "x bad: ValueError: bad row 3" in during and "second line" not in during
    summary = text_of(progress.summary(state))
    assert "Flow run Completed in 3.5 s: 2 task runs, 1 done, 1 failed" in summary
    assert "x bad Failed: ValueError: bad row 3" in summary
    assert f"tether runs show {progress.flow_run_id}" in summary
    assert progress.open_resources == 0


def test_runs_waiting_for_a_slot_and_retrying_are_counted_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_STORE", "on")
    set_limit("tether-progress-test", 1)
    release, inside = threading.Event(), threading.Event()
    progress = Progress()
    seen: dict[str, dict[str, int]] = {}

    @task(tags=["tether-progress-test"])
    def limited():
        inside.set()
        release.wait(10)

    attempts: list[int] = []
    retrying = threading.Event()

    @task(retries=1, retry_delay_seconds=30)  # the fake clock lets the 30 s pass at once
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("not yet")
        retrying.set()
        release.wait(10)

    @flow(task_runner=ThreadPoolRunner(4))
    def main():
        first = limited.submit()
        inside.wait(10)
        second = limited.submit()  # the limit is 1: it waits for a slot
        retried = flaky.submit()
        retrying.wait(10)  # in its second attempt
        seen["counts"] = progress.counts()
        release.set()
        first.wait(), second.wait(), retried.wait()

    events().subscribe(progress)
    try:
        with FakeClock():
            main(return_state=True)
    finally:
        events().unsubscribe(progress)
    counts = seen["counts"]
    assert counts["waiting for a slot"] == 1 and counts["running"] == 1 and counts["retrying"] == 1


def test_tether_run_prints_the_summary(tmp_path):
    script = tmp_path / "flows.py"
    script.write_text(
        "from tether import flow, task\n"
        "@task\n"
        "def bad(i):\n"
        "    raise ValueError(f'bad row {i}')\n"
        "@task\n"
        "def ok(i):\n"
        "    return i\n"
        "@flow\n"
        "def main():\n"
        "    ok.map(range(3)).result()\n"
        "    return bad.submit(7).result()\n"
    )
    env = {"TETHER_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "tether.cli", "run", f"{script}:main"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert "Flow run Failed in" in result.stderr and "4 task runs, 3 done, 1 failed" in result.stderr
    assert "x bad Failed: ValueError: bad row 7" in result.stderr
    assert "tether runs show" in result.stderr
    # Failures and retries are said on the console as they happen, by the engine's log.
    assert "Task run 'bad' - Finished in state Failed: ValueError: bad row 7" in result.stderr
