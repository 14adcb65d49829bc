"""`DaskRunner`: task bodies on a Dask cluster (a `distributed.LocalCluster` by default).

Dask is imported when the runner starts, not before. Without an address the runner
starts a `LocalCluster` of worker processes on 127.0.0.1 (no dashboard) and closes
it when the flow run ends; with one it connects to that scheduler and leaves it
running.

Results come back in batches: a done callback queues each finished Dask future
and one thread gathers whatever is ready in a single `Client.gather`. Control calls
(closing a worker's resource copy, interrupting calls) go out of band with
`Client.run`, so they need no free worker thread and fail at once if the worker is
gone. A call is cancelled at the scheduler only if no worker has it: the result of a
call that ran carries the resource copies it opened, and must not be dropped.

Worker death: the local cluster's scheduler is started with
``distributed.scheduler.allowed-failures = 0``, so a task whose worker dies fails with
`KilledWorker` instead of being re-run by Dask behind the engine's back; the engine
then retries it (counting against ``retries``) or ends it ``Crashed``. Give an
external scheduler the same setting to get the same behaviour.

Stop signals: the local cluster's worker processes survive Ctrl-C and SIGTERM sent to
the flow's whole process group or service (a preload, `dask_setup`, runs
`survive_stop_signals` in each before it joins the scheduler); the flow process
decides, and has them clean up their copies before it closes the cluster. A worker
still exits when the flow process is gone (Dask's nanny pipe).

A task body that does not stop within the grace period after its timeout (blocked
in ``time.sleep`` or in C, where a thread cannot be interrupted) is answered for by
its worker (`WorkerRuntime.stuck_result`, sent as a Dask event): its run ends ``TimedOut``
at once and its copies are cleaned up, while the thread runs on until the body returns.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import cloudpickle

from tether._errors import TaskRunTimeout
from tether._interrupt import survive_stop_signals
from tether.runners._wire import Call, WorkerLost
from tether.runners._worker import WorkerRuntime, current, run_call
from tether.runners._checks import check_address, check_options
from tether.runners._base import RemoteRunner

_INSTALL = 'DaskRunner needs Dask\'s distributed scheduler, which is not installed. Install it from the tether checkout with: pip install -e ".[dask]"'


def _import_distributed() -> Any:
    try:
        import dask
        import distributed
    except ImportError as exc:
        raise ImportError(f"{_INSTALL} ({exc})") from exc
    return dask, distributed


#: A local scheduler without a dashboard, its small HTTP server (health, metrics) on a free
#: loopback port rather than 8787, which another cluster may hold.
QUIET_SCHEDULER = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}

#: The Dask event topic on which a worker answers for a call stuck past its timeout.
_STUCK_TOPIC = "tether-stuck-call"


class DaskRunner(RemoteRunner):
    """Runs task bodies on a Dask cluster.

    ``address``: a scheduler to connect to; None starts a `distributed.LocalCluster`
    (``cluster_kwargs`` are passed to it, over tether's defaults ``host="127.0.0.1"``,
    ``dashboard_address=None``, ``processes=True``) that is closed when the flow ends.
    """

    def __init__(self, address: str | None = None, cluster_kwargs: dict[str, Any] | None = None, client_kwargs: dict[str, Any] | None = None) -> None:
        self.address = check_address("DaskRunner", address, "the Dask scheduler to connect to")
        self.cluster_kwargs = check_options("DaskRunner", "cluster_kwargs", cluster_kwargs, "distributed.LocalCluster")
        self.client_kwargs = check_options("DaskRunner", "client_kwargs", client_kwargs, "distributed.Client")
        self._cluster: Any = None
        self._client: Any = None
        self._finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._interrupts: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._control: ThreadPoolExecutor | None = None
        self._timed_calls: dict[str, Future[Any]] = {}  # call id -> future, for calls with a timeout

    @property
    def client(self) -> Any:
        """The `distributed.Client` of the running flow (None before start and after stop)."""
        return self._client

    def start(self) -> None:
        dask, distributed = _import_distributed()
        if self.address is None:
            options = {"host": "127.0.0.1", "dashboard_address": None, "processes": True, "scheduler_kwargs": QUIET_SCHEDULER, **self.cluster_kwargs}
            if options["processes"]:
                preload = options.get("preload") or []
                options["preload"] = [*([preload] if isinstance(preload, str) else preload), __name__]
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                self._cluster = distributed.LocalCluster(**options)
            target: Any = self._cluster
        else:
            target = self.address
        self._client = distributed.Client(target, set_as_default=False, **self.client_kwargs)
        self._control = ThreadPoolExecutor(4, thread_name_prefix="tether-dask-control")
        self._client.subscribe_topic(_STUCK_TOPIC, self._on_stuck_call)
        self._threads = [
            threading.Thread(target=self._collect, name="tether-dask-results", daemon=True),
            threading.Thread(target=self._send_interrupts, name="tether-dask-interrupts", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._finished.put(None)
        self._interrupts.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []
        if self._control is not None:
            self._control.shutdown(wait=True)
            self._control = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def _started(self) -> Any:
        if self._client is None:
            raise RuntimeError("DaskRunner was used before it was started; use it as a context manager or let a flow start it.")
        return self._client

    # -- calls ------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        remote = self._started().submit(_on_dask_worker, fn, args, kwargs, pure=False)
        future.dask_future = remote  # type: ignore[attr-defined]
        call = args[0] if fn is run_call and args and isinstance(args[0], Call) else None
        if call is not None and call.timeout is not None:
            call_id = call.call_id
            self._timed_calls[call_id] = future
            future.add_done_callback(lambda _: self._timed_calls.pop(call_id, None))
        remote.add_done_callback(lambda done: self._finished.put((done, future)))
        return future

    def _on_stuck_call(self, event: tuple[float, Any]) -> None:
        """A worker answered for a call of ours that did not stop after its timeout (on the
        client's event loop: the engine's callbacks run on a control thread)."""
        message = event[1]
        future = self._timed_calls.get(message["call_id"]) if isinstance(message, dict) else None
        control = self._control
        if future is None or control is None:
            return
        try:
            control.submit(_settle, future, cloudpickle.loads(message["result"]), None)
        except RuntimeError:  # the runner is stopping: the call's own result settles it, if it comes
            pass

    def _collect(self) -> None:
        """Gather finished calls in batches; one round trip for whatever is ready."""
        while True:
            item = self._finished.get()
            if item is None:
                return
            batch = [item]
            while True:
                try:
                    item = self._finished.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._finished.put(None)
                    break
                batch.append(item)
            self._resolve(batch)

    def _resolve(self, batch: list[tuple[Any, Future[Any]]]) -> None:
        client = self._client
        finished = [(remote, future) for remote, future in batch if remote.status == "finished"]
        if finished:
            try:
                values = client.gather([remote for remote, _ in finished])
            except Exception:  # noqa: BLE001 - settle them one by one below
                values = None
            if values is not None:
                for (_, future), value in zip(finished, values):
                    _settle(future, value, None)
                batch = [item for item in batch if item[0].status != "finished"]
        for remote, future in batch:
            if remote.status == "cancelled":
                future.cancel()
                continue
            try:
                _settle(future, remote.result(), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the engine
                _settle(future, None, _translate(exc))

    def submit_to(self, worker: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        client = self._started()
        assert self._control is not None
        return self._control.submit(self._run_on, client, worker, fn, args)

    @staticmethod
    def _run_on(client: Any, worker: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        if worker not in client.scheduler_info()["workers"]:
            raise WorkerLost(f"Dask worker {worker} has left the cluster")
        try:
            return client.run(_in_worker_thread, fn, args, workers=[worker])[worker]
        except (OSError, KeyError) as exc:
            if worker not in client.scheduler_info()["workers"]:
                raise WorkerLost(f"Dask worker {worker} has left the cluster ({exc!r})") from exc
            raise

    def worker_names(self) -> list[str]:
        return list(self._started().scheduler_info()["workers"])

    # -- interrupts ---------------------------------------------------------------------

    def interrupt(self, future: Future[Any], call_id: str, exc_type: type[BaseException]) -> None:
        self._interrupts.put((future.dask_future, call_id, exc_type))  # type: ignore[attr-defined]

    def _send_interrupts(self) -> None:
        """Cancel calls that wait and interrupt those that run, in batches."""
        while True:
            item = self._interrupts.get()
            if item is None:
                return
            batch = [item]
            while True:
                try:
                    item = self._interrupts.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._interrupts.put(None)
                    break
                batch.append(item)
            try:
                found = self._client.run(_interrupt_on_dask_worker, [(call_id, exc_type) for _, call_id, exc_type in batch], on_error="return")
                here = {call_id for ids in found.values() if isinstance(ids, list) for call_id in ids}
                # A call found on a worker returns its result (with the resource copies it
                # opened); one found nowhere has not started, and is cancelled. If it starts
                # meanwhile, it raises before opening anything (see `WorkerRuntime.interrupt`).
                waiting = [remote for remote, call_id, _ in batch if call_id not in here]
                if waiting:
                    self._client.cancel(waiting)
            except Exception:  # noqa: BLE001, S110 - the engine's grace period ends those runs anyway
                pass

    def duplicate(self) -> DaskRunner:
        return DaskRunner(self.address, self.cluster_kwargs, self.client_kwargs)

    def __repr__(self) -> str:
        where = repr(self.address) if self.address else "LocalCluster"
        return f"DaskRunner({where})"


def _settle(future: Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


def _translate(exc: BaseException) -> BaseException:
    if type(exc).__name__ == "KilledWorker":
        worker = getattr(getattr(exc, "last_worker", None), "address", "?")
        return WorkerLost(f"Dask worker {worker} died while running it")
    return exc


def _runtime_of(dask_worker: Callable[[], Any]) -> WorkerRuntime:
    """This process's runtime, made on the first call that reaches it: named after its Dask
    worker (a worker learns its address only once it has started), answering for stuck calls
    through that worker's events. (Workers of a cluster without processes share one.)"""

    def make() -> WorkerRuntime:
        worker = dask_worker()
        return WorkerRuntime(worker.address, on_stuck=functools.partial(_answer_for_stuck_call, worker))

    return current(make)


