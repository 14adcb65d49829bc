"""Run names from ``flow_run_name=`` / ``task_run_name=``: a template or a callable.

A template is formatted with the run's parameters, defaults included (``"load-{table}"``,
``"{date:%Y-%m-%d}"``, ``"{dataset.name}"``); a callable is called with no arguments (or,
if it takes one named ``parameters``, with the run's parameters, as Prefect does for
``task_run_name``) and may read ``tether.runtime`` (``task_run.parameters``...), which
answers for the run being named while the name is made, as in Prefect. The name is made
once, when the run is created: a future among the parameters is named as a future, not as
its value (Prefect renames the run once it starts).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from tether._context import RunContext, current_run
from tether._errors import UsageError

RunName = str | Callable[..., str]  # a template, or a function of no arguments (or of parameters=)

#: The run being named, while its name is made: `tether.runtime` answers for it.
_naming: ContextVar[RunContext | None] = ContextVar("tether_naming", default=None)


def runtime_context() -> RunContext | None:
    """The run `tether.runtime` answers for: the one being named, else the current one."""
    return _naming.get() or current_run.get()


_takes: dict[Any, bool] = {}


def _takes_parameters(fn: Callable[..., str]) -> bool:
    """Whether ``fn`` has a parameter named ``parameters`` (looked up once per function)."""
    try:
        return _takes[fn]
    except (KeyError, TypeError):
        pass
    try:
        takes = "parameters" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes = False
    try:
        _takes[fn] = takes
    except TypeError:  # an unhashable callable: looked up each time
        pass
    return takes


def check_run_name(owner: str, option: str, value: Any) -> RunName | None:
    if value is None or isinstance(value, str) or callable(value):
        checked: RunName | None = value
        return checked
    raise UsageError(
        f"{owner}: {option}={value!r} must be a template string such as \"load-{{table}}\" "
        "(formatted with the run's parameters) or a function of no arguments returning the name."
    )


def render_run_name(owner: str, option: str, template: RunName, parameters: dict[str, Any], ctx: RunContext) -> str:
    """The name ``template`` gives a run with these parameters (defaults applied by the
    caller); `UsageError` if a template names no parameter. A callable's own errors are its."""
    if callable(template):
        token = _naming.set(ctx)
        try:
            name = template(parameters=parameters) if _takes_parameters(template) else template()
        finally:
            _naming.reset(token)
        if not isinstance(name, str):
            raise UsageError(f"{owner}: {option}={template!r} returned {name!r}; a run name must be a str.")
        return name
    try:
        return template.format(**parameters)
    except KeyError as exc:
        raise UsageError(
            f"{owner}: {option}={template!r} names {{{exc.args[0]}}}, which is not one of its "
            f"parameters ({', '.join(parameters) or 'none'}). Use a parameter's name in the braces."
        ) from None
