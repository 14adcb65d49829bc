"""Crash-test points: a process told ``TETHER_SERVE_FAULT=NAME:FILE`` writes FILE at point NAME and waits there.

The crash tests of ``tether serve`` SIGKILL a process once it has reached a given step
(before or after a claim, after a run ended but before it was recorded); this is how
they know it has. Without the variable, a fault point does nothing.
"""

from __future__ import annotations

import os
import threading


def fault_point(name: str) -> None:
    wanted = os.environ.get("TETHER_SERVE_FAULT", "")
    point, _, marker = wanted.partition(":")
    if point != name or not marker:
        return
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    threading.Event().wait()
