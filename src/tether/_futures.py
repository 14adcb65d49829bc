"""Futures: handles on submitted task runs, and `wait` / `as_completed` over them.

A `TaskFuture` is a thin view of a task run (the engine's `TaskRun`, which this module
knows only as a `RunHandle`); the run owns its completion. Looking at a future
(``result()``, ``state``, ``wait()``, or `wait` / `as_completed` over it) marks the run
as looked at, so a failure there is not "silent" when the flow ends. A future's type
names its task's return type (``TaskFuture[int]``), for type checkers only.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from tether._core import RunRecord, State
from tether._interrupt import wait_interruptibly

R = TypeVar("R")


class RunHandle(Protocol):
    """What a future needs of its task run (the engine's `TaskRun` is one)."""

    @property
    def record(self) -> RunRecord: ...

    #: Set once someone looked at the run's outcome, so its failure is not silent.
    observed: bool

    def is_done(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run is final (True) or ``timeout`` seconds have passed (False)."""

    def add_done_callback(self, fn: Callable[[RunHandle], None]) -> None:
        """Call ``fn(run)`` once the run is final (at once if it already is)."""


class TaskFuture(Generic[R]):
    """The future of one submitted task run. Compare Prefect's `PrefectFuture`."""

    __slots__ = ("_run",)

    def __init__(self, run: RunHandle) -> None:
        self._run = run

    @property
    def task_run_id(self) -> str:
        return self._run.record.id

    @property
    def state(self) -> State:
        self._run.observed = True  # the caller sees the failure, if it is one
        return self._run.record.state

    def get_state(self) -> State:
        """The run's current state (Prefect 2's name for `state`)."""
        return self.state

    def done(self) -> bool:
        return self._run.is_done()

    def wait(self, timeout: float | None = None) -> State | None:
        """Block until the run is final, or ``timeout`` seconds have passed.

        Returns the final state, or None if the run is not final yet (Prefect 2's
        ``wait()`` returned the state; Prefect 3's returns None, which nothing reads)."""
        self._run.observed = True
        return self._run.record.state if self._run.wait(timeout) else None

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """The run's return value; raises its error if it did not complete.

        Raises `TimeoutError` if the run is not final within ``timeout`` seconds.
        """
        self._run.observed = True
        if not self._run.wait(timeout):
            raise TimeoutError(
                f"Task run {self._run.record.name!r} did not finish within {timeout} s "
                f"(it is {self._run.record.state.name})."
            )
        return self._run.record.state.result(raise_on_failure=raise_on_failure)  # type: ignore[no-any-return]

    def add_done_callback(self, fn: Callable[[TaskFuture[R]], None]) -> None:
        """Call ``fn(future)`` once the run is final (at once if it already is)."""
        self._run.add_done_callback(lambda _run: fn(self))

    def __repr__(self) -> str:
        return f"<TaskFuture {self._run.record.name!r} {self._run.record.state.name}>"


class TaskFutureList(list[TaskFuture[R]], Generic[R]):
    """The futures returned by ``task.map``: a list with ``wait()`` and ``result()``."""

    def wait(self, timeout: float | None = None) -> None:
        wait(self, timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        done = wait(self, timeout=timeout)
        if done.not_done:
            raise TimeoutError(f"{len(done.not_done)} of {len(self)} task runs did not finish within {timeout} s.")
        return [f.result(raise_on_failure=raise_on_failure) for f in self]


class DoneAndNotDoneFutures(NamedTuple):
    done: set[TaskFuture[Any]]
    not_done: set[TaskFuture[Any]]


def wait(futures: Iterable[TaskFuture[Any]], timeout: float | None = None) -> DoneAndNotDoneFutures:
    """Wait until every future is done or ``timeout`` passes; returns (done, not_done).

    The caller then has the futures in hand to check, so their failures count as looked at."""
    futures = list(futures)
    finished = threading.Event()
    remaining = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Any) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                finished.set()

    if futures:
        for f in futures:
            f._run.observed = True
            f._run.add_done_callback(one_done)
        wait_interruptibly(finished, timeout)
    done = {f for f in futures if f.done()}
    return DoneAndNotDoneFutures(done, set(futures) - done)


def as_completed(futures: Iterable[TaskFuture[R]], timeout: float | None = None) -> Iterator[TaskFuture[R]]:
    """Yield each future as its run becomes final; `TimeoutError` after ``timeout`` seconds."""
    futures = list(futures)
    finished: queue.SimpleQueue[TaskFuture[R]] = queue.SimpleQueue()
    for f in futures:
        f._run.observed = True  # each is handed to the caller to check
        f.add_done_callback(finished.put)
    deadline = None if timeout is None else time.monotonic() + timeout
    for _ in range(len(futures)):
        while True:
            left = 0.1 if deadline is None else min(0.1, max(0.0, deadline - time.monotonic()))
            try:
                # In slices, so a main thread still sees Ctrl-C (see wait_interruptibly).
                future = finished.get(timeout=left)
                break
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"Not every task run finished within {timeout} s.") from None
        yield future
