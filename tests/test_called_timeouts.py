"""A called task's timeout: interrupted on time on the main thread, truthful elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

from tether import flow, task
from tether.runners import ThreadPoolRunner

SCRIPT = textwrap.dedent(
    """
    import json, time
    from tether import flow, task

    @task(timeout_seconds=0.5)
    def slow():
        time.sleep(20)

    @flow
    def main():
        started = time.monotonic()
        state = slow(return_state=True)
        return {"seconds": time.monotonic() - started, "state": state.name, "message": state.message}

    print(json.dumps(main()))
    """
)


def test_a_called_task_sleeping_on_the_main_thread_is_interrupted_at_its_timeout(tmp_path):
    script = tmp_path / "flow.py"
    script.write_text(SCRIPT)
    env = {"TETHER_HOME": str(tmp_path / "home"), "TETHER_STORE": "off", "TETHER_INTERRUPT_GRACE_SECONDS": "10", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["state"] == "TimedOut" and "exceeded its timeout of 0.5 s" in seen["message"]
    assert "abandoned" not in seen["message"]
    assert seen["seconds"] < 5  # not the 20 s of the sleep, nor the 10 s of the grace period


def test_a_called_task_off_the_main_thread_ends_when_it_stops_and_says_so(monkeypatch):
    """Off the main thread an exception lands only when the sleep returns: the run is not
    said to be abandoned while its caller, the same thread, still waits for it."""
    monkeypatch.setenv("TETHER_INTERRUPT_GRACE_SECONDS", "0.2")

    @task(timeout_seconds=0.1)
    def slow():
        time.sleep(1.0)

    @task
    def outer():
        started = time.monotonic()
        state = slow(return_state=True)
        return state.name, state.message, time.monotonic() - started

    @flow(task_runner=ThreadPoolRunner(2))
    def main():
        return outer.submit().result()

    name, message, seconds = main()
    assert name == "TimedOut" and "abandoned" not in message
    assert seconds >= 1.0  # it really stopped when the sleep returned, and its state came then
