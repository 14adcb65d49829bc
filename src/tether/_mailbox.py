"""Jobs that must run on one particular thread, run there while it waits.

Some values only work on the thread that made them: a default `sqlite3` connection
refuses every other thread. Its resource's cleanup is due when the last task of its
scope ends, on whatever thread noticed; that thread posts the cleanup to the owner's
mailbox and waits for it. The owner, a flow's thread, runs its posted jobs whenever
it waits through `tether._interrupt.wait_interruptibly` (a future's result, a called
task, the flow's end, which waits for every cleanup), so the job runs at the latest
when the flow ends.

A thread that may receive jobs says so with `expect` (and `done_expecting`), so that
its waits look at the mailbox in short slices; every other wait is unchanged. This
module runs jobs; it does not decide which need a particular thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_lock = threading.Lock()
_expecting: dict[int, int] = {}  # thread ident -> how many owners on it may post
_posted: dict[int, list[tuple[Callable[[], Any], Future[Any]]]] = {}

#: How often an expecting thread looks at its mailbox while it waits.
SLICE_SECONDS = 0.02


def expect(thread_ident: int) -> None:
    """Jobs may be posted to ``thread_ident`` from now on."""
    with _lock:
        _expecting[thread_ident] = _expecting.get(thread_ident, 0) + 1


def done_expecting(thread_ident: int) -> None:
    with _lock:
        left = _expecting.get(thread_ident, 0) - 1
        if left > 0:
            _expecting[thread_ident] = left
        else:
            _expecting.pop(thread_ident, None)


def is_expecting(thread_ident: int) -> bool:
    return bool(_expecting) and thread_ident in _expecting


def post(thread: threading.Thread, job: Callable[[], Any]) -> Future[Any]:
    """Run ``job`` on ``thread`` at its next wait; the future has its result or error."""
    future: Future[Any] = Future()
    assert thread.ident is not None
    with _lock:
        _posted.setdefault(thread.ident, []).append((job, future))
    return future


def run_posted() -> None:
    """Run the jobs posted to the calling thread, in the order they were posted."""
    if not _posted:
        return
    ident = threading.get_ident()
    with _lock:
        jobs = _posted.pop(ident, None)
    for job, future in jobs or ():
        try:
            future.set_result(job())
        except BaseException as exc:  # noqa: BLE001 - the poster re-raises it
            future.set_exception(exc)
