"""`ProcessPoolRunner`: task bodies in a pool of worker processes on this machine.

Each worker is a fresh Python interpreter (spawned with `subprocess`, so the flow's
``__main__`` is not re-imported), talking to the flow process over a socket pair.
Functions and arguments travel with cloudpickle, so tasks defined in ``__main__``
or as closures work. Each worker runs one task at a time; the pool hands a task to
an idle worker and queues the rest, so it always knows which worker runs which
call: that is what lets it close a resource copy on the exact process that holds
it, interrupt a call where it runs, and fail exactly the calls of a worker that died
(a replacement is started).

A worker runs in a session of its own and survives Ctrl-C and SIGTERM (see
`_interrupt.survive_stop_signals`): a signal to the flow's whole process group or
service reaches the flow process, which cancels the run and has each worker clean up
its copies with that outcome before it stops the pool. If the flow process
disappears, a worker closes the copies it holds and exits.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection, wait
from typing import Any

import cloudpickle

from tether._errors import TaskRunTimeout
from tether._interrupt import landing, raise_in_thread, survive_stop_signals
from tether.runners._wire import Call, WorkerLost, dump_error, load_error
from tether.runners._worker import Interrupter, WorkerRuntime, install
from tether.runners._checks import check_count
from tether.runners._base import RemoteRunner

_CHILD = "from tether.runners._process import child_main; child_main()"


class ProcessPoolRunner(RemoteRunner):
    """Runs task bodies in worker processes on this machine (one task at a time each).

    ``max_workers`` defaults to the number of CPUs.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        check_count("ProcessPoolRunner", "max_workers", max_workers, "worker processes to start", "one per CPU")
        self.max_workers = max_workers or os.cpu_count() or 1
        self._pool: _ProcessPool | None = None

    def start(self) -> None:
        self._pool = _ProcessPool(self.max_workers)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _started(self) -> _ProcessPool:
        if self._pool is None:
            raise RuntimeError(
                "ProcessPoolRunner was used before it was started; use it as a context manager or let a flow start it."
            )
        return self._pool

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        return self._started().submit(cloudpickle.dumps((fn, args, kwargs)))

    def submit_to(self, worker: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._started().submit_to(worker, cloudpickle.dumps((fn, args, {})))

    def interrupt(self, future: Future[Any], call_id: str, exc_type: type[BaseException]) -> None:
        self._started().interrupt(future, call_id, exc_type)

    def abandon(self, future: Future[Any]) -> None:
        self._started().terminate_worker_of(future)

    def worker_names(self) -> list[str]:
        return [f"process-{pid}" for pid in self._started().pids()]

    @property
    def worker_pids(self) -> list[int]:
        """The process ids of the live workers (for tests and diagnostics)."""
        return self._started().pids()

    def duplicate(self) -> ProcessPoolRunner:
        return ProcessPoolRunner(self.max_workers)

    def __repr__(self) -> str:
        return f"ProcessPoolRunner(max_workers={self.max_workers})"


class _Request:
    __slots__ = ("blob", "future", "id", "worker")

    def __init__(self, id: int, blob: bytes, future: Future[Any]) -> None:
        self.id = id
        self.blob = blob
        self.future = future
        self.worker: _WorkerProcess | None = None


class _WorkerProcess:
    def __init__(self) -> None:
        parent_end, child_end = socket.socketpair()
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                start_new_session=True,  # a terminal's signals to the flow's group do not reach it
            )
        finally:
            child_end.close()
        self.pid = self.popen.pid
        self.name = f"process-{self.pid}"
        self.conn = Connection(parent_end.detach())
        self.send_lock = threading.Lock()
        self.call: _Request | None = None
        self.controls: dict[int, _Request] = {}
        self.answered = False  # it answered for a stuck call: it takes no more, and was replaced
        self.send(("init", list(sys.path)))

    def send(self, message: Any) -> None:
        with self.send_lock:
            self.conn.send(message)


