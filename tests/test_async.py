"""Async tasks and async flows: the same engine as sync ones, with a thin async shell.

Async tasks submitted anywhere run on the one event loop the engine keeps in a
thread of its own; async flows are run with ``asyncio.run(my_flow())`` as in Prefect.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from tether import flow, get_run_logger, task, unmapped
from tether._core import InMemoryRecorder, LogEmitted, RunCreated
from tether.runners import ThreadPoolRunner


def created(recorder: InMemoryRecorder, kind: str, name: str | None = None) -> list[RunCreated]:
    return [e for e in recorder.events if isinstance(e, RunCreated) and e.kind == kind and (name is None or e.name == name)]


@task
async def double(x):
    await asyncio.sleep(0)
    return 2 * x


@task
async def where_am_i():
    await asyncio.sleep(0)
    return asyncio.get_running_loop(), threading.current_thread().name


@task
def plus_one(x):
    return x + 1


@task
async def fail_async(message):
    await asyncio.sleep(0)
    raise ValueError(message)


# -- async flows --------------------------------------------------------------------------


def test_an_async_flow_runs_with_asyncio_run(runner):
    @flow(task_runner=runner)
    async def pipeline(x):
        a = await double(x)
        return a + 1

    assert asyncio.run(pipeline(3)) == 7


def test_an_async_flow_returns_its_state(runner):
    @flow(task_runner=runner)
    async def pipeline():
        return await double(21)

    state = asyncio.run(pipeline(return_state=True))
    assert state.is_completed()
    assert state.result() == 42


def test_a_failing_async_flow_raises_and_is_failed(runner):
    @flow(task_runner=runner)
    async def pipeline():
        await asyncio.sleep(0)
        raise KeyError("async body")

    with pytest.raises(KeyError, match="async body"):
        asyncio.run(pipeline())
    state = asyncio.run(pipeline(return_state=True))
    assert state.is_failed()
    assert "async body" in state.message


def test_an_async_flow_can_call_sync_tasks_and_submit_both_kinds(runner):
    @flow(task_runner=runner)
    async def pipeline():
        a = plus_one(1)  # a sync task called in an async flow returns its value
        b = plus_one.submit(a)
        c = double.submit(b)
        d = await double(c.result())
        return a, b.result(), c.result(), d

    assert asyncio.run(pipeline()) == (2, 3, 6, 12)


def test_an_awaited_async_task_that_fails_raises_in_the_flow(runner):
    @flow(task_runner=runner)
    async def pipeline():
        with pytest.raises(ValueError, match="nope"):
            await fail_async("nope")
        state = await fail_async("quiet", return_state=True)
        return state.is_failed()

    assert asyncio.run(pipeline()) is True


def test_awaited_async_tasks_run_concurrently_with_gather(runner):
    # Each task waits for the other: this finishes only if both run at once on one loop.
    holder: dict[str, asyncio.Event] = {}

    @task
    async def meet(me, other):
        holder.setdefault(me, asyncio.Event()).set()
        await asyncio.wait_for(holder.setdefault(other, asyncio.Event()).wait(), 5)
        return me

    @flow(task_runner=runner)
    async def pipeline():
        return await asyncio.gather(meet("a", "b"), meet("b", "a"))

    assert asyncio.run(pipeline()) == ["a", "b"]


def test_an_async_subflow_is_linked_to_its_async_parent(runner, recorder):
    @flow(task_runner=runner)
    async def child(x):
        return await double(x)

    @flow(task_runner=runner)
    async def parent():
        return await child(1) + await child(2)

    assert asyncio.run(parent()) == 6
    [parent_run] = created(recorder, "flow", "parent")
    children = created(recorder, "flow", "child")
    assert len(children) == 2
    assert {c.parent_id for c in children} == {parent_run.run_id}


def test_an_async_flow_waits_for_its_submitted_tasks(runner):
    finished = []

    @task
    async def slow():
        await asyncio.sleep(0)
        finished.append(True)

    @flow(task_runner=runner)
    async def pipeline():
        slow.submit()
        return "body done"

    assert asyncio.run(pipeline()) == "body done"
    assert finished == [True]


# -- async tasks in sync flows ------------------------------------------------------------


def test_async_tasks_submitted_from_a_sync_flow(runner):
    @flow(task_runner=runner)
    def pipeline():
        futures = [double.submit(i) for i in range(4)]
        chained = double.submit(futures[3])
        return [f.result() for f in futures], chained.result()

    assert pipeline() == ([0, 2, 4, 6], 12)


def test_async_tasks_called_from_a_sync_flow_return_values(runner):
    @flow(task_runner=runner)
    def pipeline():
        return double(5), plus_one(double(1))

    assert pipeline() == (10, 3)


def test_an_async_task_maps(runner):
    @task
    async def scale(x, factor):
        return x * factor

    @flow(task_runner=runner)
    def pipeline():
        return scale.map([1, 2, 3], unmapped(10)).result()

    assert pipeline() == [10, 20, 30]


def test_a_failing_async_task_fails_its_run_and_its_downstream(runner):
    ran = []

    @task
    def after(x):
        ran.append(x)

    @flow(task_runner=runner)
    def pipeline():
        bad = fail_async.submit("async broke")
        down = after.submit(bad)
        error = bad.result(raise_on_failure=False)
        down.result(raise_on_failure=False)
        return repr(error), down.state.name, down.state.message

    error, name, message = pipeline()
    assert error == "ValueError('async broke')"
    assert name == "Failed"
    assert "'fail_async'" in message
    assert ran == []


def test_async_tasks_go_through_the_same_state_machine(runner, recorder):
    attempts = []

    @task(retries=1)
    async def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("first try")
        return "second try"

    @flow(task_runner=runner)
    def pipeline():
        future = flaky.submit()
        return future.result(), future.task_run_id

    value, run_id = pipeline()
    assert value == "second try"
    assert recorder.states_of(run_id) == ["Running", "AwaitingRetry", "Retrying", "Completed"]


def test_get_run_logger_inside_an_async_task(runner, recorder):
    @task
    async def chatty():
        get_run_logger().info("async hello")

    @flow(task_runner=runner)
    def pipeline():
        return chatty.submit().task_run_id

    run_id = pipeline()
    [log] = [e for e in recorder.events if isinstance(e, LogEmitted) and e.message == "async hello"]
    assert log.run_id == run_id


# -- one engine loop ----------------------------------------------------------------------


def test_submitted_async_tasks_share_one_persistent_engine_loop(runner):
    @flow(task_runner=runner)
    def pipeline():
        submitted = [where_am_i.submit() for _ in range(3)]
        called = where_am_i()
        return [f.result() for f in submitted] + [called]

    first = pipeline()
    second = pipeline()  # another flow run: still the same loop
    loops = {id(loop) for loop, _ in first + second}
    assert len(loops) == 1
    loop, thread_name = first[0]
    assert loop.is_running()
    assert not loop.is_closed()
    assert thread_name != threading.current_thread().name
    assert all(name == thread_name for _, name in first + second)


def test_async_tasks_submitted_from_async_flows_use_the_engine_loop_too(runner):
    @flow(task_runner=ThreadPoolRunner())
    def sync_pipeline():
        return where_am_i.submit().result()

    @flow(task_runner=runner)
    async def async_pipeline():
        return where_am_i.submit().result()

    engine_loop, _ = sync_pipeline()
    loop, _ = asyncio.run(async_pipeline())
    assert loop is engine_loop


def test_submitted_async_tasks_run_concurrently_on_the_engine_loop(runner):
    holder: dict[str, asyncio.Event] = {}

    @task
    async def meet(me, other):
        holder.setdefault(me, asyncio.Event()).set()
        await asyncio.wait_for(holder.setdefault(other, asyncio.Event()).wait(), 5)
        return me

    @flow(task_runner=runner)
    def pipeline():
        a = meet.submit("a", "b")
        b = meet.submit("b", "a")
        return a.result(), b.result()

    assert pipeline() == ("a", "b")


def test_awaited_async_tasks_in_one_flow_share_a_loop(runner):
    @flow(task_runner=runner)
    async def pipeline():
        first = await where_am_i()
        second = await where_am_i()
        return first[0] is second[0]

    assert asyncio.run(pipeline()) is True


# -- outside a flow -----------------------------------------------------------------------


def test_an_async_task_outside_a_flow_is_a_coroutine_that_runs_it_as_a_task_run(recorder):
    # As in Prefect 3 (was a plain coroutine, with no record): awaited, it is a task run with no flow run.
    assert asyncio.run(double(4)) == 8
    assert asyncio.run(double.fn(5)) == 10  # .fn stays the plain coroutine function
    [created] = recorder.runs("task")
    assert (created.name, created.flow_run_id, created.parameters) == ("double", None, {"x": 4})
    assert [e.new.name for e in recorder.state_changes(created.run_id)] == ["Running", "Completed"]
