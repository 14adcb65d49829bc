"""Waiting for what another process does, in tests: the suite's one polling loop.

Inside one process, tests order events with `threading.Event`. A test that waits for
another process (a row it commits, a file or a page it produces) has no event to wait on,
so it asks again until the answer comes: `wait_until` is that loop, with a deadline, the
process to watch (its early exit is a failure with its output), and what was awaited.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

#: How often another process's progress is asked for again (not a wait for an event of ours).
POLL_SECONDS = 0.05


def wait_until(predicate: Callable[[], T], what: str, process: subprocess.Popen[Any] | None = None,
               timeout: float = 60.0, story: Callable[[], str] | None = None) -> T:
    """``predicate()``'s first true answer; fails after ``timeout`` s, or once ``process`` has exited
    (``story``: what else the failure's message should tell, such as the other processes' output)."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the process exited {process.returncode} before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}" + (f"\n{story()}" if story else ""))
        if process is None:
            time.sleep(POLL_SECONDS)
            continue
        try:  # the watched process's exit ends the pause at once
            process.wait(POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