class _ProcessPool:
    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._workers: dict[str, _WorkerProcess] = {}
        self._idle: deque[_WorkerProcess] = deque()
        self._waiting: deque[_Request] = deque()
        self._requests: dict[int, _Request] = {}
        self._by_future: dict[Future[Any], _Request] = {}
        self._closing = False
        self._wake_r, self._wake_w = socket.socketpair()
        for _ in range(size):
            self._add_worker()
        self._thread = threading.Thread(target=self._collect, name="tether-process-pool", daemon=True)
        self._thread.start()

    def _add_worker(self) -> None:
        worker = _WorkerProcess()
        with self._lock:
            closing = self._closing
            if not closing:
                self._workers[worker.name] = worker
        if closing:  # `close` has taken its list of workers: this one would be missed
            worker.popen.kill()
            worker.popen.wait()
            worker.conn.close()
            return
        self._wake_w.send(b"w")
        self._worker_free(worker)

    # -- the flow's side ---------------------------------------------------------------

    def submit(self, blob: bytes) -> Future[Any]:
        future: Future[Any] = Future()
        request = _Request(next(self._ids), blob, future)
        with self._lock:
            if self._closing:
                raise RuntimeError("ProcessPoolRunner.submit() was called after the runner stopped.")
            self._by_future[future] = request
            worker = self._idle.popleft() if self._idle else None
            if worker is None:
                self._waiting.append(request)
                return future
            self._assign(worker, request)
        self._send_call(worker, request)
        return future

    def submit_to(self, name: str, blob: bytes) -> Future[Any]:
        future: Future[Any] = Future()
        request = _Request(next(self._ids), blob, future)
        with self._lock:
            worker = self._workers.get(name)
            if worker is not None:
                request.worker = worker
                worker.controls[request.id] = request
                self._requests[request.id] = request
        if worker is None:
            future.set_exception(WorkerLost(f"worker {name} is no longer running"))
            return future
        try:
            worker.send(("control", request.id, blob))
        except OSError:
            pass  # it died; the collector fails the request
        return future

    def interrupt(self, future: Future[Any], call_id: str, exc_type: type[BaseException]) -> None:
        with self._lock:
            request = self._by_future.get(future)
            if request is None:
                return
            if request.worker is None:  # still waiting for a worker: it never starts
                self._waiting.remove(request)
                del self._by_future[future]
                future.cancel()
                return
            worker = request.worker
        try:
            worker.send(("interrupt", call_id, exc_type))
        except OSError:
            pass

    def terminate_worker_of(self, future: Future[Any]) -> None:
        with self._lock:
            request = self._by_future.get(future)
            worker = request.worker if request is not None else None
        if worker is not None:
            worker.popen.kill()  # the collector sees it go, fails its calls and starts another

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._workers.values()]

    def close(self) -> None:
        with self._lock:
            self._closing = True
            workers = list(self._workers.values())
            waiting, self._waiting = self._waiting, deque()
        for request in waiting:
            request.future.cancel()
        for worker in workers:
            try:
                worker.send(("stop",))
            except OSError:
                pass
        for worker in workers:
            try:
                worker.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.popen.kill()
                worker.popen.wait()
        self._wake_w.send(b"x")
        self._thread.join()
        self._wake_r.close()
        self._wake_w.close()

    # -- the collector thread ------------------------------------------------------------

    def _assign(self, worker: _WorkerProcess, request: _Request) -> None:
        """Under the lock: ``worker`` runs ``request`` next."""
        request.worker = worker
        worker.call = request
        self._requests[request.id] = request

    def _send_call(self, worker: _WorkerProcess, request: _Request) -> None:
        request.future.set_running_or_notify_cancel()
        try:
            worker.send(("call", request.id, request.blob))
        except OSError:
            pass  # it died; the collector fails the request
        request.blob = b""

    def _worker_free(self, worker: _WorkerProcess) -> None:
        """``worker`` can take a call: give it the next one waiting, or mark it idle."""
        with self._lock:
            worker.call = None
            request = None
            while self._waiting:
                candidate = self._waiting.popleft()
                if not candidate.future.cancelled():
                    request = candidate
                    break
                self._by_future.pop(candidate.future, None)
            if request is None:
                if worker.name in self._workers:
                    self._idle.append(worker)
                return
            self._assign(worker, request)
        self._send_call(worker, request)

    def _collect(self) -> None:
        while True:
            with self._lock:
                by_conn = {w.conn: w for w in self._workers.values()}
                if self._closing and not by_conn:
                    return
            for ready in wait([*by_conn, self._wake_r]):
                if ready is self._wake_r:
                    self._wake_r.recv(4096)
                    continue
                worker = by_conn[ready]  # type: ignore[index]
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    self._lost(worker)
                    continue
                self._handle(worker, message)

    def _handle(self, worker: _WorkerProcess, message: Any) -> None:
        kind, request_id, ok, blob = message
        with self._lock:
            request = self._requests.pop(request_id, None)
            if request is None:
                return
            self._by_future.pop(request.future, None)
            worker.controls.pop(request_id, None)
            # "last": the worker answers for a call stuck past its timeout; it is given nothing
            # more, serves the closing of its copies, then exits. It is replaced now.
            was_call = worker.call is request and kind == "done"
            replace = kind == "last" and not worker.answered and not self._closing
            worker.answered = worker.answered or kind == "last"
        if ok:
            request.future.set_result(cloudpickle.loads(blob))
        else:
            request.future.set_exception(load_error(blob, f"on worker process {worker.pid}"))
        if was_call:
            self._worker_free(worker)
        if replace:
            self._add_worker()

    def _lost(self, worker: _WorkerProcess) -> None:
        with self._lock:
            self._workers.pop(worker.name, None)
            if worker in self._idle:
                self._idle.remove(worker)
            lost = [r for r in [worker.call, *worker.controls.values()] if r is not None]
            for request in lost:
                self._requests.pop(request.id, None)
                self._by_future.pop(request.future, None)
            closing = self._closing
        worker.conn.close()
        code = worker.popen.wait()
        for request in lost:
            if not request.future.done():
                request.future.set_exception(WorkerLost(f"worker process {worker.pid} died (exit status {code})"))
        if not closing and not worker.answered:  # one that answered was replaced already
            self._add_worker()


