"""Run contexts, under Prefect's module path ``prefect.context``.

`FlowRunContext.get()` and `TaskRunContext.get()` return the current run's context
(None outside one); `get_run_context()` returns the innermost. A ``cache_key_fn``
receives a `TaskRunContext`. The names also serve as type annotations. `tags` is here
too, where Prefect defines it.
"""

from tether._run_views import FlowRunContext, TaskRunContext, get_run_context
from tether._task import tags

__all__ = ["FlowRunContext", "TaskRunContext", "get_run_context", "tags"]
