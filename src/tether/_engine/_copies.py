"""The flow process's book of resource copies on remote workers, and closing them.

A task that receives a resource value and runs on another process makes that worker
open its own copy (see `_worker`). The worker writes each step of its copy to the
ledger itself, before it acts, where `ledger_target` says (the flow's store), and
reports the steps with the task's result; `copy_reported` emits them as events here
too (marked as stored, so the store does not write them twice; with no store
reachable from the worker, they are the ledger's record) and remembers which worker
holds a copy of which scope (in the `CopyBook`, a part of the process's runtime). When the scope ends, `close_copies` asks each of those
workers to close its copy with the scope's outcome and waits for them; a remote
cleanup that fails counts as a failing cleanup of the flow.

A call abandoned on a live worker (it did not stop within the grace period) never
reports the copy it may have opened: `copies_unreported` notes its scope, whose end
then asks every worker of the runner to close its copy, if it holds one.

This module does not decide when a scope ends (`_resources` does) and does not
talk to workers itself: each copy remembers the runner that can reach its worker.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from tether._context import events
from tether._core import ResourceEvent
from tether._errors import CleanupError
from tether._logging import logger
from tether._runtime import Part, get_clock
from tether._settings import Settings
from tether.runners._wire import CleanupReport, WorkerLost, dump_error
from tether.runners._worker import cleanup_copy
from tether.store import LedgerTarget
from tether.store import ledger_target as _target_of_flow

if TYPE_CHECKING:
    from tether._resources import ResourceScope
    from tether.runners._base import RemoteRunner


class RemoteCopy:
    """One worker's copy of one resource scope (``reported``: the worker said it holds one)."""

    __slots__ = ("host", "pid", "reported", "runner", "scope", "worker")

    def __init__(self, scope: ResourceScope, runner: RemoteRunner, worker: str, host: str, pid: int, reported: bool = True) -> None:
        self.scope = scope
        self.runner = runner
        self.worker = worker
        self.host = host
        self.pid = pid
        self.reported = reported

    def __repr__(self) -> str:
        return f"<RemoteCopy {self.scope.name!r} on {self.worker} (pid {self.pid})>"