# -- the worker process ------------------------------------------------------------------


def child_main() -> None:
    """The worker process: runs calls one at a time, control requests beside them."""
    survive_stop_signals()
    conn = Connection(int(sys.argv[1]))
    _, path = conn.recv()
    sys.path[:] = path
    send_lock = threading.Lock()
    calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
    answered = threading.Event()  # set once it answered for a stuck call
    serving = [-1]

    serving_controls = [0]  # control calls (closing a copy, ...) still running or not yet answered
    controls_lock = threading.Lock()

    def serve(message: Any) -> None:
        _, request_id, blob = message
        with controls_lock:
            serving_controls[0] += 1
        try:
            try:
                fn, args, kwargs = cloudpickle.loads(blob)
                reply = (True, cloudpickle.dumps(fn(*args, **kwargs)))
            except BaseException as exc:  # noqa: BLE001 - sent back to the flow process
                reply = (False, dump_error(exc))
            with send_lock:
                conn.send(("done", request_id, *reply))
        finally:
            with controls_lock:
                serving_controls[0] -= 1
        exit_once_closed()

    def exit_once_closed() -> None:
        """A worker that answered for a stuck call exits once the flow process closed its copies
        and every control call it sent has its answer (one may be writing a cleanup's ledger row)."""
        with controls_lock:
            if answered.is_set() and not runtime.holds_copies() and serving_controls[0] == 0:
                os._exit(1)

    def exit_stuck(runtime: WorkerRuntime, call: Call) -> None:
        """The body of ``call`` did not stop after its timeout: answer for it, take no more
        calls, and exit once the flow process has closed the copies held here (each with
        its scope's outcome; the body may still hold one, as on a thread runner)."""
        error = TaskRunTimeout(
            f"Task run {call.task_run_name!r} exceeded its timeout of {call.timeout:g} s. It did not stop "
            f"within {call.grace:g} s, so it was abandoned: its worker process {os.getpid()} takes no more "
            "calls and exits once its resource copies are cleaned up."
        )
        result = runtime.stuck_result(call, error)
        answered.set()
        with send_lock:
            conn.send(("last", serving[0], True, cloudpickle.dumps(result)))
        exit_once_closed()

    runtime = WorkerRuntime(f"process-{os.getpid()}", interrupter=_interrupt_by_signal(), on_stuck=exit_stuck)
    install(runtime)

    def read() -> None:
        try:
            while True:
                message = conn.recv()
                kind = message[0]
                if kind == "call":
                    calls.put(message)
                elif kind == "control":
                    threading.Thread(target=serve, args=(message,), name="tether-control", daemon=True).start()
                elif kind == "interrupt":
                    runtime.interrupt(message[1], message[2])
                elif kind == "stop":
                    if answered.is_set():  # the main thread is stuck in a body: it cannot stop the loop
                        runtime.close_all_copies("the runner stopped while this worker still held the copy")
                        os._exit(1)
                    calls.put(None)
                    return
        except (EOFError, OSError):
            runtime.close_all_copies("the flow process that used this worker is gone")
            os._exit(1)

    threading.Thread(target=read, name="tether-reader", daemon=True).start()
    while True:
        message = calls.get()
        if message is None:
            break
        serving[0] = message[1]
        serve(message)
    runtime.close_all_copies("the runner stopped while this worker still held the copy")
    conn.close()


def _interrupt_by_signal() -> Interrupter:
    """Interrupt calls in this process's main thread with SIGUSR1, not an async exception.

    An async exception lands only when the thread runs Python code again; a signal
    also ends a ``time.sleep`` or a blocking read, so a timed-out task stops at once.
    Call it on the main thread (it installs the signal's handler there).
    """
    main = threading.get_ident()
    target: list[tuple[WorkerRuntime, str, type[BaseException]]] = []

    def interrupter(runtime: WorkerRuntime, ident: int, exc_type: type[BaseException], call_id: str) -> bool:
        if ident != main:
            return raise_in_thread(ident, exc_type)
        target[:] = [(runtime, call_id, exc_type)]
        signal.pthread_kill(main, signal.SIGUSR1)
        return True

    def on_signal(signum: int, frame: Any) -> None:
        # No lock here: the main thread may hold one when the signal arrives.
        if target and target[0][0].is_running(target[0][1]):
            _, _, exc_type = target.pop()
            raise landing(exc_type)()

    signal.signal(signal.SIGUSR1, on_signal)
    return interrupter
