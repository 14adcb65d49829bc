"""``tether.runtime.task_run``: the current task run (``id``, ``name``, ``task_name``, ``parameters``...)."""

from __future__ import annotations

from typing import Any

from tether._run_names import runtime_context
from tether._run_views import TaskRun
from tether._runtime_env import with_env_mocks

__all__ = ["id", "name", "parameters", "run_count", "tags", "task_name"]  # noqa: F822 - answered by __getattr__

_OUTSIDE: dict[str, Any] = {"id": None, "name": None, "task_name": None, "parameters": {}, "run_count": 0, "tags": []}


def _read(attribute: str) -> Any:
    if attribute not in _OUTSIDE:
        raise AttributeError(f"tether.runtime.task_run has no attribute {attribute!r}; it has {', '.join(sorted(_OUTSIDE))}.")
    ctx = runtime_context()
    if ctx is None or ctx.task_run is None:
        value = _OUTSIDE[attribute]
        return value.copy() if isinstance(value, (dict, list)) else value
    return getattr(TaskRun(ctx.task_run), attribute)


__getattr__ = with_env_mocks("task_run", _read)
