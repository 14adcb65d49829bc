"""Every ``TETHER_*`` environment variable, parsed in one place with one error style.

Each setting is read when it is needed (tests and users change the environment between
runs), through one accessor here; a value that does not parse raises `SettingError`,
which names the variable, the value, what it accepts and the default. `Settings` is the
snapshot one flow run takes at its start.

This module does not decide what a setting does: its users do.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tether._errors import SettingError

_TRUE = ("1", "on", "true", "yes")
_FALSE = ("0", "off", "false", "no")


def _raw(name: str) -> str | None:
    """The variable's value, or None when it is unset or empty."""
    raw = os.environ.get(name)
    return raw.strip() if raw is not None and raw.strip() else None


def _bad(name: str, raw: str, accepted: str, default: object) -> SettingError:
    return SettingError(
        f"{name}={raw!r} is not {accepted}, so tether cannot use it. "
        f"Set {name} to {accepted}, or unset it for the default ({default})."
    )


def seconds(name: str, default: float, minimum: float = 0.0) -> float:
    """A duration in seconds (a number >= ``minimum``)."""
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum:  # also false for NaN
        raise _bad(name, raw, f"a number of seconds of at least {minimum:g}", f"{default:g}")
    return value


def choice(name: str, choices: tuple[str, ...], default: str) -> str:
    """One of ``choices`` (case does not matter)."""
    raw = _raw(name)
    if raw is None:
        return default
    value = raw.lower()
    if value not in choices:
        raise _bad(name, raw, "one of " + ", ".join(choices), default)
    return value


def flag(name: str, default: bool) -> bool:
    """A yes/no switch: 1/on/true/yes or 0/off/false/no."""
    raw = _raw(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise _bad(name, raw, "on or off (1/on/true/yes, 0/off/false/no)", "on" if default else "off")


# -- the settings ----------------------------------------------------------------------


def home() -> Path:
    """``TETHER_HOME``: where the SQLite store, the spool and the result cache live (``~/.tether``)."""
    raw = _raw("TETHER_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".tether"


def database_url() -> str | None:
    """``TETHER_DATABASE_URL``: a SQLAlchemy URL of the store (PostgreSQL), or None for SQLite."""
    return _raw("TETHER_DATABASE_URL")


def store_on() -> bool:
    """``TETHER_STORE``: off to record nothing (on by default)."""
    return flag("TETHER_STORE", True)


def store_writer_process() -> str:
    """``TETHER_STORE_HELPER``: when the store writes through a separate writing process:
    ``auto`` (for heavy streams), ``always`` or ``never``."""
    return choice("TETHER_STORE_HELPER", ("auto", "always", "never"), "auto")


def heartbeat_seconds() -> float:
    """``TETHER_HEARTBEAT_SECONDS``: how often open resources and running flow runs say they are alive."""
    return max(seconds("TETHER_HEARTBEAT_SECONDS", 10.0), 0.05)


def interrupt_grace_seconds() -> float:
    """``TETHER_INTERRUPT_GRACE_SECONDS``: how long an interrupted body may take to stop before it is abandoned."""
    return seconds("TETHER_INTERRUPT_GRACE_SECONDS", 10.0)


def slot_retry_seconds() -> float:
    """``TETHER_SLOT_RETRY_SECONDS``: how often a waiter for a concurrency slot looks again, besides wake-ups."""
    return seconds("TETHER_SLOT_RETRY_SECONDS", 1.0, minimum=0.001)


def slot_wakeups() -> str:
    """``TETHER_SLOT_WAKEUPS``: ``datagram`` (same-machine wake-ups, the default) or ``store`` (the store's only)."""
    return choice("TETHER_SLOT_WAKEUPS", ("datagram", "store"), "datagram")


def logging_level() -> int:
    """``TETHER_LOGGING_LEVEL``: the console's level (the run log in the store keeps INFO)."""
    raw = _raw("TETHER_LOGGING_LEVEL")
    if raw is None:
        return logging.INFO
    level = logging.getLevelName(raw.upper())
    if not isinstance(level, int):
        raise _bad("TETHER_LOGGING_LEVEL", raw, "a logging level (DEBUG, INFO, WARNING, ERROR, CRITICAL)", "INFO")
    return level


def serve_seconds(name: str, default: float) -> float:
    """``TETHER_SERVE_<NAME>_SECONDS``: one of `tether serve`'s periods."""
    return seconds(f"TETHER_SERVE_{name.upper()}_SECONDS", default)


@dataclass
class Settings:
    """The settings one flow run reads at its start."""

    #: How long a run interrupted by a timeout or a cancellation may take to stop
    #: before it is abandoned (blocked in C).
    interrupt_grace_seconds: float = 10.0

    @classmethod
    def from_env(cls) -> Settings:
        return cls(interrupt_grace_seconds=interrupt_grace_seconds())
