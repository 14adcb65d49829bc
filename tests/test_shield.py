"""Ctrl-C that lands inside one of the engine's own steps is raised after that step.

The end-to-end test makes the signal land inside `submit()` deterministically: a
recorder of the event stream sends SIGINT to its own process when the task run joins
the resource's scope, so the handler runs on the main thread in the middle of the
engine's step (the scope counted the run, the flow had not booked it yet). Unshielded,
that left the scope waiting for a run that never started, and the flow hung.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from tether import _shield


def test_a_signal_kept_during_a_step_is_raised_after_it():
    done: list[str] = []

    def step():
        assert _shield.active()
        _shield.defer(KeyboardInterrupt("first"))
        _shield.defer(KeyboardInterrupt("second"))  # the first one wins
        done.append("step finished")
        return 1

    with pytest.raises(KeyboardInterrupt, match="first"):
        _shield.shielded(step)
    assert done == ["step finished"] and not _shield.active()
    assert _shield.shielded(lambda: 2) == 2  # nothing kept any more


def test_user_code_inside_a_step_is_interruptible():
    seen: list[str] = []

    def user_code():
        assert not _shield.active()
        seen.append("ran")

    def step():
        _shield.defer(KeyboardInterrupt())
        _shield.unshielded(user_code)  # a kept signal is raised before the user's code

    with pytest.raises(KeyboardInterrupt):
        _shield.shielded(step)
    assert seen == []
    _shield.shielded(lambda: _shield.unshielded(user_code))
    assert seen == ["ran"]


SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from tether import flow, resource, task
    from tether._context import events
    from tether.runners import ThreadPoolRunner

    record = sys.argv[1]

    def note(line):
        with open(record, "a") as f:
            f.write(line + "\\n")

    @resource
    def conn():
        note("setup")
        try:
            yield {"open": True}
            note("cleanup ok")
        except BaseException as exc:
            note(f"cleanup {type(exc).__name__}")
            raise

    class InterruptOnJoin:
        def record(self, event):
            if getattr(event, "step", None) == "used":
                os.kill(os.getpid(), signal.SIGINT)  # lands inside submit(), on the main thread

    events().subscribe(InterruptOnJoin())

    @task
    def use(c, i):
        return i

    @flow(task_runner=ThreadPoolRunner(2))
    def main():
        with conn() as c:
            use.submit(c, 1)
            note("after submit")  # never: the Ctrl-C is raised as submit returns

    main()
    """
)


def test_ctrl_c_inside_submit_cancels_the_flow_and_cleans_up(tmp_path):
    script, record = tmp_path / "flow.py", tmp_path / "record"
    script.write_text(SCRIPT)
    env = {"TETHER_HOME": str(tmp_path / "home"), "TETHER_STORE": "off", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, str(script), str(record)], capture_output=True, text=True, env=env, timeout=60)
    # Python ends on an uncaught KeyboardInterrupt by SIGINT itself: a shell says 130.
    assert result.returncode in (130, -signal.SIGINT), result.stderr[-2000:]
    assert record.read_text().splitlines() == ["setup", "cleanup KeyboardInterrupt"]
