"""Cache policies: what a task run's cache key is made of, as in ``prefect.cache_policies``.

A policy turns a task run (its context, its resolved inputs, its flow's parameters)
into a key, or None for "do not cache this run". The building blocks:

- `INPUTS`: the task's inputs (``INPUTS - "password"`` leaves one out);
- `TASK_SOURCE`: the task function's source code, so editing it invalidates the cache;
- `RUN_ID`: the flow run, so a result is reused within one flow run only;
- `FLOW_PARAMETERS`: the flow run's parameters;
- `NONE` (also `NO_CACHE`): never cache;
- `DEFAULT` = ``INPUTS + TASK_SOURCE + RUN_ID``;

combined with ``+`` (a key made of every part that gave one). A ``cache_key_fn`` is a
`CacheKeyFnPolicy`. As in Prefect, a key is not namespaced by the task: two tasks whose
policy sees only equal inputs (``INPUTS`` alone) share a result; ``TASK_SOURCE``, part of
``DEFAULT``, tells them apart. This module makes keys; `_cache` stores results.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from collections.abc import Callable, Iterable
from types import CodeType
from typing import TYPE_CHECKING, Any

import cloudpickle

if TYPE_CHECKING:
    from tether._run_views import TaskRunContext


def hash_objects(*values: Any) -> str | None:
    """A stable hex digest of ``values``: JSON when they are plain data or pydantic models
    (dumped as their serializers say, so a model can leave out what cannot be hashed; the
    same across processes), else cloudpickle; None when they cannot be serialised at all."""
    try:
        payload = json.dumps(values, sort_keys=True, default=_to_json).encode()
    except (TypeError, ValueError):
        try:
            payload = cloudpickle.dumps(values)
        except Exception:  # noqa: BLE001 - a lock, a socket...: not cacheable, not an error
            return None
    return hashlib.sha256(payload).hexdigest()


def _to_json(value: Any) -> Any:
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return {"__model__": type(value).__qualname__, **value.model_dump(mode="json")}
    raise TypeError(type(value).__name__)


class CachePolicy:
    """Base of the policies; ``a + b`` combines two, ``policy - "name"`` leaves an input out."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        raise NotImplementedError

    @classmethod
    def from_cache_key_fn(cls, cache_key_fn: Callable[[Any, dict[str, Any]], str | None]) -> CachePolicy:
        return CacheKeyFnPolicy(cache_key_fn)

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        if isinstance(other, _None):
            return self
        return CompoundCachePolicy([*_parts(self), *_parts(other)])

    def __sub__(self, name: str) -> CachePolicy:
        if not isinstance(name, str):
            raise TypeError(f"Only an input's name (a str) can be taken out of a cache policy, not {name!r}.")
        return self

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _parts(policy: CachePolicy) -> list[CachePolicy]:
    return list(policy.policies) if isinstance(policy, CompoundCachePolicy) else [policy]


class CompoundCachePolicy(CachePolicy):
    """Several policies: the key combines every part's key; parts that give None are left
    out, and if none gives a key the run is not cached."""

    def __init__(self, policies: Iterable[CachePolicy]) -> None:
        self.policies = tuple(policies)

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        keys = [p.compute_key(task_ctx, inputs, flow_parameters, **kwargs) for p in self.policies]
        present = [k for k in keys if k is not None]
        return hash_objects(*present) if present else None

    def __sub__(self, name: str) -> CachePolicy:
        super().__sub__(name)
        if any(isinstance(p, Inputs) for p in self.policies):
            return CompoundCachePolicy(p - name if isinstance(p, Inputs) else p for p in self.policies)
        return CompoundCachePolicy([*self.policies, Inputs(exclude=[name])])

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.policies))


class _None(CachePolicy):
    """Never cache."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        return None

    def __add__(self, other: CachePolicy) -> CachePolicy:
        return other

    def __repr__(self) -> str:
        return "NONE"


class Inputs(CachePolicy):
    """The task run's inputs (resolved, resource values left out), less ``exclude``."""

    def __init__(self, exclude: Iterable[str] = ()) -> None:
        self.exclude = list(exclude)

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        kept = {k: v for k, v in (inputs or {}).items() if k not in self.exclude}
        return hash_objects(kept) if kept else None

    def __sub__(self, name: str) -> CachePolicy:
        super().__sub__(name)
        return Inputs([*self.exclude, name])

    def __repr__(self) -> str:
        return f"INPUTS - {self.exclude!r}" if self.exclude else "INPUTS"


_source_hashes: dict[CodeType, str | None] = {}


class TaskSource(CachePolicy):
    """The task function's source (its bytecode when the source cannot be read)."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        fn = task_ctx.task.fn
        code: CodeType | None = getattr(fn, "__code__", None)
        if code is None:
            return hash_objects(type(fn).__qualname__)
        if code not in _source_hashes:  # once per function, not per run
            try:
                source: Any = inspect.getsource(fn)
            except (OSError, TypeError):
                source = code.co_code.hex()
            _source_hashes[code] = hash_objects(source)
        return _source_hashes[code]

    def __repr__(self) -> str:
        return "TASK_SOURCE"


class FlowParameters(CachePolicy):
    """The flow run's parameters."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        return hash_objects(flow_parameters) if flow_parameters else None

    def __repr__(self) -> str:
        return "FLOW_PARAMETERS"


class RunId(CachePolicy):
    """The flow run the task run belongs to: results are reused within that run only."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        return task_ctx.task_run.flow_run_id or task_ctx.task_run.id

    def __repr__(self) -> str:
        return "RUN_ID"


class StorageKeyPolicy(CachePolicy):
    """``result_storage_key=``: the result is stored, and found again, under this key, a
    template formatted with ``parameters`` (the run's, defaults included) and the run's
    ``flow_run`` and ``task_run`` (``"{parameters[city]}-{flow_run.name}"``), as in Prefect."""

    def __init__(self, template: str) -> None:
        self.template = template

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        run = task_ctx.task_run
        return self.template.format(parameters=run.parameters, task_run=run, flow_run=task_ctx.flow_run)

    def __repr__(self) -> str:
        return f"StorageKeyPolicy({self.template!r})"


class CacheKeyFnPolicy(CachePolicy):
    """A ``cache_key_fn(context, parameters)``: its key, or None for no caching."""

    def __init__(self, cache_key_fn: Callable[[Any, dict[str, Any]], str | None]) -> None:
        self.cache_key_fn = cache_key_fn

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        return self.cache_key_fn(task_ctx, inputs)

    def __repr__(self) -> str:
        return f"CacheKeyFnPolicy({self.cache_key_fn!r})"


INPUTS = Inputs()
NONE = _None()
NO_CACHE = NONE
TASK_SOURCE = TaskSource()
FLOW_PARAMETERS = FlowParameters()
RUN_ID = RunId()
DEFAULT = INPUTS + TASK_SOURCE + RUN_ID


def run_cache_key(policy: CachePolicy, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]) -> str | None:
    """The key a task run's result is cached under (the policy's, as it makes it), or None."""
    return policy.compute_key(task_ctx, inputs, flow_parameters)
