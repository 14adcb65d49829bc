"""Prefect semantics tether keeps (issue #15 items 4 and 5): which failures count as looked
at, states returned by flows and tasks, `.map(return_state=True)`, flows and tasks on methods,
`State[int]`, a task called outside a flow, Prefect 1 operators on graph nodes, `State.timestamp`."""

from __future__ import annotations

import asyncio
import datetime
import typing

import pytest

from tether import Flow, flow, task, wait, as_completed
from tether.states import Completed, Failed, State


@task
def fails(x: int = 0) -> int:
    raise ValueError(f"bad {x}")


@task
def double(x: int) -> int:
    return 2 * x


# -- item 4: what counts as looking at a failure ------------------------------------------


def test_a_flow_returning_a_state_decides_its_own_state() -> None:
    @flow
    def f() -> State:
        fails.submit()
        return Completed(message="fine")

    state = f(return_state=True)
    assert state.is_completed() and state.message == "fine"


def test_wait_then_state_counts_as_looked_at() -> None:
    @flow
    def f() -> list[str]:
        futures = [fails.submit(1), double.submit(2)]
        done, _ = wait(futures)
        return [fut.state.name for fut in futures]

    assert sorted(f()) == ["Completed", "Failed"]


def test_state_alone_counts_as_looked_at() -> None:
    @flow
    def f() -> str:
        future = fails.submit()
        future.wait()
        return future.state.name

    assert f() == "Failed"


def test_as_completed_counts_as_looked_at() -> None:
    @flow
    def f() -> int:
        return sum(1 for _ in as_completed([fails.submit(1), fails.submit(2)]))

    assert f() == 2


def test_an_unlooked_at_failure_still_fails_the_flow() -> None:
    @flow
    def f() -> int:
        fails.submit()
        return 1

    assert f(return_state=True).is_failed()


def test_a_flow_returning_states_fails_if_one_failed() -> None:
    @flow
    def f() -> list[State]:
        return [fails(return_state=True), double(1, return_state=True)]

    state = f(return_state=True)
    assert state.is_failed() and "1/2" in (state.message or "")


def test_a_state_inside_returned_data_stays_a_state() -> None:
    @flow
    def f() -> tuple[str, State]:
        return "bar", fails(return_state=True)

    value, inner = f()
    assert value == "bar" and inner.is_failed()


# -- item 5: semantics ----------------------------------------------------------------------


def test_a_custom_failed_returned_by_a_task_or_flow_is_kept_as_given() -> None:
    @task
    def gives_up() -> State:
        return Failed(message="custom")

    @flow
    def f() -> State:
        inner = gives_up(return_state=True)
        assert inner.is_failed() and inner.message == "custom"
        return Failed(message="flow custom")

    state = f(return_state=True)
    assert state.is_failed() and state.message == "flow custom"


def test_state_is_generic_in_annotations_as_in_prefect() -> None:
    @task
    def one() -> int:
        return 1

    @flow
    def annotated() -> State[int]:
        return one(return_state=True)

    assert typing.get_type_hints(annotated.fn)["return"] == State[int]
    assert State[int].__origin__ is State
    state = annotated(return_state=True)
    assert isinstance(state, State) and state.is_completed()


def test_state_timestamp_is_a_utc_datetime_as_in_prefect() -> None:
    before = datetime.datetime.now(datetime.timezone.utc)

    @flow
    def timed() -> int:
        return double.submit(2).result()

    state = timed(return_state=True)
    after = datetime.datetime.now(datetime.timezone.utc)
    assert isinstance(state.timestamp, datetime.datetime)
    assert state.timestamp.tzinfo is datetime.timezone.utc
    assert before <= state.timestamp <= after
    assert Completed(1, message="x").copy(message="y").timestamp.tzinfo is datetime.timezone.utc


def test_map_with_return_state_gives_the_final_states_and_counts_them_as_looked_at() -> None:
    @flow
    def mapped() -> list[str]:
        good = double.map([1, 2], return_state=True)
        bad = fails.map([3, 4], return_state=True)
        assert all(isinstance(s, State) for s in good + bad)
        assert [s.result() for s in good] == [2, 4]
        return [s.name for s in bad]

    state = mapped(return_state=True)
    assert state.is_completed(), state  # the failures were looked at through their states
    assert state.result() == ["Failed", "Failed"]


class Pipeline:
    factor = 3

    def __init__(self, offset: int) -> None:
        self.offset = offset

    @flow
    def run(self, x: int) -> int:
        return double(x) + self.offset

    @classmethod
    @flow
    def scaled(cls, x: int) -> int:
        return double(x) * cls.factor

    @staticmethod
    @flow
    def plain(x: int) -> int:
        return double(x)

    @flow
    async def later(self, x: int) -> int:
        return double(x) + self.offset


def test_flows_on_instance_class_and_static_methods_as_in_prefect() -> None:
    pipeline = Pipeline(offset=1)
    assert pipeline.run(2) == 5
    assert Pipeline.scaled(2) == 12
    assert Pipeline.plain(2) == 4 and pipeline.plain(2) == 4
    assert asyncio.run(pipeline.later(2)) == 5
    state = pipeline.run(3, return_state=True)
    assert state.is_completed() and state.result() == 7
    assert Pipeline.run.name == "run"  # the flow itself, from the class
