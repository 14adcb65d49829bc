"""Interrupting a thread that runs Python code, and the watchdog that does it on time.

A sync task in a worker thread cannot be cancelled cooperatively, so a timeout or
a cancellation raises an exception *inside* that thread
(`PyThreadState_SetAsyncExc`). It lands at the next bytecode the thread runs;
a thread blocked in C does not see it until it returns, which is why the engine
also gives up on such a run after a grace period.

The main thread is interrupted through a real SIGINT instead (`interrupt_main_thread`),
so that ``time.sleep`` and lock waits there wake up at once. Either can land in a
finalizer, where Python drops it, so the sender sends it again until the body stops
(`keep_sending`).

A worker process of a flow (a process pool's, a local Dask cluster's) outlives Ctrl-C
and SIGTERM sent to the whole process group or service (`survive_stop_signals`): its
flow process decides, and has the worker clean up its copies first.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tether._clock import Clock
from tether._errors import TimeoutInterrupt
from tether._mailbox import SLICE_SECONDS, is_expecting, run_posted
from tether._runtime import Part, Runtime, get_clock

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Make ``exc_type`` raise in the thread ``thread_id`` (as `landing`); False if no such thread."""
    return bool(_set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object(landing(exc_type))) == 1)


def landing(exc_type: type[BaseException]) -> type[BaseException]:
    """What is raised in a thread to interrupt it with ``exc_type``: a timeout (a `TimeoutError`,
    which ``except Exception`` catches) lands as `TimeoutInterrupt`; whoever sent it knows
    which timeout it stands for."""
    return TimeoutInterrupt if issubclass(exc_type, TimeoutError) else exc_type


def let_go_of_logging_locks(exc: BaseException) -> None:
    """If ``exc`` is an interrupt (not an `Exception`) that ended the user's code on the calling
    thread, release the logging module's locks that the thread still holds.

    An interrupt thrown into a thread (a timeout, a cancellation, Ctrl-C) can land between
    a handler's lock being taken and the ``try`` that releases it: as ``acquire()`` returns
    (sent while the thread waited for the lock) or as ``release()`` begins. The lock stays
    held, and every other thread that logs through that handler waits for ever (a flow
    whose tasks log in a loop hung at their timeout). The shells call this once an
    interrupt has ended the user's code, when the thread holds no such lock of its own.
    """
    if isinstance(exc, Exception):
        return
    handlers = (ref() for ref in list(getattr(logging, "_handlerList", ())))
    locks = [getattr(logging, "_lock", None), *(getattr(h, "lock", None) for h in handlers)]
    for lock in locks:
        owned = getattr(lock, "_is_owned", None)
        while owned is not None and owned():
            lock.release()  # type: ignore[union-attr]


#: How long an interrupt that has not ended its body waits before it is sent again.
RESEND_SECONDS = 0.25


def keep_sending(timer: Watchdog, send_again: Callable[[], bool]) -> None:
    """Call ``send_again`` every `RESEND_SECONDS` until it returns False (the body it
    interrupts has ended).

    An interrupt lands wherever its thread is, and Python drops one that lands in a
    finalizer (a ``__del__``, a weakref callback, a generator closed as it is freed: it prints
    "Exception ignored in" and goes on), so a body that frees objects as it loops could
    run past its timeout for ever. The sender re-checks, and sends again while the body
    runs and the last interrupt is not on its way out (`is_on_its_way_out`).
    """
    def again() -> None:
        if send_again():
            timer.schedule(RESEND_SECONDS, again)

    timer.schedule(RESEND_SECONDS, again)


def is_on_its_way_out(thread_id: int, landed: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    """Whether the thread ``thread_id`` is handling a ``landed`` now: an interrupt going up
    through the body's ``except`` and ``finally`` blocks, which one sent again would cut short."""
    handled: Any = sys._current_exceptions().get(thread_id)  # noqa: SLF001 - the only way to see another thread's
    if isinstance(handled, tuple):  # Python < 3.12: (type, value, traceback)
        handled = handled[1]
    return isinstance(handled, landed)


def clear_in_thread(thread_id: int) -> None:
    """Drop an exception sent with `raise_in_thread` that has not landed yet."""
    _set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object())  # an empty py_object is NULL


