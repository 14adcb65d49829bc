"""Cache policies, under Prefect's module path ``prefect.cache_policies``.

``@task(cache_policy=INPUTS + TASK_SOURCE)``: see `tether._cache_policies` for what
each part contributes to a run's cache key.
"""

from tether._cache_policies import (
    DEFAULT,
    FLOW_PARAMETERS,
    INPUTS,
    NO_CACHE,
    NONE,
    RUN_ID,
    TASK_SOURCE,
    CacheKeyFnPolicy,
    CachePolicy,
    CompoundCachePolicy,
    FlowParameters,
    Inputs,
    RunId,
    TaskSource,
)

__all__ = [
    "CacheKeyFnPolicy",
    "CachePolicy",
    "CompoundCachePolicy",
    "DEFAULT",
    "FLOW_PARAMETERS",
    "FlowParameters",
    "INPUTS",
    "Inputs",
    "NONE",
    "NO_CACHE",
    "RUN_ID",
    "RunId",
    "TASK_SOURCE",
    "TaskSource",
]