def _task_thread_worker() -> Any:
    _, distributed = _import_distributed()
    return distributed.get_worker()  # in a task thread; `Client.run` functions are given theirs


def _on_dask_worker(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Runs on the Dask worker (in a task thread): make sure of the runtime, then run ``fn``."""
    _runtime_of(_task_thread_worker)
    return fn(*args, **kwargs)


def _answer_for_stuck_call(dask_worker: Any, runtime: WorkerRuntime, call: Call) -> None:
    """On the worker: ``call``'s body did not stop within the grace period after its timeout.
    A thread cannot be ended, so the worker answers for the call (its run ends, its copies
    are cleaned up) and the thread runs on until the body returns."""
    error = TaskRunTimeout(
        f"Task run {call.task_run_name!r} exceeded its timeout of {call.timeout:g} s and did not stop within "
        f"{call.grace:g} s (it was blocked where a thread cannot be interrupted, such as time.sleep or a C "
        f"call), so it was abandoned; its thread on Dask worker {runtime.name} runs on until the body returns."
    )
    result = runtime.stuck_result(call, error)
    dask_worker.log_event(_STUCK_TOPIC, {"call_id": call.call_id, "result": cloudpickle.dumps(result)})


def dask_setup(worker: Any) -> None:
    """Dask's preload hook, in each worker process of a local cluster the runner starts,
    before the worker joins the scheduler: it survives the flow's stop signals."""
    if threading.current_thread() is threading.main_thread():
        survive_stop_signals()


async def _in_worker_thread(fn: Callable[..., Any], args: tuple[Any, ...], dask_worker: Any) -> Any:
    """Runs on the worker's event loop (`Client.run`, which passes ``dask_worker``): ``fn``
    goes to a thread, not to the loop."""
    _runtime_of(lambda: dask_worker)
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


def _interrupt_on_dask_worker(requests: list[tuple[str, type[BaseException]]], dask_worker: Any) -> list[str]:
    """Runs on the worker's event loop (`Client.run`): `WorkerRuntime.interrupt_many` there (a
    call not started yet is remembered by the runtime its first call will find)."""
    return _runtime_of(lambda: dask_worker).interrupt_many(requests)
