"""The checks of runners' constructor arguments, with one error style (`UsageError`).

A bad argument fails where the runner is made, naming the runner and the argument,
saying what the argument is for and the call that works. Nothing here starts a runner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether._errors import UsageError


def check_count(runner: str, argument: str, value: Any, counts: str, default: str) -> int | None:
    """``value`` if it is None or a whole number >= 1 (``counts``: what it counts; ``default``:
    what None means), else a `UsageError`."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise UsageError(
        f"{runner}({argument}={value!r}) cannot be made: {argument} is the number of {counts}, so it must be "
        f"a whole number of at least 1. Pass one, as in {runner}({argument}=4), or leave it out for {default}."
    )


def check_options(runner: str, argument: str, value: Any, goes_to: str) -> dict[str, Any]:
    """``value`` as a new dict if it is None or a mapping with string keys, else a `UsageError`."""
    if value is None:
        return {}
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return dict(value)
    raise UsageError(
        f"{runner}({argument}={value!r}) cannot be made: {argument} holds keyword arguments for {goes_to}, "
        f"so it must be a dict of names to values, as in {runner}({argument}={{...}}), or None."
    )


def check_address(runner: str, value: Any, what: str) -> str | None:
    """``value`` if it is None or a string, else a `UsageError`."""
    if value is None or isinstance(value, str):
        return value
    raise UsageError(
        f"{runner}(address={value!r}) cannot be made: address is {what}, so it must be a string, "
        f"or None for a local one of the runner's own."
    )
