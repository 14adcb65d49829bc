"""Settings read from the environment, with defaults; one object per flow run."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} must be a number of seconds.") from None


@dataclass
class Settings:
    #: How long a run interrupted by a timeout or a cancellation may take to stop
    #: before it is abandoned (blocked in C).
    interrupt_grace_seconds: float = 10.0

    @classmethod
    def from_env(cls) -> Settings:
        return cls(interrupt_grace_seconds=_float_env("TETHER_INTERRUPT_GRACE_SECONDS", 10.0))
