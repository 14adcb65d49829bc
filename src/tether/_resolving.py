"""Prefect's `resolve_futures_to_states` and `resolve_futures_to_results`: every future
inside a value (a list, dict, dataclass...), waited for and replaced by its final state or
its result. Both count as looking at the runs, so a failure seen this way is handled."""

from __future__ import annotations

from typing import Any

from tether._arguments import rewrite
from tether._futures import TaskFuture


def resolve_futures_to_states(expr: Any) -> Any:
    """``expr`` with each future replaced by its run's final state (waiting for it)."""

    def to_state(node: Any) -> Any:
        if type(node) is not TaskFuture:
            return node
        node._run.observed = True
        node.wait()
        return node.state

    return rewrite(expr, to_state)


def resolve_futures_to_results(expr: Any) -> Any:
    """``expr`` with each future replaced by its run's result; raises a failed run's error."""
    return rewrite(expr, lambda node: node.result() if type(node) is TaskFuture else node)
