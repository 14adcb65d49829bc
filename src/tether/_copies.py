"""The flow process's book of resource copies on remote workers, and closing them.

A task that receives a resource value and runs on another process makes that worker
open its own copy (see `_worker`). The worker reports each copy's setup with the
task's result; `copy_reported` turns the report into ledger events (with the worker's
host and process id, so a worker that dies leaves an orphan row) and remembers
which worker holds a copy of which scope. When the scope ends, `close_copies` asks
each of those workers to close its copy with the scope's outcome and waits for them;
a remote cleanup that fails counts as a failing cleanup of the flow.

This module does not decide when a scope ends (`_resources` does) and does not
talk to workers itself: each copy remembers the runner that can reach its worker.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from tether._context import events
from tether._core import ResourceEvent
from tether._errors import CleanupError
from tether._logging import logger
from tether._settings import Settings
from tether._wire import CleanupReport, WorkerLost, dump_error

if TYPE_CHECKING:
    from tether._resources import ResourceScope
    from tether.runners._remote import RemoteRunner


class RemoteCopy:
    """One worker's copy of one resource scope."""

    __slots__ = ("host", "pid", "runner", "scope", "worker")

    def __init__(self, scope: ResourceScope, runner: RemoteRunner, worker: str, host: str, pid: int) -> None:
        self.scope = scope
        self.runner = runner
        self.worker = worker
        self.host = host
        self.pid = pid

    def __repr__(self) -> str:
        return f"<RemoteCopy {self.scope.name!r} on {self.worker} (pid {self.pid})>"


_lock = threading.Lock()
_by_scope: dict[str, dict[str, RemoteCopy]] = {}
_closed: weakref.WeakSet[ResourceScope] = weakref.WeakSet()  # scopes whose copies were closed


def copy_reported(scope: ResourceScope, runner: RemoteRunner, report: dict[str, Any]) -> None:
    """Record one step of a worker's copy (from `_worker`'s report) and remember the copy.

    A copy reported after its scope was closed (by a run abandoned meanwhile) is closed now.
    """
    step = report["step"]
    _emit(scope, step, report["host"], report["pid"], report["worker"], report["timestamp"], error=report.get("error"), handle=report.get("handle"))
    if step != "setup":
        return
    copy = RemoteCopy(scope, runner, report["worker"], report["host"], report["pid"])
    with _lock:
        late = scope in _closed
        if not late:
            _by_scope.setdefault(scope.id, {})[copy.worker] = copy
    if late:
        book = scope.book
        error = (book.first_error or RuntimeError(f"a run of resource {scope.name!r}'s scope failed")) if book.failed else None
        threading.Thread(target=_close, args=(scope, [copy], error), name="tether-late-copy", daemon=True).start()


def copies_of(scope: ResourceScope) -> list[RemoteCopy]:
    with _lock:
        return list(_by_scope.get(scope.id, {}).values())


def close_copies(scope: ResourceScope, error: BaseException | None) -> None:
    """Close every worker's copy of ``scope`` with its outcome, and wait for them.

    Never raises: a failure is logged, recorded in the ledger and added to the flow
    run's cleanup errors; a copy whose worker is gone is left an orphan in the ledger.
    """
    with _lock:
        _closed.add(scope)
        copies = list(_by_scope.pop(scope.id, {}).values())
    if copies:
        _close(scope, copies, error)


def close_copies_held_by(runner: RemoteRunner) -> None:
    """Close the copies a stopping runner's workers still hold (scopes of an outer flow run)."""
    with _lock:
        held: dict[str, list[RemoteCopy]] = {}
        for scope_id, by_worker in list(_by_scope.items()):
            for worker, copy in list(by_worker.items()):
                if copy.runner is runner:
                    held.setdefault(scope_id, []).append(by_worker.pop(worker))
            if not by_worker:
                del _by_scope[scope_id]
    for copies in held.values():
        scope = copies[0].scope
        book = scope.book
        error = (book.first_error or RuntimeError(f"a run of resource {scope.name!r}'s scope failed")) if book.failed else None
        _close(scope, copies, error)


def _close(scope: ResourceScope, copies: list[RemoteCopy], error: BaseException | None) -> None:
    try:
        packed = dump_error(error) if error is not None else None
        drain = (scope.flow_run.settings if scope.flow_run is not None else Settings.from_env()).interrupt_grace_seconds
    except BaseException as exc:  # noqa: BLE001 - reported as this scope's cleanup failure below
        packed, drain = None, 10.0
        logger.error("Could not pack the outcome of resource %r for its workers: %r", scope.name, exc)
    outcome = "failed" if error is not None else "succeeded"
    pending = []
    for copy in copies:
        try:
            pending.append((copy, copy.runner.close_copy(copy.worker, scope.id, packed, drain)))
        except BaseException as exc:  # noqa: BLE001
            _failed(scope, copy, outcome, exc, 0.0)
    for copy, future in pending:
        started = time.monotonic()
        try:
            report: CleanupReport = future.result()
        except WorkerLost as exc:
            logger.warning(
                "The copy of resource %r on worker %s (pid %d) was not cleaned up: %s. The ledger keeps it "
                "as an orphan; `tether reap` can close it if the resource has a reaper.",
                scope.name, copy.worker, copy.pid, exc,
            )
            continue
        except BaseException as exc:  # noqa: BLE001
            _failed(scope, copy, outcome, exc, time.monotonic() - started)
            continue
        if report.still_running:
            logger.warning(
                "Resource %r on worker %s was cleaned up while %d of its task(s) still ran there "
                "(they did not stop within %g s).", scope.name, copy.worker, report.still_running, drain,
            )
        if report.error is not None:
            _failed(scope, copy, outcome, CleanupError(f"on worker {copy.worker} (pid {copy.pid}): {report.error}"), report.seconds)
        elif report.had_copy:
            _emit(scope, "cleanup", copy.host, copy.pid, copy.worker, time.time(), outcome=outcome, seconds=report.seconds)


def _failed(scope: ResourceScope, copy: RemoteCopy, outcome: str, exc: BaseException, seconds: float) -> None:
    if scope.flow_run is not None and getattr(scope, "cleanup_fails_flow", True):
        scope.flow_run.cleanup_errors.append(exc)
    logger.error("Cleanup of resource %r on worker %s (pid %d) failed: %s: %s", scope.name, copy.worker, copy.pid, type(exc).__name__, exc)
    _emit(scope, "cleanup-failed", copy.host, copy.pid, copy.worker, time.time(), error=f"{type(exc).__name__}: {exc}", outcome=outcome, seconds=seconds)


def _emit(scope: ResourceScope, step: str, host: str, pid: int, worker: str, timestamp: float, **details: Any) -> None:
    if not events.active:
        return
    reaper = scope.resource.reaper
    events.emit(
        ResourceEvent(
            step=step,
            scope_id=scope.id,
            name=str(scope.name),
            flow_run_id=scope.flow_run.record.id if scope.flow_run is not None else None,
            timestamp=timestamp,
            error=details.pop("error", None),
            outcome=details.pop("outcome", None),
            worker=host,
            pid=pid,
            handle=details.pop("handle", None),
            reaper=f"{getattr(reaper, '__module__', '?')}:{getattr(reaper, '__qualname__', repr(reaper))}" if reaper else None,
            details={"worker": worker, **details},
        )
    )
