"""Ctrl-C and SIGTERM: the flow is cancelled, cleanup runs once, the process exits non-zero."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "scripts" / "interruptible_flow.py"


def start(*flags: str, grace: str = "2") -> subprocess.Popen[str]:
    env = {**os.environ, "TETHER_INTERRUPT_GRACE_SECONDS": grace, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *flags],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def read_until(proc: subprocess.Popen[str], marker: str) -> list[str]:
    lines = []
    for line in proc.stdout:  # type: ignore[union-attr]
        lines.append(line.strip())
        if line.strip().startswith(marker):
            return lines
    raise AssertionError(f"the flow ended before printing {marker!r}: {lines}; stderr: {proc.stderr.read()}")  # type: ignore[union-attr]


def finish(proc: subprocess.Popen[str]) -> tuple[list[str], str, int]:
    out, err = proc.communicate(timeout=60)
    return [line for line in out.splitlines() if line], err, proc.returncode


def test_ctrl_c_cancels_the_flow_and_cleans_up():
    proc = start()
    read_until(proc, "ready")
    proc.send_signal(signal.SIGINT)
    lines, err, code = finish(proc)
    assert lines == ["cleanup-started", "cleanup-done failed:KeyboardInterrupt"]
    assert code != 0
    assert "KeyboardInterrupt" in err


def test_sigterm_cancels_the_flow_and_cleans_up():
    proc = start()
    read_until(proc, "ready")
    proc.send_signal(signal.SIGTERM)
    lines, err, code = finish(proc)
    assert lines == ["cleanup-started", "cleanup-done failed:Terminated"]
    assert code == 143


def test_sigterm_cancels_an_async_flow_and_cleans_up():
    # asyncio.run turns Ctrl-C into a cancellation, but not SIGTERM: tether's handler on the loop does.
    proc = start("--async")
    read_until(proc, "ready")
    proc.send_signal(signal.SIGTERM)
    lines, err, code = finish(proc)
    assert lines == ["cleanup-started", "cleanup-done failed:Terminated"]
    assert code == 143
    assert "is being cancelled (SIGTERM)" in err


def test_ctrl_c_cancels_an_async_flow_and_cleans_up():
    proc = start("--async")
    read_until(proc, "ready")
    proc.send_signal(signal.SIGINT)
    lines, err, code = finish(proc)
    assert lines[0] == "cleanup-started" and lines[1].startswith("cleanup-done failed:"), lines
    assert code != 0


def test_second_ctrl_c_does_not_cut_cleanup_short():
    proc = start("--slow-cleanup")
    read_until(proc, "ready")
    proc.send_signal(signal.SIGINT)
    read_until(proc, "cleanup-started")
    proc.send_signal(signal.SIGINT)  # while cleanup waits on stdin
    for line in proc.stderr:  # type: ignore[union-attr]
        if "still cleaning up" in line:
            break
    else:
        raise AssertionError("the second Ctrl-C was not reported")
    proc.stdin.write("go on\n")  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]
    lines, err, code = finish(proc)
    assert lines == ["cleanup-done failed:KeyboardInterrupt"]
    assert code != 0


def test_task_blocked_in_c_is_abandoned_after_the_grace_period_and_cleanup_runs():
    proc = start("--blocked", grace="0.5")
    read_until(proc, "ready")
    proc.send_signal(signal.SIGINT)
    lines, err, code = finish(proc)
    assert lines == ["cleanup-started", "cleanup-done failed:KeyboardInterrupt"]
    assert code != 0
