"""``tether.runtime.flow_run``: the current flow run (``id``, ``name``, ``parameters``...)."""

from __future__ import annotations

import datetime
from typing import Any

from tether._deployment_context import current_deployment_run
from tether._run_names import runtime_context
from tether._run_views import FlowRun
from tether._runtime_env import with_env_mocks

__all__ = [  # noqa: F822 - answered by __getattr__
    "flow_name",
    "id",
    "name",
    "parameters",
    "parent_deployment_id",
    "parent_flow_run_id",
    "root_flow_run_id",
    "run_count",
    "scheduled_start_time",
    "tags",
]

_OUTSIDE: dict[str, Any] = {
    "id": None,
    "name": None,
    "flow_name": None,
    "parameters": {},
    "parent_flow_run_id": None,
    "parent_deployment_id": None,
    "root_flow_run_id": None,
    "run_count": 0,
    "tags": [],
    "job_variables": {},
    "ui_url": None,
    "api_url": None,
}


def _current() -> FlowRun | None:
    ctx = runtime_context()
    return None if ctx is None else FlowRun(ctx.flow_run)


def _read(attribute: str) -> Any:
    run = _current()
    if attribute == "scheduled_start_time":
        served = current_deployment_run()
        if served is not None and run is not None and run.parent_flow_run_id is None:
            return served.scheduled_start  # the deployment's run: the time it was scheduled for
        return datetime.datetime.now(datetime.timezone.utc) if run is None else run.expected_start_time
    if attribute not in _OUTSIDE:
        raise AttributeError(f"tether.runtime.flow_run has no attribute {attribute!r}; it has {', '.join(sorted([*_OUTSIDE, 'scheduled_start_time']))}.")
    if run is None:
        value = _OUTSIDE[attribute]
        return value.copy() if isinstance(value, (dict, list)) else value
    if attribute == "root_flow_run_id":
        root = runtime_context().flow_run  # type: ignore[union-attr]
        parent = getattr(root, "parent", None)  # the engine's flow runs know it; a remote worker's stand-in does not
        while parent is not None:
            root, parent = parent, getattr(parent, "parent", None)
        return root.record.id
    if attribute == "parent_flow_run_id":
        return run.parent_flow_run_id
    if attribute in ("parent_deployment_id", "ui_url", "api_url"):
        return None
    if attribute == "job_variables":
        return {}
    return getattr(run, attribute)


__getattr__ = with_env_mocks("flow_run", _read)