def wait_interruptibly(waitable: threading.Event | Any, timeout: float | None = None) -> bool:
    """Wait for an Event (or acquire a Lock) so that Ctrl-C and SIGTERM still work.

    CPython runs signal handlers in the main thread only, between bytecodes; when the
    kernel hands the signal to another thread (a busy worker, say), a main thread
    blocked in an untimed wait never sees it. So the main thread waits in slices.
    """
    def acquire(seconds: float | None) -> bool:
        if isinstance(waitable, _LOCK_TYPES):
            return bool(waitable.acquire(timeout=-1 if seconds is None else seconds))
        return bool(waitable.wait(seconds))
    # A thread that owns thread-bound values also runs the jobs posted to it (see `_mailbox`).
    serving = is_expecting(threading.get_ident())
    if not serving and threading.current_thread() is not threading.main_thread():
        return bool(acquire(timeout))
    slice_seconds = SLICE_SECONDS if serving else _SIGNAL_SLICE
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if serving:
            run_posted()
        left = slice_seconds if deadline is None else min(slice_seconds, max(0.0, deadline - time.monotonic()))
        if acquire(left):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


_SIGNAL_SLICE = 0.1
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def interrupt_main_thread() -> None:
    """Deliver SIGINT to the main thread: unlike `_thread.interrupt_main`, it wakes a blocking wait."""
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]


