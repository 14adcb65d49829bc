"""Resources: setup and cleanup that follow the task runs that use them.

`@resource` turns a generator function, a context-manager factory or a Prefect 1
`@resource_manager` class into a `Resource`. Calling it gives a `ResourceScope`,
the object of the ``with`` statement. Inside a flow, leaving the block does not
clean up: the scope's `ScopeBook` counts the block, every task run of the scope
and every nested scope, and cleanup runs, exactly once and on a thread of its
own, when the last of them ends, with the scope's first error if it failed.
Outside a flow (or inside a task body), a scope is a plain context manager.

When the flow's task bodies run in other processes (a process pool, Dask, Ray), the
flow process does not set the resource up at the ``with`` statement: one worker does
(so a setup failure still raises there), each worker opens its own copy, and the
flow body holds a `StandIn` that opens this process's own copy only if something here
uses it (a called task, or the flow body itself).

A value is looked up by identity (`scope_of`, over the registry of `_values`, which
also says why an immutable value is handed out as a fresh equal object, and how a value
stays known as closed after its flow run) and is never pickled; how copies are opened
and closed on workers is `_remote`'s and `_copies`' business. A value that only works on
the thread that made it (a default sqlite3 connection) is cleaned up on that thread,
through `_mailbox`.
"""

from __future__ import annotations

import contextvars
import inspect
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, Protocol, cast, overload

from tether import _stand_in as stand_ins
from tether._connections import refuses_this_thread as _refuses_this_thread
from tether._connections import thread_bound as _may_be_thread_bound
from tether._connections import unshareable_connection
from tether._context import RunContext, RunView, building_graph, current_run, events, open_blocks
from tether._core import ResourceEvent, ScopeBook, ScopeClosed, State, StateType
from tether._errors import CleanupError, ResourceClosedError, UsageError
from tether._interrupt import wait_interruptibly
from tether._limits import limiter
from tether._logging import logger
from tether._mailbox import done_expecting as done_expecting_jobs
from tether._mailbox import expect as expect_jobs
from tether._mailbox import post as post_job
from tether._runtime import Part
from tether._shield import shielded, unshielded
from tether._stand_in import StandIn, local_arguments
from tether._values import ValueRegistry, distinct


class ScopeOwner(RunView, Protocol):
    """What a scope needs of the flow run it is opened in (`FlowRun` implements it).

    The owner decides where copies live and closes the copies workers opened; the scope
    only counts its members and runs its own setup and cleanup. It is a `RunView` too:
    the scope's cleanup runs in the owner's run context (its logs are the flow run's).
    """

    @property
    def run_id(self) -> str: ...

    @property
    def shares_memory(self) -> bool:
        """Whether task bodies run in this process (else each worker opens its own copy)."""

    @property
    def grace_seconds(self) -> float:
        """How long an interrupted body may take to end before it is abandoned."""

    def add_scope(self, scope: ResourceScope) -> None: ...

    def add_cleanup_error(self, error: BaseException) -> None: ...

    def open_first_copy(self, scope: ResourceScope) -> tuple[bool, Any]:
        """Set ``scope`` up on one worker; ``(True, value)`` if the value is plain enough to hold here."""

    def close_copies(self, scope: ResourceScope, error: BaseException | None) -> None:
        """Close every worker's copy of ``scope`` with its outcome; never raises."""

#: Which scope each resource value belongs to (the runtime's registry).
values: Part[ValueRegistry[ResourceScope]] = Part("resource values", lambda runtime: ValueRegistry())
_setting_up: contextvars.ContextVar[ResourceScope | None] = contextvars.ContextVar("tether_setting_up", default=None)


def scope_of(value: Any) -> ResourceScope | None:
    """The scope whose value ``value`` is, if any (by identity; the scope may be closed)."""
    return values().scope_of(value)


def remember(handle: Any) -> None:
    """Record a JSON-able handle (a cluster id, a table name) for the resource being set up.

    A reaper receives it if the process dies before cleanup.
    """
    scope = _setting_up.get()
    if scope is None:
        raise UsageError(
            "tether.resources.remember() was called outside a resource's setup. Call it in "
            "the body of a @resource function before its yield (or in setup())."
        )
    scope.handle = handle
    scope._emit("handle", handle=handle)


