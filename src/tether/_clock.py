"""Time, injectable: everything in tether that waits or measures time asks a `Clock`.

`SystemClock` is the real one; the process's clock is its runtime's
(`_runtime.get_clock()`). `tether.testing.FakeClock` lets tests move time by hand, so
retries, leases, timeouts and grace periods are tested without sleeping: deadlines
kept by a `_interrupt.Watchdog` are fired by the clock they are on (`Clock.drives`).

This module keeps no deadlines itself (the watchdog does) and starts no thread.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Alarms(Protocol):
    """Deadlines kept on a clock (a `Watchdog`), as a clock that moves by hand sees them."""

    def clock_moved(self, clock: Clock) -> None:
        """``clock``'s time moved: run the callbacks that came due on it, and return once
        they have run (nothing if these deadlines are kept on another clock now)."""
        ...


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (for records)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for deadlines)."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` for ``event``; True if it was set."""
        ...

    def drives(self, alarms: Alarms) -> bool:
        """Take on ``alarms``, deadlines kept on this clock: True if this clock tells them
        when its time moves (`Alarms.clock_moved`), False if its time passes on its own and
        they must wait for it themselves."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(seconds)

    def drives(self, alarms: Alarms) -> bool:
        return False  # real time passes by itself: a watchdog waits for its deadlines

