"""Reaping never runs a flow: while a reaper is loaded or called, a flow call stops instead of running.

`tether reap` imports the module a reaper is defined in, or loads the script it
came from. A script without an ``if __name__ == "__main__":`` guard calls its flow
at its top level, so loading it would run the user's whole flow again inside
``reap``. `reaping` marks the code it wraps (a context variable, so other threads
and flows of the process are not touched), and `refuse_flow_call`, which every
flow call goes through, raises `FlowCalledWhileReaping` there: the flow does not
run, and the loading stops at that line. A process that does nothing but reap (the
``tether reap`` command) marks itself whole with `reaping_process`, so a flow that
a script starts on a thread of its own does not run either. The reap loader keeps what the script
defined above it (the reaper, normally); see `tether.store._reap`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_reaping: ContextVar[str | None] = ContextVar("tether_reaping", default=None)
_reaping_process: str | None = None


class FlowCalledWhileReaping(BaseException):
    """A flow was called while a reaper was loaded or run; it did not run.

    A BaseException, like SystemExit: a script's ``try: main() except Exception:``
    around the call must not swallow it and go on loading.
    """

    def __init__(self, flow_name: str, during: str) -> None:
        self.flow_name = flow_name
        self.during = during
        super().__init__(
            f"Flow {flow_name!r} was not run: it was called while {during}, and reaping never runs a flow. "
            "A flow called at the top level of a script runs whenever the script is loaded; call it under "
            '`if __name__ == "__main__":` instead.'
        )


@contextmanager
def reaping(reaper: str) -> Iterator[None]:
    """Within this block, on this thread (and context), flow calls raise `FlowCalledWhileReaping`."""
    token = _reaping.set(f"tether reap loaded or ran the reaper {reaper!r}")
    try:
        yield
    finally:
        _reaping.reset(token)


@contextmanager
def reaping_process(what: str) -> Iterator[None]:
    """Within this block, flow calls raise `FlowCalledWhileReaping` on every thread of the process;
    ``what`` says what the process does (``"tether reap ran"``)."""
    global _reaping_process
    previous, _reaping_process = _reaping_process, what
    try:
        yield
    finally:
        _reaping_process = previous


def refuse_flow_call(flow_name: str) -> None:
    """Raise `FlowCalledWhileReaping` if a reaper is being loaded or run here; else nothing."""
    during = _reaping.get() or _reaping_process
    if during is not None:
        raise FlowCalledWhileReaping(flow_name, during)
