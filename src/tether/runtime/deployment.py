"""``tether.runtime.deployment``: always empty, since runs here come from no deployment
(as Prefect answers for a flow run that was called directly)."""

from __future__ import annotations

from typing import Any

from tether._run_names import runtime_context

__all__ = ["flow_run_id", "id", "name", "parameters", "version"]

_ATTRIBUTES: dict[str, Any] = {"id": None, "name": None, "version": None, "flow_run_id": None, "parameters": {}}


def __getattr__(attribute: str) -> Any:
    if attribute not in _ATTRIBUTES:
        raise AttributeError(f"tether.runtime.deployment has no attribute {attribute!r}; it has {', '.join(sorted(_ATTRIBUTES))}.")
    if attribute == "flow_run_id":  # the flow run asking, as in Prefect
        ctx = runtime_context()
        return None if ctx is None else ctx.flow_run.record.id
    value = _ATTRIBUTES[attribute]
    return value.copy() if isinstance(value, dict) else value