class Resource:
    """A resource definition: call it with the factory's arguments to get a `ResourceScope`."""

    def __init__(
        self,
        factory: Callable[..., Any],
        name: str | None = None,
        max_concurrency: int | None = None,
        reaper: Callable[[Any], Any] | None = None,
    ) -> None:
        if not callable(factory):
            raise UsageError(
                f"@resource needs a generator function, a context-manager factory or a class with "
                f"setup() and cleanup(); got {factory!r} of type {type(factory).__name__}."
            )
        if max_concurrency is not None and (not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool) or max_concurrency < 1):
            raise UsageError(f"@resource(max_concurrency={max_concurrency!r}) must be a whole number >= 1, or None for no limit.")
        if reaper is not None and not callable(reaper):
            raise UsageError(f"@resource(reaper={reaper!r}) must be a function that takes the remembered handle.")
        self.factory = factory
        self.name: str = name or str(getattr(factory, "__name__", type(factory).__name__))
        self.max_concurrency = max_concurrency
        self.reaper = reaper
        if inspect.isclass(factory) and hasattr(factory, "setup") and hasattr(factory, "cleanup"):
            self.kind = "manager"
        elif inspect.isgeneratorfunction(factory):
            self.kind = "generator"
        else:
            self.kind = "context_manager"
        self.__doc__ = getattr(factory, "__doc__", None)
        self.__wrapped__ = factory

    def __call__(self, *args: Any, **kwargs: Any) -> ResourceScope:
        return ResourceScope(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<resource {self.name!r}>"


@overload
def resource(
    fn: Callable[..., Any], *, name: str | None = None, max_concurrency: int | None = None,
    reaper: Callable[[Any], Any] | None = None,
) -> Resource: ...


@overload
def resource(
    fn: None = None, *, name: str | None = None, max_concurrency: int | None = None,
    reaper: Callable[[Any], Any] | None = None,
) -> Callable[[Callable[..., Any]], Resource]: ...


def resource(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    max_concurrency: int | None = None,
    reaper: Callable[[Any], Any] | None = None,
) -> Resource | Callable[[Callable[..., Any]], Resource]:
    """Make a resource of a generator function, a context-manager factory or a setup/cleanup class.

    Bare (``@resource``), with options (``@resource(max_concurrency=4)``), or as a
    one-line adapter (``mysql = resource(get_mysql_conn)``).
    """
    if fn is not None:
        return Resource(fn, name, max_concurrency, reaper)
    return lambda f: Resource(f, name, max_concurrency, reaper)


def resource_manager(cls: type | None = None, *, name: str | None = None, max_concurrency: int | None = None) -> Any:
    """Prefect 1's decorator for classes with ``__init__``, ``setup()`` and ``cleanup(resource)``."""
    def decorate(c: type) -> Resource:
        if not (inspect.isclass(c) and callable(getattr(c, "setup", None)) and callable(getattr(c, "cleanup", None))):
            raise UsageError(
                f"@resource_manager decorates a class with setup() and cleanup(resource) methods; "
                f"{c!r} has {'no setup()' if not hasattr(c, 'setup') else 'no cleanup()'}."
            )
        return Resource(c, name, max_concurrency)

    return decorate(cls) if cls is not None else decorate


class ResourceScope:
    """One opening of a resource: the object of a ``with`` statement."""

    def __init__(self, resource: Resource, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.resource = resource
        self.args = args
        self.kwargs = kwargs
        self.id = uuid.uuid4().hex
        self.name = resource.name
        self.value: Any = None
        self.handle: Any = None
        self.flow_run: ScopeOwner | None = None
        self.limit_key: str | None = None
        self.book = ScopeBook(resource.name)
        self.users: list[str] = []
        self._opener: Any = None
        self._parents: list[ResourceScope] = []
        self._lock = threading.Lock()
        self._set_up = False  # the scope is open: set up here, or on a worker at the `with`
        self._here = False  # this process holds a copy (the only one, unless tasks run elsewhere)
        self._here_lock = threading.Lock()
        self._closing = False
        self._owner: threading.Thread | None = None  # the thread a thread-bound value belongs to
        self.stand_in: StandIn | None = None  # what the flow body holds when tasks run elsewhere
        self._cleaned = threading.Event()
        self._block_token: Any = None
        self._plain = True
        #: A failing cleanup fails the flow (not in Prefect 1 graphs, where it is only reported).
        self.cleanup_fails_flow = True
        self.cleanup_error: BaseException | None = None

    # -- setup -------------------------------------------------------------------------

    def __enter__(self) -> Any:
        # Shielded: Ctrl-C mid-way must not leave a scope half open. A Ctrl-C kept until the
        # scope is open is raised here, where Python will not call __exit__: close the block.
        try:
            return shielded(self._enter)
        except BaseException as exc:
            if self._block_token is not None:
                self._exit(exc)
            raise

    def _enter(self) -> Any:
        ctx = current_run.get()
        if ctx is None and building_graph.get() is not None:
            return building_graph.get().open_resource(self)
        self._plain = ctx is None or ctx.task_run is not None
        if self._plain:
            return self._setup()
        assert ctx is not None
        # With no task run, the context's run is a flow run of this process: the engine's
        # FlowRun, or a scope's owner on its cleanup thread (once per block: not a hot path).
        value = self.open_in(cast(ScopeOwner, ctx.flow_run))
        self._block_token = open_blocks.set(open_blocks.get() + (self,))
        return value

    def open_in(self, flow_run: ScopeOwner) -> Any:
        """Set the resource up as part of ``flow_run``; its block stays open until `close_block`."""
        self._plain = False
        self.flow_run = flow_run
        self._join_parents()
        if flow_run.shares_memory:
            value = self._open_here(opening=True)
        else:
            value = self._open_on_a_worker(flow_run)
        self._set_up = True
        limit = self.resource.max_concurrency
        if limit is None and self._here and unshareable_connection(value):
            # DB-API says (threadsafety < 2) that this connection must not be used by two
            # threads at once: its tasks take turns instead of corrupting the session.
            # (A worker's copy takes turns on its worker: see `_worker`.)
            limit = 1
        if limit is not None:
            self.limit_key = f"resource:{self.name}:{self.id[:8]}"
            limiter().set_limit(self.limit_key, limit)
        self.flow_run.add_scope(self)
        return value

    def _open_here(self, opening: bool) -> Any:
        """Run setup in this process and record it; on failure, leave the parents."""
        self._emit("setup-started")
        try:
            value = unshielded(self._setup)  # the user's setup: interruptible
        except BaseException as exc:
            self._emit("setup-failed", error=f"{type(exc).__name__}: {exc}")
            if opening:  # else the scope is open already, and stays so
                for parent in self._parents:
                    parent.member_ended(self, None)
            raise
        self._here = True
        value = self.value = distinct(value)
        values().track(value, self)
        if _may_be_thread_bound(value):  # its cleanup may have to run on this thread
            self._owner = threading.current_thread()
            expect_jobs(threading.get_ident())
        self._emit("setup")
        return value

    def _open_on_a_worker(self, flow_run: ScopeOwner) -> Any:
        """Tasks run in other processes: one worker sets up its copy now (a failure raises
        here, at the ``with``), and this process hands out a stand-in; or, for a plain
        value (None, a number, a str), that worker's value itself."""
        stand_in = StandIn(self)
        values().track(stand_in, self)
        try:
            plain, value = flow_run.open_first_copy(self)
        except BaseException:
            values().untrack(stand_in, self)
            for parent in self._parents:
                parent.member_ended(self, None)
            raise
        if plain:  # it opens nothing here, and `v is None`, `f"{name}"` must work in the flow body
            values().untrack(stand_in, self)
            value = self.value = distinct(value)
            values().track(value, self)
            return value
        self.stand_in = stand_in
        stand_ins.holding(self.id)
        return stand_in

    def local_value(self) -> Any:
        """This process's copy, set up on first use (tasks run elsewhere; see `StandIn`)."""
        if self._here and not self._closing:
            return self.value
        with self._here_lock:
            if self._closing:
                raise ResourceClosedError(
                    f"Resource {self.name!r} was already cleaned up, so its value cannot be used any more. "
                    f"Use it inside the 'with {self.name}(...)' block, or in a task submitted there."
                )
            if not self._here:
                self.args, self.kwargs = local_arguments(self.args, self.kwargs)
                self._open_here(opening=False)
        return self.value

    def _join_parents(self) -> None:
        parents = list(open_blocks.get()[-1:])
        for value in list(self.args) + list(self.kwargs.values()):
            scope = scope_of(value)
            if scope is not None and scope not in parents:
                parents.append(scope)
        for parent in parents:
            parent.join_scope(self)
            self._parents.append(parent)

    def _setup(self) -> Any:
        token = _setting_up.set(self)
        try:
            kind = self.resource.kind
            if kind == "generator":
                self._opener = self.resource.factory(*self.args, **self.kwargs)
                self.value = next(self._opener)
            elif kind == "manager":
                self._opener = self.resource.factory(*self.args, **self.kwargs)
                self.value = self._opener.setup()
            else:
                self._opener = self.resource.factory(*self.args, **self.kwargs)
                if not hasattr(self._opener, "__enter__") or not hasattr(self._opener, "__exit__"):
                    raise UsageError(
                        f"Resource {self.name!r}: calling its factory returned {type(self._opener).__name__}, "
                        "which is not a context manager. resource(f) needs f to be a generator function, "
                        "a @contextlib.contextmanager function, or a class with __enter__/__exit__."
                    )
                self.value = self._opener.__enter__()
        except StopIteration:
            raise UsageError(f"Resource {self.name!r}: its generator returned without yielding a value. Yield the resource once.") from None
        finally:
            _setting_up.reset(token)
        return self.value

    # -- the block and its members ---------------------------------------------------------

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        return shielded(self._exit, exc)  # Ctrl-C mid-way must not leave the block never closed

    def _exit(self, exc: BaseException | None) -> Literal[False]:
        if current_run.get() is None and building_graph.get() is not None:
            building_graph.get().close_resource(self)
            return False
        if self._plain:
            self._close(exc)
            return False
        self.close_block(exc)
        open_blocks.reset(self._block_token)
        self._block_token = None
        return False

    def close_block(self, error: BaseException | None) -> None:
        """The ``with`` block is over (idempotent: the flow's end closes a block an
        interrupt left open)."""
        with self._lock:
            due = self.book.block_open and self.book.exit_block(error)
        if due:
            self._start_cleanup()

    def join_task_run(self, task_name: str, task_run_id: str) -> None:
        """A task run becomes part of this scope (it runs in the block, or got the value)."""
        self._join(f"task {task_name!r}")
        self.users.append(task_run_id)
        if events().active:
            self._emit("used", task_run_id=task_run_id)

    def join_scope(self, nested: ResourceScope) -> None:
        """A resource opened inside the block, or with this one's value, becomes part of it."""
        self._join(f"resource {nested.name!r}")

    def _join(self, who: str) -> None:
        with self._lock:
            try:
                self.book.join()
            except ScopeClosed:
                raise ResourceClosedError(
                    f"Resource {self.name!r} was already cleaned up, so {who} cannot use its value. "
                    f"Submit the task inside the 'with {self.name}(...)' block, or pass the value to a "
                    "task submitted before the block ended: the resource stays open until that task is done."
                ) from None

    def member_ended(self, member: Any, state: State | None) -> None:
        failed = state is not None and state.type is not StateType.COMPLETED
        error = state.error() if failed and state is not None else None
        with self._lock:
            due = self.book.leave(error, failed)
        if due:
            self._start_cleanup()

    def fail(self, error: BaseException) -> None:
        with self._lock:
            self.book.fail(error)

    def wait_for_cleanup(self, timeout: float | None = None) -> bool:
        """Block until this scope's cleanup has finished; False if ``timeout`` passed first."""
        if not self._set_up:
            return True
        return wait_interruptibly(self._cleaned, timeout)

    # -- cleanup -------------------------------------------------------------------------

    def _start_cleanup(self) -> None:
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(self._cleanup_in_flow,), name=f"tether-cleanup-{self.name}")
        thread.start()

    def _cleanup_in_flow(self) -> None:
        assert self.flow_run is not None
        current_run.set(RunContext(self.flow_run))
        open_blocks.set(())
        error = self.book.outcome_error()
        started = time.monotonic()
        with self._here_lock:
            self._closing = True
        try:
            if self._here:  # else every copy is a worker's
                self._close_on_its_thread(error)
        except BaseException as exc:
            if self.cleanup_fails_flow:
                self.flow_run.add_cleanup_error(exc)
            self.cleanup_error = exc
            logger.error("Cleanup of resource %r failed: %s: %s", self.name, type(exc).__name__, exc, exc_info=exc)
            self._emit("cleanup-failed", error=f"{type(exc).__name__}: {exc}", outcome=_outcome(error), seconds=time.monotonic() - started)
        else:
            if self._here:
                self._emit("cleanup", outcome=_outcome(error), seconds=time.monotonic() - started)
        finally:
            self.flow_run.close_copies(self, error)  # each worker's copy, after the flow's own; never raises
            if self.limit_key is not None:
                limiter().remove_limit(self.limit_key)
            self._cleaned.set()
            for parent in self._parents:
                parent.member_ended(self, None)

    def _close_on_its_thread(self, error: BaseException | None) -> None:
        """`_close`, on the thread that set the value up if the value refuses every other
        thread (a default sqlite3 connection); that thread runs it at its next wait."""
        owner = self._owner
        if owner is None:
            self._close(error)
            return
        try:
            if owner is threading.current_thread() or not owner.is_alive() or not _refuses_this_thread(self.value):
                self._close(error)
            else:
                post_job(owner, lambda: self._close(error)).result()
        finally:
            assert owner.ident is not None
            done_expecting_jobs(owner.ident)

    def _close(self, error: BaseException | None) -> None:
        """Run the resource's own cleanup with the scope's outcome; raises if cleanup failed."""
        kind = self.resource.kind
        if kind == "generator":
            try:
                if error is None:
                    next(self._opener)
                else:
                    self._opener.throw(error)
            except StopIteration:
                return
            except BaseException as exc:
                if exc is error:
                    return  # the generator re-raised the scope's error: that is a normal rollback
                raise
            try:
                self._opener.close()  # GeneratorExit at the second yield: its finally blocks run
            finally:
                raise CleanupError(
                    f"Resource {self.name!r}: its generator yielded a second time after the scope ended, so "
                    "tether closed it there (its finally blocks ran). Yield exactly once."
                )
        if kind == "manager":
            cleanup = self._opener.cleanup
            if _accepts_two(cleanup):
                cleanup(self.value, error)
            else:
                cleanup(self.value)
            return
        if error is None:
            self._opener.__exit__(None, None, None)
        else:
            try:
                self._opener.__exit__(type(error), error, error.__traceback__)
            except BaseException as exc:
                if exc is not error:
                    raise

    def _emit(self, step: str, **details: Any) -> None:
        if not events().active:
            return
        flow_run = self.flow_run
        events().emit(
            ResourceEvent(
                step=step,
                scope_id=self.id,
                name=self.name,
                flow_run_id=flow_run.run_id if flow_run else None,
                timestamp=time.time(),
                task_run_id=details.pop("task_run_id", None),
                error=details.pop("error", None),
                outcome=details.pop("outcome", None),
                worker=socket.gethostname(),
                pid=os.getpid(),
                handle=details.pop("handle", self.handle),
                reaper=_qualified_name(self.resource.reaper),
                details=details,
            )
        )

    def forget(self) -> None:
        """The flow run ended (every cleanup is over): keep the value known as closed for as
        long as it lives, and let go of what only setup and cleanup needed."""
        stand_ins.released(self.id)
        for value in (self.value, self.stand_in):
            if value is not None:
                values().retire(value, self)
        self._opener = None
        self.args, self.kwargs = (), {}
        self.value = self.stand_in = None

    def opened_here(self) -> bool:
        """This process holds a copy of its own."""
        return self._here

    def __repr__(self) -> str:
        return f"<ResourceScope {self.name!r} {self.id[:8]}>"


def join_scopes(scopes: list[ResourceScope], task_name: str, run_id: str, run: Any) -> None:
    """Make a new task run a member of every scope in ``scopes``, or of none: a scope that
    refuses it (closed already) raises, and those it had joined let it go again."""
    joined: list[ResourceScope] = []
    try:
        for scope in scopes:
            scope.join_task_run(task_name, run_id)
            joined.append(scope)
    except BaseException:
        for scope in joined:
            scope.member_ended(run, None)
        raise


def _outcome(error: BaseException | None) -> str:
    return "failed" if error is not None else "succeeded"


def _accepts_two(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def _qualified_name(fn: Callable[..., Any] | None) -> str | None:
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
