"""`@flow`: the decorator, and the `FlowFunction` it makes.

A `FlowFunction` checks its options once, at decoration, into a `FlowOptions` record
(``.options``), the only thing of it the engine reads. Calling it runs a flow run
through the engine's shells (`_engine._flow_shells`); every decision (retry, cancel,
final state) is `FlowRun`'s.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from tether._deployment import Deployment
from tether._engine._flow_shells import run_flow_async, run_flow_sync
from tether._options import (
    FlowOptions,
    Hooks,
    ParameterBinder,
    check_callable,
    check_flag,
    check_hooks,
    check_retries,
    check_text,
    check_timeout,
    check_unknown,
)
from tether._reaping import refuse_flow_call
from tether._run_names import RunName, check_run_name
from tether._serve import serve_flow
from tether._validation import ParameterValidator
from tether.runners import TaskRunner, ThreadPoolRunner

R = TypeVar("R")

FLOW_OPTIONS = (
    "name",
    "retries",
    "retry_delay_seconds",
    "timeout_seconds",
    "task_runner",
    "log_prints",
    "on_completion",
    "on_failure",
    "on_cancellation",
    "on_crashed",
    "description",
    "version",
    "flow_run_name",
    "validate_parameters",
    "persist_result",
    "on_running",
)


class FlowFunction(Generic[R]):
    """A function decorated with `@flow`. Calling it runs a flow run (a subflow inside a flow)."""

    def __init__(
        self,
        fn: Callable[..., R],
        name: str | None = None,
        retries: int = 0,
        retry_delay_seconds: float | list[float] = 0,
        timeout_seconds: float | None = None,
        task_runner: TaskRunner | type[TaskRunner] | None = None,
        log_prints: bool = False,
        on_completion: list[Callable[..., Any]] | None = None,
        on_failure: list[Callable[..., Any]] | None = None,
        on_cancellation: list[Callable[..., Any]] | None = None,
        on_crashed: list[Callable[..., Any]] | None = None,
        description: str | None = None,
        version: str | None = None,
        flow_run_name: RunName | None = None,
        validate_parameters: bool = True,
        persist_result: bool | None = None,
        on_running: list[Callable[..., Any]] | None = None,
    ) -> None:
        check_callable("flow", fn)
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", type(fn).__name__))
        owner = f"Flow {self.name!r}"
        self.retries, self.retry_delays = check_retries(owner, retries, retry_delay_seconds)
        self.timeout_seconds = check_timeout(owner, timeout_seconds)
        if task_runner is None:
            task_runner = ThreadPoolRunner()
        elif inspect.isclass(task_runner) and issubclass(task_runner, TaskRunner):
            task_runner = task_runner()
        if not isinstance(task_runner, TaskRunner):
            raise TypeError(
                f"{owner}: task_runner={task_runner!r} is not a runner. Use one of "
                "tether.runners: ThreadPoolRunner(), ProcessPoolRunner(), DaskRunner(), RayRunner()."
            )
        self.task_runner = task_runner
        self.log_prints = log_prints
        self.on_completion = Hooks(check_hooks(owner, "on_completion", on_completion), self, "on_completion")
        self.on_failure = Hooks(check_hooks(owner, "on_failure", on_failure), self, "on_failure")
        self.on_cancellation = Hooks(check_hooks(owner, "on_cancellation", on_cancellation), self, "on_cancellation")
        self.on_crashed = Hooks(check_hooks(owner, "on_crashed", on_crashed), self, "on_crashed")
        self.on_running = Hooks(check_hooks(owner, "on_running", on_running), self, "on_running")
        self.description = check_text(owner, "description", description) or inspect.getdoc(fn)
        self.version = check_text(owner, "version", version)
        self.flow_run_name = check_run_name(owner, "flow_run_name", flow_run_name)
        # Prefect's names: the flag is should_validate_parameters, validate_parameters() the method.
        self.should_validate_parameters = bool(check_flag(owner, "validate_parameters", validate_parameters, optional=False))
        # Prefect's meaning: the flow keeps its tasks' results, so tasks without cache options cache.
        self.persist_result = check_flag(owner, "persist_result", persist_result)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self._binder = ParameterBinder(owner, self.signature)
        validator = ParameterValidator(owner, fn, self.signature)
        self._validator = validator if self.should_validate_parameters and validator.needed else None
        self._owner = owner
        functools.update_wrapper(self, fn)
        #: What the engine reads (it never names `FlowFunction`): set last, so nothing of ``fn`` covers it.
        self.options = FlowOptions(
            self.name, owner, fn, self.is_async, self.signature, self._binder, self._validator, self.retries,
            self.retry_delays, self.timeout_seconds, self.task_runner, self.log_prints, self.persist_result,
            self.flow_run_name, self.on_completion, self.on_failure, self.on_cancellation, self.on_crashed,
            self.on_running,
        )

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return self._binder.bind(args, kwargs)

    def __call__(self, *args: Any, return_state: bool = False, **kwargs: Any) -> Any:
        refuse_flow_call(self.name)  # tether reap loading a script that calls its flow at the top level
        if self.is_async:
            return run_flow_async(self, args, kwargs, return_state)
        return run_flow_sync(self, args, kwargs, return_state)

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        """A flow on a method, as Prefect allows: ``obj.method(...)`` runs it with ``obj``
        first (``@classmethod`` on top of ``@flow`` binds the class the same way)."""
        if instance is None:
            return self
        return types.MethodType(self, instance)

    def with_options(self, **options: Any) -> FlowFunction[R]:
        """A copy of this flow with some options changed."""
        check_unknown("flow", options, FLOW_OPTIONS)
        current = {
            "name": self.name,
            "retries": self.retries,
            "retry_delay_seconds": list(self.retry_delays),
            "timeout_seconds": self.timeout_seconds,
            "task_runner": self.task_runner,
            "log_prints": self.log_prints,
            "on_completion": list(self.on_completion),
            "on_failure": list(self.on_failure),
            "on_cancellation": list(self.on_cancellation),
            "on_crashed": list(self.on_crashed),
            "description": self.description,
            "version": self.version,
            "flow_run_name": self.flow_run_name,
            "validate_parameters": self.should_validate_parameters,
            "persist_result": self.persist_result,
            "on_running": list(self.on_running),
        }
        return FlowFunction(self.fn, **{**current, **options})

    def check_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """``parameters`` bound to the signature, and validated from the type hints if this flow validates."""
        bound = self.bind((), parameters)
        return bound if self._validator is None else self._validator.validate(bound)

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """``parameters`` checked against the signature and coerced from the type hints, as a
        call would (Prefect's method); `ParameterError` if they do not fit."""
        bound = self.bind((), parameters)
        return bound if self._validator is None else self._validator.validate(bound)

    def to_deployment(self, name: str | None = None, **options: Any) -> Deployment:
        """A deployment of this flow for `tether.serve` (``cron=``/``interval=``/``rrule=``/``schedules=``,
        ``timezone=``, ``parameters=``, ``tags=``, ``catchup=``, ``overlap=``...); checked now, written nothing."""
        return Deployment(self, name or self.name, **options)

    def serve(self, name: str | None = None, *, limit: int | None = None, **options: Any) -> int:
        """Run this flow on its schedules under ``name`` until SIGTERM or Ctrl-C (blocks); the exit code."""
        return serve_flow(self, name, limit=limit, **options)

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"


@overload
def flow(__fn: Callable[..., R]) -> FlowFunction[R]: ...


@overload
def flow(**options: Any) -> Callable[[Callable[..., R]], FlowFunction[R]]: ...


def flow(__fn: Callable[..., R] | None = None, **options: Any) -> Any:
    """Decorate a function as a flow; works bare (``@flow``) or with options."""
    check_unknown("flow", options, FLOW_OPTIONS)
    if __fn is not None:
        return FlowFunction(__fn, **options)

    def decorate(fn: Callable[..., R]) -> FlowFunction[R]:
        return FlowFunction(fn, **options)

    return decorate
