"""Reaping never runs a flow: while a reaper is loaded or called, a flow call stops instead of running.

`tether reap` imports the module a reaper is defined in, or loads the script it
came from. A script without an ``if __name__ == "__main__":`` guard calls its flow
at its top level, so loading it would run the user's whole flow again inside
``reap``. `reaping` marks the code it wraps (a context variable, so other threads
and flows of the process are not touched), and `refuse_flow_call`, which every
flow call goes through, raises `FlowCalledWhileReaping` there: the flow does not
run, and the loading stops at that line. The reap loader keeps what the script
defined above it (the reaper, normally); see `tether.store._reap`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_reaping: ContextVar[str | None] = ContextVar("tether_reaping", default=None)


class FlowCalledWhileReaping(BaseException):
    """A flow was called while a reaper was loaded or run; it did not run.

    A BaseException, like SystemExit: a script's ``try: main() except Exception:``
    around the call must not swallow it and go on loading.
    """

    def __init__(self, flow_name: str, reaper: str) -> None:
        self.flow_name = flow_name
        self.reaper = reaper
        super().__init__(
            f"Flow {flow_name!r} was not run: it was called while tether reap loaded or ran the reaper "
            f"{reaper!r}, and reaping never runs a flow. A flow called at the top level of a script runs "
            'whenever the script is loaded; call it under `if __name__ == "__main__":` instead.'
        )


@contextmanager
def reaping(reaper: str) -> Iterator[None]:
    """Within this block, on this thread (and context), flow calls raise `FlowCalledWhileReaping`."""
    token = _reaping.set(reaper)
    try:
        yield
    finally:
        _reaping.reset(token)


def refuse_flow_call(flow_name: str) -> None:
    """Raise `FlowCalledWhileReaping` if a reaper is being loaded or run here; else nothing."""
    reaper = _reaping.get()
    if reaper is not None:
        raise FlowCalledWhileReaping(flow_name, reaper)
