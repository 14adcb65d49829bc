"""Prefect 3's transactions (``prefect.transactions``): a group of task runs that commits or
rolls back as one, calling the tasks' ``on_commit`` / ``on_rollback`` hooks.

    with transaction(key="daily-load") as txn:   # in a @flow
        txn.set("filename", "out.txt")
        write_file("out.txt")        # @write_file.on_rollback: def delete(txn): ...
        quality_test("out.txt")      # raises: delete runs, then the flow fails

Inside a flow, a transaction is a resource scope (`_resources`): its members are the task
runs called or submitted in its block (and the resources and transactions opened in it),
so it ends only once the block is left and every one of them has ended, never while a
submitted task still runs. Its outcome is the scope's: it rolls back when the block raised,
a member run ended failed, crashed or cancelled, or the flow was interrupted (Ctrl-C,
SIGTERM, timeout); else it commits. Leaving the block waits for that end, so after the
``with`` the transaction is committed or rolled back and its hooks have run, as in
Prefect. Outside a flow, or inside a task body, it is a plain context manager that ends at
the ``with``'s exit; the tasks called in its block are its members there too (outside any
flow each is a task run of its own, `_engine._standalone`'s, joined to the scope as in a
flow).

Each member task run that completed is a child transaction holding its task's hooks, in the
order the runs completed: commit calls the children's ``on_commit`` hooks in that order,
rollback their ``on_rollback`` hooks newest first (a task's own hooks last registered
first). A nested transaction (commit mode ``LAZY``, the default) hands its children to its
parent, which commits or rolls them back with its own; one that rolls back makes its parent
roll back. ``EAGER`` commits at its own end (and a task run's hooks as it completes);
``OFF`` never commits unless ``txn.commit()`` is called, and rolls back at the end.

With a ``key``, commit writes a record under that key in tether's result store (the one
task caching uses, ``$TETHER_HOME/cache``), and a later transaction with the same key
begins committed: ``txn.is_committed()`` is True, as Prefect's idempotency recipe reads
(``overwrite=True`` ignores the record). ``IsolationLevel.SERIALIZABLE`` holds a lock on
the key (a file lock under ``$TETHER_HOME/locks``, across threads and processes of this
machine) from the start of the transaction to its commit or rollback.

Where tether is stricter than Prefect: a hook that raises is logged as Prefect does (a
failing ``on_commit`` hook rolls the transaction back instead), the other hooks still run,
and the error then fails the flow (outside a flow it is raised at the ``with``).

What it does not do: a transaction does not undo anything by itself (the hooks do); a
task's cached result is stored when the run completes, not at commit; a task body running on
another process (a process pool, Dask, Ray) sees no transaction (``get_transaction()`` is
None there), though its run still counts for its transaction in the flow process.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import enum
import fcntl
import hashlib
import inspect
import logging
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from tether import _settings as settings
from tether._cache import MISSING, results
from tether._context import current_run, open_blocks
from tether._core import State, StateType
from tether._errors import CleanupError, MissingContextError, UsageError
from tether._logging import get_logger, get_run_logger
from tether._loop import run_on_engine_loop
from tether._resources import Resource, ResourceScope

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11+

__all__ = [
    "AsyncTransaction", "BaseTransaction", "CommitMode", "IsolationLevel", "Transaction", "TransactionState",
    "atransaction", "get_transaction", "transaction",
]


class IsolationLevel(enum.Enum):
    READ_COMMITTED = "READ_COMMITTED"
    SERIALIZABLE = "SERIALIZABLE"


class CommitMode(enum.Enum):
    EAGER = "EAGER"
    LAZY = "LAZY"
    OFF = "OFF"


class TransactionState(enum.Enum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    STAGED = "STAGED"
    COMMITTED = "COMMITTED"
    ROLLED_BACK = "ROLLED_BACK"


_NOT_SET: Any = object()
_ENDED = (TransactionState.COMMITTED, TransactionState.ROLLED_BACK)
#: The transaction whose block the code is in (this thread's flow body, or plain code).
_current: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar("tether_transaction", default=None)


def get_transaction() -> Transaction | None:
    """The transaction the calling code is in, or None.

    In a task body, that is the task run's own (child) transaction, as in Prefect: what it
    ``set``s its hooks read, and its ``get`` falls back to the transactions around it.
    """
    txn = _current.get()
    ctx = current_run.get()
    task_run = None if ctx is None else ctx.task_run
    if task_run is None:
        return txn
    scopes = getattr(task_run, "scopes", ())  # a remote worker's stand-in has none
    if txn is not None and (txn._scope is None or (not txn._scope.in_flow and txn._scope not in scopes)):
        return txn  # opened in this body (or a hook's own, while it runs)
    for scope in reversed(scopes):
        if type(scope) is _TransactionScope:
            return scope.child_for(task_run.record.id, task_run.record.name)
    return None  # a called task's body sees the flow body's context, not its transaction


class Transaction:
    """One transaction: its key, mode, state, stored values, children and hooks."""

    def __init__(
        self,
        key: str | None = None,
        store: Any = None,
        commit_mode: CommitMode | None = None,
        isolation_level: IsolationLevel | None = IsolationLevel.READ_COMMITTED,
        overwrite: bool = False,
        write_on_commit: bool = True,
        logger: logging.Logger | logging.LoggerAdapter | None = None,  # type: ignore[type-arg]
    ) -> None:
        label = f"Transaction {key!r}" if key else "A transaction"
        if key is not None and (not isinstance(key, str) or not key):
            raise UsageError(f"transaction(key={key!r}): the key must be a non-empty string (or None for no record).")
        if store is not None:
            raise UsageError(
                f"{label} got store={store!r}, but tether has no Prefect ResultStore: a transaction's record is kept "
                "in tether's result store ($TETHER_HOME/cache), and SERIALIZABLE locks need no lock manager. "
                "Leave store= out."
            )
        if commit_mode is not None and not isinstance(commit_mode, CommitMode):
            raise UsageError(f"{label}: commit_mode={commit_mode!r} must be CommitMode.EAGER, LAZY or OFF (from tether.transactions).")
        if isolation_level is not None and not isinstance(isolation_level, IsolationLevel):
            raise UsageError(f"{label}: isolation_level={isolation_level!r} must be IsolationLevel.READ_COMMITTED or SERIALIZABLE.")
        self.key = key
        self.store = None
        self.commit_mode = commit_mode
        self.isolation_level = isolation_level
        self.overwrite = bool(overwrite)
        self.write_on_commit = bool(write_on_commit)
        self.logger = logger if logger is not None else _default_logger()
        self.state = TransactionState.PENDING
        self.children: list[Transaction] = []
        self.on_commit_hooks: list[Callable[[Transaction], Any]] = []
        self.on_rollback_hooks: list[Callable[[Transaction], Any]] = []
        self._stored_values: dict[str, Any] = {}
        self._staged_value: Any = None
        self._parent: Transaction | None = None
        self._scope: _TransactionScope | None = None
        self._token: contextvars.Token[Transaction | None] | None = None
        self._lock = threading.RLock()
        self._lock_file: int | None = None
        self._failure: BaseException | None = None  # a member that failed where the scope cannot see it
        self._errors: list[BaseException] = []  # hooks that raised, anywhere in this tree (shared by it)
        self._task_name: str | None = None  # a task run's own transaction: its run's name

    # -- stored values -------------------------------------------------------------------

    def set(self, name: str, value: Any) -> None:
        """Store ``value`` under ``name`` for the rest of the transaction (and its hooks)."""
        self._stored_values[name] = value

    def get(self, name: str, default: Any = _NOT_SET) -> Any:
        """A copy of the value stored under ``name`` here, else in a transaction around this one."""
        if name in self._stored_values:
            return copy.deepcopy(self._stored_values[name])  # as Prefect: mutate, then set() again
        if self._parent is not None:
            return self._parent.get(name, default)
        if default is not _NOT_SET:
            return default
        raise ValueError(
            f"{self._label()} has no value named {name!r}: nothing called txn.set({name!r}, ...) in it or in a "
            f"transaction around it. Set it first, or give a default: txn.get({name!r}, default)."
        )

    # -- state ---------------------------------------------------------------------------

    def is_committed(self) -> bool:
        return self.state is TransactionState.COMMITTED

    def is_rolled_back(self) -> bool:
        return self.state is TransactionState.ROLLED_BACK

    def is_staged(self) -> bool:
        return self.state is TransactionState.STAGED

    def is_pending(self) -> bool:
        return self.state is TransactionState.PENDING

    def is_active(self) -> bool:
        return self.state is TransactionState.ACTIVE

    def get_parent(self) -> Transaction | None:
        return self._parent

    def add_child(self, child: Transaction) -> None:
        with self._lock:
            self.children.append(child)

    def stage(
        self,
        value: Any,
        on_rollback_hooks: list[Callable[..., Any]] | None = None,
        on_commit_hooks: list[Callable[..., Any]] | None = None,
    ) -> None:
        """Keep ``value`` to be written at commit, with hooks for the commit or the rollback."""
        with self._lock:
            if self.state is TransactionState.COMMITTED:
                return
            self._staged_value = value
            self.on_rollback_hooks += list(on_rollback_hooks or ())
            self.on_commit_hooks += list(on_commit_hooks or ())
            self.state = TransactionState.STAGED

    def read(self) -> Any:
        """The record committed under this transaction's key (an object with ``.result``), or None."""
        if self.key is None:
            return None
        value = results().get(self.key)
        return None if value is MISSING else _Record(self.key, value)

    # -- commit and rollback -------------------------------------------------------------

    def commit(self) -> bool:
        """Commit: the children's commits, this one's ``on_commit`` hooks, then its record.

        False if it had ended already, or a hook raised (it is then rolled back instead).
        """
        with self._lock:
            if self.state in _ENDED:
                self._release()
                return False
            try:
                for child in list(self.children):
                    child.commit()
                for hook in self.on_commit_hooks:
                    self._run_hook(hook, "commit")
                if self.key is not None and self.write_on_commit:
                    results().put(self.key, self._staged_value, None)
                self.state = TransactionState.COMMITTED
            except Exception as exc:  # as Prefect: logged, rolled back instead
                self.logger.error("An error was encountered while committing %s; rolling it back.", self._label(), exc_info=exc)
                self.rollback()
                return False
            self._release()
            return True

    def rollback(self) -> bool:
        """Roll back: this one's ``on_rollback`` hooks newest first, then its children's,
        newest first. False if it had ended already. A hook that raises is logged and
        reported at the end; the other hooks still run."""
        with self._lock:
            if self.state in _ENDED:
                return False
            try:
                for hook in reversed(self.on_rollback_hooks):
                    try:
                        self._run_hook(hook, "rollback")
                    except Exception as exc:  # the others must still run
                        self.logger.error("An error was encountered while rolling back %s.", self._label(), exc_info=exc)
                self.state = TransactionState.ROLLED_BACK
                if self._parent is not None and self.key is not None and not self.write_on_commit:
                    # A member task run's cached result (its key is the run's cache key) is kept
                    # only if the transaction commits, as Prefect persists it only then.
                    results().discard(self.key)
                for child in reversed(self.children):
                    child.rollback()
            finally:
                self._release()
            return True

    def _run_hook(self, hook: Callable[..., Any], kind: str) -> None:
        name = _hook_name(hook)
        log = getattr(hook, "log_on_run", True)
        if log:
            self.logger.info("Running %s hook %r", kind, name)
        token = _current.set(self)  # get_transaction() in the hook is the transaction it was given
        try:
            outcome = hook(self)
            if inspect.isawaitable(outcome):
                run_on_engine_loop(_awaited(outcome)).result()
        except Exception as exc:
            if log:
                self.logger.error("An error was encountered while running %s hook %r", kind, name)
            error = CleanupError(f"the on_{kind} hook {name!r} of {self._label()} raised {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._errors.append(error)
            raise
        finally:
            _current.reset(token)
        if log:
            self.logger.info("%s hook %r finished running successfully", kind.capitalize(), name)

    # -- the block -----------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self._token is not None or self.state is not TransactionState.PENDING:
            raise UsageError(f"{self._label()} was entered twice. Make a new one for each 'with': with transaction(...) as txn:")
        parent = self._parent = get_transaction()  # in a task body: the run's own transaction
        if parent is not None:
            self._errors = parent._errors
        if self.commit_mode is None:
            self.commit_mode = parent.commit_mode if parent is not None else CommitMode.LAZY
        if self.isolation_level is None:
            self.isolation_level = parent.isolation_level if parent is not None else IsolationLevel.READ_COMMITTED
        self.state = TransactionState.ACTIVE
        self._begin()
        scope = _TransactionScope(self)
        try:
            scope.__enter__()
        except BaseException:
            self._release()
            raise
        self._scope = scope
        if not scope.in_flow and current_run.get() is not None:  # a task body: the runs it calls join
            # (outside any run, `plain_scopes` hands the scope to the task called in the block)
            scope.body_token = open_blocks.set((*open_blocks.get(), scope))
        self._token = _current.set(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> Literal[False]:
        scope = self._leave(exc_type, exc, tb)
        if scope.in_flow:
            # Interruptible. The end comes anyway, before the flow's; a hook that raised fails
            # the flow as a failing cleanup does.
            scope.wait_for_cleanup()
        return False

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> Literal[False]:
        scope = self._leave(exc_type, exc, tb)
        if scope.in_flow:  # the flow's loop goes on running its other coroutines meanwhile
            await asyncio.get_running_loop().run_in_executor(None, scope.wait_for_cleanup)
        return False

    def _leave(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> _TransactionScope:
        if self._token is None or self._scope is None:
            raise UsageError(f"{self._label()}: __exit__ was called without __enter__. Use it as 'with transaction() as txn:'.")
        _current.reset(self._token)
        self._token = None
        if self._scope.body_token is not None:
            open_blocks.reset(self._scope.body_token)
            self._scope.body_token = None
        try:
            self._scope.__exit__(exc_type, exc, tb)  # outside a flow, the end; in one, it may wait for members
        except CleanupError:
            if exc is None:
                raise
            # A hook raised (it was logged) while the block's own error ends the transaction: that goes on.
        return self._scope

    def _begin(self) -> None:
        if self.key is None:
            return
        if self.isolation_level is IsolationLevel.SERIALIZABLE:
            self._acquire()
        if not self.overwrite and results().get(self.key) is not MISSING:
            self.state = TransactionState.COMMITTED

    def _end(self, error: BaseException | None) -> None:
        """The scope is over (every member ended), with its first error or None."""
        if error is None and self._scope is not None:  # a plain scope's own block raised nothing; its runs?
            error = self._scope.book.outcome_error()
        failed = error is not None or self._failure is not None or self.state is TransactionState.ROLLED_BACK
        if failed:
            self.rollback()
        elif self.commit_mode is CommitMode.EAGER:
            self.commit()
        parent = self._parent
        if parent is not None:
            parent.add_child(self)  # the parent takes over: it commits or rolls back this one's children
            if self.state is TransactionState.ROLLED_BACK:
                parent._failure = parent._failure or error or RuntimeError(f"{self._label()} inside it was rolled back")
            return
        if self.commit_mode is CommitMode.OFF:
            self.rollback()  # nobody committed it (a committed one stays so)
        elif self.commit_mode is CommitMode.LAZY:
            self.commit()
        self._release_all()
        if self._errors:
            first, more = self._errors[0], len(self._errors) - 1
            raise CleanupError(
                f"{self._label().capitalize()} ended {self.state.value.lower().replace('_', ' ')}, but {first}"
                f"{f' (and {more} more hooks raised)' if more else ''}. A run whose on_commit hook raised was rolled "
                "back instead; the other hooks ran. Fix the hook so that it does not raise."
            ) from first.__cause__

    # -- task runs ------------------------------------------------------------------------

    def _child(self, run_name: str) -> Transaction:
        child = Transaction(commit_mode=self.commit_mode, isolation_level=self.isolation_level, write_on_commit=False, logger=self.logger)
        child._parent = self
        child._errors = self._errors
        child._task_name = run_name
        child.state = TransactionState.ACTIVE
        return child

    def _completed(self, child: Transaction, task: Any, key: str | None, value: Any) -> None:
        """A member task run completed: its transaction is staged with its task's hooks."""
        child.key = key
        child.stage(value, list(getattr(task, "on_rollback", ())), list(getattr(task, "on_commit", ())))
        if self.state in _ENDED:
            why = (f"{self._label()} had been committed already (txn.commit() while it ran, or a record under its key "
                   "from an earlier run: check txn.is_committed() first, or pass overwrite=True)") if self.is_committed() else (
                   f"{self._label()} had been rolled back already (txn.rollback() was called while it ran)")
            self.logger.warning("Task run %r completed after %s, so its on_commit and on_rollback hooks are not run.", child._task_name, why)
            return
        if child.commit_mode is CommitMode.EAGER:
            child.commit()
        self.add_child(child)

    # -- SERIALIZABLE --------------------------------------------------------------------

    def _acquire(self) -> None:
        assert self.key is not None
        directory = settings.home() / "locks"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"transaction-{hashlib.sha256(self.key.encode()).hexdigest()[:32]}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # each open() is its own holder, threads included
        except BaseException:
            os.close(fd)
            raise
        self._lock_file = fd

    def _release(self) -> None:
        fd, self._lock_file = self._lock_file, None
        if fd is None:
            return
        os.close(fd)  # closing the file lets the flock go

    def _release_all(self) -> None:
        self._release()
        for child in self.children:
            child._release_all()

    def _label(self) -> str:
        if self._task_name is not None:
            return f"the transaction of task run {self._task_name!r}"
        return f"transaction {self.key!r}" if self.key else "the transaction"

    def __repr__(self) -> str:
        return f"<Transaction key={self.key!r} state={self.state.value}>"


def transaction(
    key: str | None = None,
    store: Any = None,
    commit_mode: CommitMode | None = None,
    isolation_level: IsolationLevel | None = None,
    overwrite: bool = False,
    write_on_commit: bool = True,
    logger: logging.Logger | logging.LoggerAdapter | None = None,  # type: ignore[type-arg]
) -> Transaction:
    """A new transaction, for ``with transaction(...) as txn:`` (or ``async with``)."""
    return Transaction(key, store, commit_mode, isolation_level, overwrite, write_on_commit, logger)


atransaction = transaction  # Prefect's async form: ``async with atransaction() as txn:``
AsyncTransaction = BaseTransaction = Transaction  # Prefect's other names, for annotations


class _Record(NamedTuple):
    """What ``txn.read()`` returns: the committed value as ``.result``."""

    key: str
    result: Any


class _Lifecycle:
    """The resource a transaction's scope opens: its cleanup is the transaction's end."""

    def __init__(self, txn: Transaction) -> None:
        self.txn = txn

    def setup(self) -> _Lifecycle:
        return self  # the scope's value: nobody else holds it, so no task joins by receiving it

    def cleanup(self, value: Any, error: BaseException | None) -> None:
        self.txn._end(error)


_LIFECYCLE = Resource(_Lifecycle, name="transaction")


class _TransactionScope(ResourceScope):
    """A transaction's scope: a resource scope that opens in the flow process whatever the
    runner, is not a resource of the ledger (there is nothing to reap), and makes each
    member task run that completed a child of the transaction."""

    def __init__(self, txn: Transaction) -> None:
        super().__init__(_LIFECYCLE, (txn,), {})
        self.name = f"transaction {txn.key!r}" if txn.key else "transaction"
        self.txn = txn
        self.in_flow = False
        self.body_token: contextvars.Token[tuple[Any, ...]] | None = None  # opened in a task body
        self._own: dict[str, Transaction | None] = {}  # member runs it is the innermost transaction of
        self._own_lock = threading.Lock()

    def open_in(self, flow_run: Any) -> Any:
        self.in_flow = True
        return super().open_in(flow_run)

    def _open_on_a_worker(self, flow_run: Any) -> Any:
        return self._open_here(opening=True)  # its hooks and records live with the flow body

    def _emit(self, step: str, **details: Any) -> None:
        return None

    def join_task_run(self, task_name: str, task_run_id: str) -> None:
        super().join_task_run(task_name, task_run_id)
        # An outer transaction counts the run, the innermost keeps it; outside any run the
        # scope is handed to the run itself (`plain_scopes`), with none in the open blocks.
        innermost = next((s for s in reversed(open_blocks.get()) if type(s) is _TransactionScope), self)
        if innermost is self:
            with self._own_lock:
                self._own[task_run_id] = None

    def child_for(self, run_id: str, run_name: str) -> Transaction:
        """The transaction of member run ``run_id``, made on first use (``get_transaction()``)."""
        with self._own_lock:
            child = self._own.get(run_id)
            if child is None:
                child = self._own[run_id] = self.txn._child(run_name)
            return child

    def member_ended(self, member: Any, state: State | None) -> None:
        try:
            if state is not None:  # a task run (a nested scope ends with None)
                record = member.record
                with self._own_lock:
                    owned = record.id in self._own
                    child = self._own.pop(record.id, None)
                if owned and state.type is StateType.COMPLETED:
                    child = child or self.txn._child(record.name)
                    self.txn._completed(child, member.task, getattr(member, "cache_key", None), state.data)
        finally:  # whatever an EAGER commit's hook did, the scope must count the run as ended
            super().member_ended(member, state)


def plain_scopes() -> tuple[Any, ...]:
    """The scope of the transaction a task called outside any run belongs to: the run
    joins it as it joins an open block in a flow (empty outside a transaction)."""
    txn = _current.get()
    if txn is None or txn._scope is None or txn._scope.in_flow:
        return ()
    return (txn._scope,)


def _default_logger() -> logging.Logger | logging.LoggerAdapter:  # type: ignore[type-arg]
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("transactions")


def _hook_name(hook: Callable[..., Any]) -> str:
    target = getattr(hook, "func", hook)  # a functools.partial names its function
    return str(getattr(target, "__name__", repr(target)))


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
