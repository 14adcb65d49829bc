"""Keeping Ctrl-C and SIGTERM out of the engine's own steps on the main thread.

A flow's signal handler raises KeyboardInterrupt (or `Terminated`) in its body, which
runs on the main thread, at whatever bytecode it has reached. When that is inside
tether's own code (half-way through creating a task run, or leaving a resource's
block) the exception would leave the engine's books wrong: a task run joined to a
scope that never starts, so the scope never ends and the flow waits for ever. So the
engine's steps run *shielded*: a signal that arrives meanwhile is kept, and raised
when the outermost step is over, as if it had come just after it. User code inside
a step (a resource's setup, a called task's body) runs `unshielded`, interruptible
as ever. The idea is trio's protection against KeyboardInterrupt.

Only the main thread is shielded (signal handlers run nowhere else); on any other
thread these calls cost a thread-id comparison.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_MAIN = threading.main_thread().ident


class _State:
    depth = 0
    pending: BaseException | None = None


_state = _State()


def active() -> bool:
    """True while the main thread is inside a shielded step (the handler asks)."""
    return _state.depth > 0 and threading.get_ident() == _MAIN


def defer(reason: BaseException) -> None:
    """Keep ``reason`` to raise when the shielded step is over (the first one wins)."""
    if _state.pending is None:
        _state.pending = reason


def shielded(step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``step`` so that a signal arriving meanwhile is raised only after it."""
    if threading.get_ident() != _MAIN:
        return step(*args, **kwargs)
    _state.depth += 1
    try:
        return step(*args, **kwargs)
    finally:
        _state.depth -= 1
        if _state.depth == 0 and _state.pending is not None:
            reason, _state.pending = _state.pending, None
            raise reason


def unshielded(code: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run user ``code`` inside a shielded step, interruptible (a kept signal is raised first)."""
    if threading.get_ident() != _MAIN or _state.depth == 0:
        return code(*args, **kwargs)
    depth, _state.depth = _state.depth, 0
    try:
        if _state.pending is not None:
            reason, _state.pending = _state.pending, None
            raise reason
        return code(*args, **kwargs)
    finally:
        _state.depth = depth
