"""Runtime attributes mocked from the environment, as Prefect allows for testing.

``TETHER__RUNTIME__FLOW_RUN__NAME=nightly`` (or Prefect's ``PREFECT__RUNTIME__...``, so a
script's own test setup works unchanged) makes ``tether.runtime.flow_run.name`` answer
"nightly". A mocked attribute that exists is cast to the type of its real value (bool,
int, float, str, datetime); one that does not exist is the string itself.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any

_PREFIXES = ("TETHER__RUNTIME__", "PREFECT__RUNTIME__")


def with_env_mocks(section: str, read: Callable[[str], Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that answers from the environment first, then with ``read``."""

    def __getattr__(attribute: str) -> Any:
        raw = None if attribute.startswith("_") else _mocked(section, attribute)
        if raw is None:
            return read(attribute)
        try:
            real = read(attribute)
        except AttributeError:
            return raw
        return _cast(raw, real)

    return __getattr__


def _mocked(section: str, attribute: str) -> str | None:
    for prefix in _PREFIXES:
        value = os.environ.get(f"{prefix}{section.upper()}__{attribute.upper()}")
        if value is not None:
            return value
    return None


def _cast(raw: str, like: Any) -> Any:
    if isinstance(like, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(like, (int, float)):
        return type(like)(raw)
    if isinstance(like, datetime.datetime):
        return datetime.datetime.fromisoformat(raw)
    return raw
