"""``tether.runtime.deployment``: the deployment of a run ``tether serve`` started (``name``,
``parameters``, ``version``); empty in a flow run that was called directly, as in Prefect."""

from __future__ import annotations

from typing import Any

from tether._deployment_context import current_deployment_run
from tether._run_names import runtime_context
from tether._runtime_env import with_env_mocks

__all__ = ["flow_run_id", "id", "name", "parameters", "version"]  # noqa: F822 - answered by __getattr__

_ATTRIBUTES: dict[str, Any] = {"id": None, "name": None, "version": None, "flow_run_id": None, "parameters": {}}


def _read(attribute: str) -> Any:
    if attribute not in _ATTRIBUTES:
        raise AttributeError(f"tether.runtime.deployment has no attribute {attribute!r}; it has {', '.join(sorted(_ATTRIBUTES))}.")
    if attribute == "flow_run_id":  # the flow run asking, as in Prefect
        ctx = runtime_context()
        return None if ctx is None else ctx.flow_run.record.id
    served = current_deployment_run()
    if served is not None and attribute in ("id", "name"):
        return served.name  # a deployment is named by its name; there is no server to give it another id
    if served is not None and attribute in ("parameters", "version"):
        return dict(served.parameters) if attribute == "parameters" else served.version
    value = _ATTRIBUTES[attribute]
    return value.copy() if isinstance(value, dict) else value


__getattr__ = with_env_mocks("deployment", _read)
