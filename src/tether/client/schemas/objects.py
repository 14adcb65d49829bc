"""Prefect's ``prefect.client.schemas.objects``: the types a hook receives.

A flow hook is called as ``hook(flow, flow_run, state)`` and a task hook as
``hook(task, task_run, state)``; these are the types of those arguments.
"""

from tether._core import State, StateType
from tether._flow import FlowFunction as Flow  # Prefect 3's Flow is the object @flow makes
from tether._run_views import FlowRun, TaskRun
from tether._task import Task

__all__ = ["Flow", "FlowRun", "State", "StateType", "Task", "TaskRun"]