class CopyBook:
    """The process's book: which worker holds a copy of which scope (a part of the runtime)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_scope: dict[str, dict[str, RemoteCopy]] = {}
        self.closed: weakref.WeakSet[ResourceScope] = weakref.WeakSet()  # scopes whose copies were closed
        #: Scopes with a call abandoned on a live worker (scope id -> the scope, the runners of those calls).
        self.unreported: dict[str, tuple[ResourceScope, list[RemoteRunner]]] = {}
        self.targets: weakref.WeakKeyDictionary[ResourceScope, LedgerTarget | None] = weakref.WeakKeyDictionary()


book = Part("worker copies", lambda runtime: CopyBook())


def ledger_target(scope: ResourceScope) -> LedgerTarget | None:
    """Where workers write the ledger rows of their copies of ``scope`` (the same for the
    scope's life, made once)."""
    targets = book().targets
    try:
        return targets[scope]
    except KeyError:
        pass
    target = _target_of_flow(scope.flow_run.run_id if scope.flow_run is not None else None, _reaper_name(scope))
    targets[scope] = target
    return target


def copy_reported(scope: ResourceScope, runner: RemoteRunner, report: dict[str, Any]) -> None:
    """Emit one step of a worker's copy (from `_worker`'s report) and remember the copy.

    A copy reported after its scope was closed (by a run abandoned meanwhile) is closed now.
    """
    step = report["step"]
    _emit(
        scope, step, report["host"], report["pid"], report["worker"], report["timestamp"], report.get("recorded", False),
        error=report.get("error"), handle=report.get("handle"),
    )
    if step != "setup":
        return
    copy = RemoteCopy(scope, runner, report["worker"], report["host"], report["pid"])
    copies = book()
    with copies.lock:
        late = scope in copies.closed
        if not late:
            copies.by_scope.setdefault(scope.id, {})[copy.worker] = copy
    if late:
        threading.Thread(target=_close, args=(scope, [copy], _error_of(scope)), name="tether-late-copy", daemon=True).start()


def copies_unreported(scope: ResourceScope, runner: RemoteRunner) -> None:
    """A call of ``scope`` was abandoned on a live worker: if it opened a copy there, no
    report of it will come. The scope's end asks every worker of ``runner`` to close its copy."""
    copies = book()
    with copies.lock:
        runners = copies.unreported.setdefault(scope.id, (scope, []))[1]
        if runner not in runners:
            runners.append(runner)


def copies_of(scope: ResourceScope) -> list[RemoteCopy]:
    copies = book()
    with copies.lock:
        return list(copies.by_scope.get(scope.id, {}).values())


def close_copies(scope: ResourceScope, error: BaseException | None) -> None:
    """Close every worker's copy of ``scope`` with its outcome, and wait for them.

    Never raises: a failure is logged, recorded in the ledger and added to the flow
    run's cleanup errors; a copy whose worker is gone is left an orphan in the ledger.
    """
    known = book()
    with known.lock:
        known.closed.add(scope)
        copies = list(known.by_scope.pop(scope.id, {}).values())
        _, unreported = known.unreported.pop(scope.id, (scope, []))
    for runner in unreported:
        copies += _maybe_held(scope, runner, copies)
    if copies:
        _close(scope, copies, error)


def close_copies_held_by(runner: RemoteRunner) -> None:
    """Close the copies a stopping runner's workers still hold (scopes of an outer flow run)."""
    held: dict[str, tuple[ResourceScope, list[RemoteCopy], bool]] = {}
    known = book()
    with known.lock:
        for scope_id, by_worker in list(known.by_scope.items()):
            for worker, copy in list(by_worker.items()):
                if copy.runner is runner:
                    scope, copies, _ = held.setdefault(scope_id, (copy.scope, [], False))
                    copies.append(by_worker.pop(worker))
            if not by_worker:
                del known.by_scope[scope_id]
        for scope_id, (scope, runners) in list(known.unreported.items()):
            if runner in runners:
                runners.remove(runner)
                if not runners:
                    del known.unreported[scope_id]
                held[scope_id] = (scope, held.get(scope_id, (scope, [], True))[1], True)
    for scope, copies, unreported in held.values():
        if unreported:
            copies = copies + _maybe_held(scope, runner, copies)
        if copies:
            _close(scope, copies, _error_of(scope))


def _maybe_held(scope: ResourceScope, runner: RemoteRunner, known: list[RemoteCopy]) -> list[RemoteCopy]:
    """A copy for each worker of ``runner`` not known to hold one: it may (see `copies_unreported`)."""
    try:
        workers = runner.worker_names()
    except Exception as exc:  # noqa: BLE001 - those copies stay orphans in the ledger
        logger.warning(
            "Could not list the workers of %r to close the copies of resource %r that abandoned task runs may "
            "have opened (%r); the ledger keeps any such copy as an orphan once its worker is gone.", runner, scope.name, exc,
        )
        return []
    taken = {c.worker for c in known if c.runner is runner}
    return [RemoteCopy(scope, runner, worker, "?", 0, reported=False) for worker in workers if worker not in taken]


def _error_of(scope: ResourceScope) -> BaseException | None:
    return scope.book.outcome_error()


def _close(scope: ResourceScope, copies: list[RemoteCopy], error: BaseException | None) -> None:
    try:
        packed = dump_error(error) if error is not None else None
        drain = scope.flow_run.grace_seconds if scope.flow_run is not None else Settings.from_env().interrupt_grace_seconds
    except BaseException as exc:  # noqa: BLE001 - reported as this scope's cleanup failure below
        packed, drain = None, 10.0
        logger.error("Could not pack the outcome of resource %r for its workers: %r", scope.name, exc)
    outcome = "failed" if error is not None else "succeeded"
    clock = get_clock()
    pending = []
    for copy in copies:
        try:
            pending.append((copy, copy.runner.submit_to(copy.worker, cleanup_copy, scope.id, packed, drain)))
        except BaseException as exc:  # noqa: BLE001
            if copy.reported:
                _failed(scope, copy.host, copy.pid, copy.worker, outcome, exc, 0.0, False)
    for copy, future in pending:
        started = clock.monotonic()
        try:
            report: CleanupReport = future.result()
        except WorkerLost as exc:
            if copy.reported:
                logger.warning(
                    "The copy of resource %r on worker %s (pid %d) was not cleaned up: %s. The ledger keeps it "
                    "as an orphan; `tether reap` can close it if the resource has a reaper.",
                    scope.name, copy.worker, copy.pid, exc,
                )
            continue
        except BaseException as exc:  # noqa: BLE001
            if copy.reported:
                _failed(scope, copy.host, copy.pid, copy.worker, outcome, exc, clock.monotonic() - started, False)
            continue
        if not report.had_copy:
            continue
        if report.still_running:
            logger.warning(
                "Resource %r on worker %s was cleaned up while %d of its task(s) still ran there "
                "(they did not stop within %g s).", scope.name, copy.worker, report.still_running, drain,
            )
        if report.error is not None:
            failure = CleanupError(f"on worker {copy.worker} (pid {report.pid}): {report.error}")
            _failed(scope, report.host, report.pid, copy.worker, outcome, failure, report.seconds, report.recorded)
        else:
            _emit(scope, "cleanup", report.host, report.pid, copy.worker, clock.time(), report.recorded, outcome=outcome, seconds=report.seconds)


def _failed(scope: ResourceScope, host: str, pid: int, worker: str, outcome: str, exc: BaseException, seconds: float, recorded: bool) -> None:
    if scope.flow_run is not None and getattr(scope, "cleanup_fails_flow", True):
        scope.flow_run.add_cleanup_error(exc)
    logger.error("Cleanup of resource %r on worker %s (pid %d) failed: %s: %s", scope.name, worker, pid, type(exc).__name__, exc)
    _emit(scope, "cleanup-failed", host, pid, worker, get_clock().time(), recorded, error=f"{type(exc).__name__}: {exc}", outcome=outcome, seconds=seconds)


def _emit(scope: ResourceScope, step: str, host: str, pid: int, worker: str, timestamp: float, recorded: bool, **details: Any) -> None:
    """Emit a step of a worker's copy; ``recorded``: the worker wrote it to the store already."""
    stream = events()
    if not stream.active:
        return
    extra: dict[str, Any] = {"worker": worker, **details}
    target = ledger_target(scope) if recorded else None
    if target is not None:
        extra["stored_in"] = target.url
    stream.emit(
        ResourceEvent(
            step=step,
            scope_id=scope.id,
            name=str(scope.name),
            flow_run_id=scope.flow_run.run_id if scope.flow_run is not None else None,
            timestamp=timestamp,
            error=extra.pop("error", None),
            outcome=extra.pop("outcome", None),
            worker=host,
            pid=pid,
            handle=extra.pop("handle", None),
            reaper=_reaper_name(scope),
            details=extra,
        )
    )


def _reaper_name(scope: ResourceScope) -> str | None:
    reaper = scope.resource.reaper
    return f"{getattr(reaper, '__module__', '?')}:{getattr(reaper, '__qualname__', repr(reaper))}" if reaper else None
