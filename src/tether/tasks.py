"""Tasks, under Prefect's module path ``prefect.tasks``.

`Task` and `task` are tether's; `task_input_hash` makes a cache key from a task's
inputs; `exponential_backoff` makes retry delays that double each time.
"""

from tether._cache import task_input_hash
from tether._options import exponential_backoff
from tether._task import Task, task

__all__ = ["Task", "exponential_backoff", "task", "task_input_hash"]