def survive_stop_signals() -> None:
    """In a worker process: Ctrl-C and SIGTERM do not end it, the flow process decides.

    A terminal's Ctrl-C, ``kill -TERM -- -PGID`` and a service manager's stop signal
    every process of the group at once; a worker that died of it could not clean up
    the copies it holds. The worker still exits when its flow process is gone (each
    runner watches for that). A handler that does nothing, rather than ``SIG_IGN``:
    ignored signals stay ignored in the programs a task starts, a handler does not;
    and system calls it interrupts are restarted (``siginterrupt``).
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _left_to_the_flow_process)
        signal.siginterrupt(signum, False)


def _left_to_the_flow_process(signum: int, frame: Any) -> None:
    """A stop signal reached a worker: its flow process got it too, and decides."""


class Watchdog:
    """One daemon thread that calls callbacks at deadlines on a `Clock`.

    ``schedule`` returns a handle; ``cancel(handle)`` drops it if it has not fired;
    ``schedule_pause`` is for a retry delay, which a clock moved by hand lets pass at once.
    Callbacks run on the watchdog thread and must be quick.

    The clock is the one given, or else its runtime's (the process's watchdog is a part of
    the `Runtime`; its clock is looked up at each ``schedule``: a test that installs a
    `FakeClock` moves the process's watchdog onto it, and deadlines already pending keep
    the time they had left). On the system clock the thread waits for the next deadline; on
    a clock that `drives` its alarms, such as `tether.testing.FakeClock`, it waits to be
    told that time moved, and the clock's ``advance`` returns once the callbacks that came
    due have run. ``stop`` ends the thread and drops what is pending.
    """

    def __init__(self, clock: Clock | None = None, *, runtime: Runtime | None = None) -> None:
        self._given = clock
        self._runtime = runtime
        self._stopped = False
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._pending: set[int] = set()  # handles in the heap
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._firing = False  # a callback runs now (a clock that moved waits for it)
        self._clock: Clock = clock or self._runtime_clock()
        self._driven = self._clock.drives(self)

    def _runtime_clock(self) -> Clock:
        return self._runtime.clock if self._runtime is not None else get_clock()

    def schedule(self, delay: float, callback: Callable[[], None]) -> int:
        handle = next(self._counter)
        with self._cond:
            clock = self._follow()
            self._push(clock.monotonic() + delay, handle, callback)
        return handle

    def schedule_pause(self, delay: float, callback: Callable[[], None]) -> int:
        """`schedule` for a pause, a wait in which nothing of the caller's runs (a retry delay).

        On the system clock it is a deadline like any other. On a clock that moves by hand
        it is a wait on that clock, as a thread that waits out its retry delay makes: on a
        `FakeClock` it passes at once, recorded in ``waits``, and time moves forward, so
        what came due meanwhile fires first, then ``callback`` (all on the watchdog thread;
        the caller never waits, and may hold a lock).
        """
        handle = next(self._counter)
        with self._cond:
            clock = self._follow()
            if not self._driven:
                self._push(clock.monotonic() + delay, handle, callback)
                return handle
            self._pending.add(handle)  # cancellable from now on, though not in the heap yet

            def pause() -> None:
                with self._cond:
                    if handle in self._cancelled:  # cancelled before it began: no time passes
                        self._cancelled.discard(handle)
                        self._pending.discard(handle)
                        return
                    self._push(clock.monotonic() + delay, handle, callback)
                clock.wait(threading.Event(), delay)

            self._push(clock.monotonic(), next(self._counter), pause)
        return handle

    def _push(self, due: float, handle: int, callback: Callable[[], None]) -> None:
        """Under the lock: keep ``callback`` for ``due``, and wake the thread to look."""
        heapq.heappush(self._heap, (due, handle, callback))
        self._pending.add(handle)
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._loop, name="tether-watchdog", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    def cancel(self, handle: int) -> None:
        with self._cond:
            if handle in self._pending:  # one that fired or was never made is no longer kept
                self._cancelled.add(handle)

    def stop(self) -> None:
        """End the thread (after the callback it runs now, if any); what is pending never fires."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._pending.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def clock_moved(self, clock: Clock) -> None:
        """``clock`` moved (a fake clock's ``advance``): fire what came due, then return."""
        with self._cond:
            if clock is not self._clock or self._thread is None:
                return
            self._cond.notify_all()
            if threading.current_thread() is self._thread:
                return  # a callback moved the clock: the loop fires the rest once it returns
            self._cond.wait_for(lambda: not self._firing and self._next_due() != 0)

    def _follow(self) -> Clock:
        """Under the lock: the clock to keep time on now; pending deadlines keep what they had left."""
        clock = self._given or self._runtime_clock()
        if clock is not self._clock:
            then, now = self._clock.monotonic(), clock.monotonic()
            self._heap = [(due - then + now, handle, callback) for due, handle, callback in self._heap]
            heapq.heapify(self._heap)
            self._clock = clock
            self._driven = clock.drives(self)
        return clock

    def _next_due(self) -> float | None:
        """Under the lock: how long until the next deadline (0 if it has come), None if there is none."""
        while self._heap and self._heap[0][1] in self._cancelled:
            handle = heapq.heappop(self._heap)[1]
            self._cancelled.discard(handle)
            self._pending.discard(handle)
        if not self._heap:
            return None
        return max(0.0, self._heap[0][0] - self._clock.monotonic())

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._firing = False
                self._cond.notify_all()  # a clock that moved may be waiting for this callback
                while True:
                    if self._stopped:
                        return
                    remaining = self._next_due()
                    if remaining == 0:
                        _, handle, callback = heapq.heappop(self._heap)
                        self._pending.discard(handle)
                        self._firing = True
                        break
                    # On a driven clock, time moves only when the clock says so.
                    self._cond.wait(None if self._driven else remaining)
            try:
                callback()
            except Exception:  # a failing callback must not kill the watchdog
                logging.getLogger("tether").exception("A watchdog callback failed: %r", callback)
            del callback


#: The process's watchdog (the runtime's, on the runtime's clock).
watchdog = Part("watchdog", lambda runtime: Watchdog(runtime=runtime), close=Watchdog.stop)
