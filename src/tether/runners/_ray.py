"""`RayRunner`: task bodies on Ray, in a pool of Ray actors.

Ray is imported when the runner starts, not before. If Ray is not initialised yet and
no address is given (``address=`` or RAY_ADDRESS), the runner starts a local Ray of its
own on 127.0.0.1, with no dashboard and no usage stats: ``ray start --head`` in a session
of its own, which a signal to the flow's process group does not reach and which ends with
the flow process, even a SIGKILLed one (`_ray_head`); ``init_kwargs`` shape it. It shuts
that Ray down when the flow ends. With an address it calls ``ray.init`` (with
``init_kwargs``) and shuts down only its connection; a Ray already initialised it uses
and leaves alone.

Ray tasks run on whichever worker process Ray picks, which cannot be named again
later; but a resource copy has to be closed on the very process that opened it. So
the workers are actors, one per CPU by default (``workers=``), each running one task
at a time, plus a "control" concurrency group for closing copies and interrupting
calls beside the running task. Each task goes to the actor with the fewest calls
in flight. An actor that dies fails its calls with `WorkerLost` and is replaced.

Starting an actor starts a Python process (seconds on a small machine), so on a Ray
the runner did not start itself, a stopped runner leaves its actors idle for the next
flow run on the same Ray (they hold no copies by then). The actors reserve no CPU
(``num_cpus=0``): the runner, not Ray, decides how many task bodies run at once, and
idle actors do not keep other Ray work from running.

A task body that does not stop within the grace period after its timeout (blocked in
``time.sleep`` or in C: an actor runs it on a thread, which cannot be interrupted there)
is answered for by its actor (`WorkerRuntime.stuck_result`): the runner keeps one call
waiting on each actor, in a concurrency group of its own, that returns such answers
for this runner's calls; the run ends ``TimedOut`` at once and its copies are cleaned
up, while the thread runs on until the body returns.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from tether._errors import TaskRunTimeout
from tether.runners import _ray_head
from tether.runners._base import RemoteRunner
from tether.runners._checks import check_address, check_count, check_options
from tether.runners._wire import Call, CallResult, WorkerLost
from tether.runners._worker import WorkerRuntime, install, run_call

_INSTALL = 'RayRunner needs Ray, which is not installed. Install it from the tether checkout with: pip install -e ".[ray]"'


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"{_INSTALL} ({exc})") from exc
    return ray


def _use_token_if_any(ray: Any) -> None:
    """Connect with the token the head made (see _ray_head), as ray.init does for a local
    cluster it finds by itself; a Ray without token authentication has nothing to do."""
    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


class RayRunner(RemoteRunner):
    """Runs task bodies on Ray actors (one per CPU of the Ray cluster unless ``workers`` says).

    ``address`` and ``init_kwargs`` go to ``ray.init`` when Ray is not initialised yet; for a
    local Ray of the runner's own, ``init_kwargs`` that shape the cluster become
    ``ray start`` flags instead (see `_ray_head.ray_start_arguments`).
    """

    def __init__(self, address: str | None = None, init_kwargs: dict[str, Any] | None = None, workers: int | None = None) -> None:
        check_count("RayRunner", "workers", workers, "Ray actors that run task bodies", "one per CPU of the Ray cluster")
        self.address = check_address("RayRunner", address, "the Ray cluster to connect to (ray.init's address)")
        self.init_kwargs = check_options("RayRunner", "init_kwargs", init_kwargs, "ray.init")
        self.workers = workers
        self._ray: Any = None
        self._initialised_here = False
        self._head: _ray_head.RayHead | None = None  # the cluster we started, if we did
        self._actor_class: Any = None
        self._lock = threading.Lock()
        self._actors: dict[str, _Actor] = {}
        #: Threads starting an actor in place of a lost one: joined before Ray is shut down (a
        #: call into Ray after its shutdown ends the whole process). `_stopping` tells them to
        #: give up: an actor may never start on a cluster that is going away (its raylet got
        #: the same SIGTERM as the flow process), and stop must not wait for it.
        self._replacing: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._turns = itertools.count()
        self._session = ""
        self._owner = uuid.uuid4().hex  # the stuck answers an actor gives this runner are for its calls
        self._timed_calls: dict[str, Future[Any]] = {}  # call id -> future, for calls with a timeout

    def start(self) -> None:
        self._stopping.clear()
        own_cluster = self._starts_own_cluster()
        if own_cluster:
            # A local Ray of our own stays on this machine: without this, Ray swaps
            # _node_ip_address="127.0.0.1" for the network interface's address (read at import).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            if not _ray_head.supported():
                own_cluster = False  # no way to end a head with this process: ray.init starts Ray
            else:
                flags, connect = _ray_head.ray_start_arguments(self.init_kwargs)
                self._head = _ray_head.RayHead(flags)
                self._head.start()  # before importing Ray here: the two imports overlap
        ray = self._ray = _import_ray()
        if own_cluster:
            assert self._head is not None
            try:
                self._head.wait_started()
                _use_token_if_any(ray)
                ray.init(address=self._head.address, **{"logging_level": "WARNING", **connect})
            except BaseException:
                self._head.stop()
                self._head = None
                raise
            self._initialised_here = True
        elif not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
            if self.address is None:
                options["_node_ip_address"] = "127.0.0.1"
            ray.init(address=self.address, **{**options, **self.init_kwargs})
            self._initialised_here = True
        count = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._actor_class = ray.remote(num_cpus=0, max_restarts=0, concurrency_groups={"control": 4, "stuck": 1})(_RayWorker)
        session = ray.get_runtime_context().get_job_id()
        with _idle_lock:
            reused = _idle.pop(session, [])[:count] if not self._initialised_here else []
            _idle.clear()  # actors of an earlier Ray session are gone with it
        handles = reused + [self._actor_class.remote(list(sys.path)) for _ in range(count - len(reused))]
        names = ray.get([handle.name.options(concurrency_group="control").remote() for handle in handles])
        with self._lock:
            for name, handle in zip(names, handles):
                self._actors[name] = _Actor(name, handle)
            actors = list(self._actors.values())
        self._session = session
        for actor in actors:
            self._wait_for_stuck_calls(actor)

    def _starts_own_cluster(self) -> bool:
        """True if ``ray.init`` would start a new local Ray: no address here or in RAY_ADDRESS,
        and no Ray initialised in this process."""
        if self.address is not None or os.environ.get("RAY_ADDRESS"):
            return False
        ray = sys.modules.get("ray")
        return ray is None or not ray.is_initialized()

    def stop(self) -> None:
        ray = self._ray
        self._stopping.set()
        for thread in list(self._replacing):
            thread.join()  # each gives up within _REPLACE_POLL_SECONDS
        self._replacing.clear()
        with self._lock:
            actors, self._actors = list(self._actors.values()), {}
        if self._initialised_here:
            # Disconnecting, then stopping the head, ends the cluster we started and the actors on
            # it (a Ray that ray.init started ends with the disconnection). No ray.kill first: on a
            # cluster that is going away each would wait for a dead GCS for up to a minute.
            try:
                ray.shutdown()
            finally:
                self._initialised_here = False
                if self._head is not None:
                    self._head.stop()  # every Ray process ends with it (see _ray_head)
                    self._head = None
            return
        with _idle_lock:  # kept for the next flow run on this Ray (see the module's docstring)
            _idle.setdefault(self._session, []).extend(actor.handle for actor in actors)

    def _replace(self, lost: _Actor) -> None:
        with self._lock:
            if self._actors.pop(lost.name, None) is None:
                return
        handle = self._actor_class.remote(list(sys.path))
        named = handle.name.options(concurrency_group="control").remote()
        while True:
            try:
                name = self._ray.get(named, timeout=_REPLACE_POLL_SECONDS)
                break
            except self._ray.exceptions.GetTimeoutError:
                if self._stopping.is_set():
                    return  # dropping the last handle ends the actor (a call to a dead cluster would hang)
        actor = _Actor(name, handle)
        with self._lock:
            if self._stopping.is_set():
                return  # as above: no one will use it
            self._actors[name] = actor
        self._wait_for_stuck_calls(actor)

    def _wait_for_stuck_calls(self, actor: _Actor) -> None:
        """Keep a call waiting on ``actor`` for its answers for calls of ours stuck past their timeout."""
        ref = actor.handle.stuck_calls.options(concurrency_group="stuck").remote(self._owner, _STUCK_POLL_SECONDS)
        ref.future().add_done_callback(lambda done: self._stuck_calls_answered(actor, done))

    def _stuck_calls_answered(self, actor: _Actor, done: Future[Any]) -> None:
        try:
            answers: list[tuple[str, CallResult]] = done.result()
        except BaseException:  # noqa: BLE001 - the actor is gone (killed, or Ray shut down): nothing to wait for
            return
        for call_id, result in answers:
            future = self._timed_calls.get(call_id)
            if future is not None:
                _set_result(future, result)
        with self._lock:
            ours = self._actors.get(actor.name) is actor
        if ours:
            self._wait_for_stuck_calls(actor)

    # -- calls ------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if not self._actors:
                raise RuntimeError("RayRunner was used before it was started, or after it stopped.")
            actors = list(self._actors.values())
            turn = next(self._turns) % len(actors)  # ties go round the actors, not to the first
            actor = min(actors[turn:] + actors[:turn], key=lambda a: a.in_flight)
            actor.in_flight += 1
        ref = actor.handle.run.remote(fn, args, kwargs, self._owner)
        future: Future[Any] = Future()
        call = args[0] if fn is run_call and args and isinstance(args[0], Call) else None
        if call is not None and call.timeout is not None:
            call_id = call.call_id
            self._timed_calls[call_id] = future
            future.add_done_callback(lambda _: self._timed_calls.pop(call_id, None))
        future.ray_ref = ref  # type: ignore[attr-defined]
        future.ray_actor = actor  # type: ignore[attr-defined]
        ref.future().add_done_callback(lambda done: self._settle(actor, future, done, counted=True))
        return future

    def submit_to(self, worker: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            actor = self._actors.get(worker)
        if actor is None:
            future.set_exception(WorkerLost(f"Ray actor {worker} is no longer running"))
            return future
        ref = actor.handle.control.options(concurrency_group="control").remote(fn, args)
        ref.future().add_done_callback(lambda done: self._settle(actor, future, done, counted=False))
        return future

    def _settle(self, actor: _Actor, future: Future[Any], done: Future[Any], counted: bool) -> None:
        if counted:
            with self._lock:
                actor.in_flight -= 1
        ray = self._ray
        try:
            value = done.result()
        except ray.exceptions.TaskCancelledError:
            future.cancel()
            return
        except ray.exceptions.RayActorError as exc:
            _set_exception(future, WorkerLost(f"Ray actor {actor.name} died: {exc}"))
            replacing = threading.Thread(target=self._replace, args=(actor,), name="tether-ray-replace", daemon=True)
            self._replacing.append(replacing)
            replacing.start()
            return
        except ray.exceptions.RayTaskError as exc:
            _set_exception(future, exc.as_instanceof_cause())
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the engine
            _set_exception(future, exc)
            return
        _set_result(future, value)  # unless its actor answered for it already (stuck past its timeout)

    def worker_names(self) -> list[str]:
        with self._lock:
            return list(self._actors)

    def interrupt(self, future: Future[Any], call_id: str, exc_type: type[BaseException]) -> None:
        # Not ray.cancel: a cancelled call's result is dropped, with the resource copies it
        # reports. A call still queued on the actor raises as soon as it starts instead.
        actor: _Actor = future.ray_actor  # type: ignore[attr-defined]
        actor.handle.interrupt.options(concurrency_group="control").remote(call_id, exc_type)

    def duplicate(self) -> RayRunner:
        return RayRunner(self.address, self.init_kwargs, self.workers)

    def __repr__(self) -> str:
        return f"RayRunner({self.address!r})" if self.address else "RayRunner()"


def _set_result(future: Future[Any], value: Any) -> None:
    try:
        future.set_result(value)
    except InvalidStateError:  # settled already: the call's answer and its actor's crossed
        pass


def _set_exception(future: Future[Any], error: BaseException) -> None:
    try:
        future.set_exception(error)
    except InvalidStateError:
        pass


#: How long an actor's call for stuck answers waits before it returns empty (and is made
#: again): a runner that stopped leaves at most this long a call behind on an idle actor.
_STUCK_POLL_SECONDS = 5.0
#: How often a thread starting a replacement actor looks whether the runner is stopping.
_REPLACE_POLL_SECONDS = 0.5


_idle_lock = threading.Lock()
_idle: dict[str, list[Any]] = {}  # Ray job id -> actors no runner uses now


class _Actor:
    __slots__ = ("handle", "in_flight", "name")

    def __init__(self, name: str, handle: Any) -> None:
        self.name = name
        self.handle = handle
        self.in_flight = 0


class _RayWorker:
    """The body of a Ray actor that runs task bodies (made a Ray actor class at start)."""

    def __init__(self, path: list[str]) -> None:
        sys.path.extend(p for p in path if p not in sys.path)
        # One actor per worker process: its runtime is the process's.
        self._runtime = WorkerRuntime(f"ray-{os.getpid()}", on_stuck=self._answer_for_stuck_call)
        install(self._runtime)
        self._owners: dict[str, str] = {}  # call id -> the runner that sent it, while it runs
        self._stuck: dict[str, list[tuple[str, CallResult]]] = {}  # runner -> answers for stuck calls
        self._stuck_changed = threading.Condition()

    def name(self) -> str:
        return self._runtime.name

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], owner: str = "") -> Any:
        call = args[0] if args and isinstance(args[0], Call) else None
        if call is None:
            return fn(*args, **kwargs)
        self._owners[call.call_id] = owner
        try:
            return fn(*args, **kwargs)
        finally:
            self._owners.pop(call.call_id, None)

    def _answer_for_stuck_call(self, runtime: WorkerRuntime, call: Call) -> None:
        """``call``'s body did not stop within the grace period after its timeout: a thread
        cannot be ended, so the actor answers for the call and the thread runs on."""
        error = TaskRunTimeout(
            f"Task run {call.task_run_name!r} exceeded its timeout of {call.timeout:g} s and did not stop within "
            f"{call.grace:g} s (it was blocked where a thread cannot be interrupted, such as time.sleep or a C "
            f"call), so it was abandoned; its thread on Ray actor {runtime.name} runs on until the body returns."
        )
        result = runtime.stuck_result(call, error)
        with self._stuck_changed:
            self._stuck.setdefault(self._owners.get(call.call_id, ""), []).append((call.call_id, result))
            self._stuck_changed.notify_all()

    def stuck_calls(self, owner: str, wait_seconds: float) -> list[tuple[str, CallResult]]:
        """The answers for ``owner``'s calls stuck past their timeout; waits up to ``wait_seconds`` for one."""
        with self._stuck_changed:
            self._stuck_changed.wait_for(lambda: owner in self._stuck, timeout=wait_seconds)
            return self._stuck.pop(owner, [])

    def control(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return fn(*args)

    def interrupt(self, call_id: str, exc_type: type[BaseException]) -> bool:
        return self._runtime.interrupt(call_id, exc_type)
