"""Run contexts and futures seen through the views (issue #14, M1 and M2): the Prefect
shapes answer from any run that has the views' members (the engine's, a remote worker's
stand-ins), and futures are generic in their task's return type."""

from __future__ import annotations

from tether import TaskFuture, TaskFutureList, flow, get_run_context, task
from tether.context import FlowRunContext, TaskRunContext
from tether.futures import PrefectFuture, PrefectFutureList


def test_futures_are_generic_in_the_return_type_and_stay_plain_objects():
    # Prefect code annotates with PrefectFuture[int]; at run time that was a TypeError.
    assert PrefectFuture[int].__origin__ is TaskFuture
    assert PrefectFutureList[str].__origin__ is TaskFutureList

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def pipeline() -> tuple[type, type, int, list[int]]:
        one: TaskFuture[int] = double.submit(2)
        many: TaskFutureList[int] = double.map([1, 2])
        return type(one), type(many), one.result(), many.result()

    assert pipeline() == (TaskFuture, TaskFutureList, 4, [2, 4])


def test_contexts_on_a_process_pool_worker_answer_what_the_stand_ins_know():
    """A worker's stand-ins know ids and names: the contexts answer empty parameters (as the
    runtime module does) instead of failing, and a state, which only the flow process knows,
    raises an AttributeError that says where to read it."""
    from tether.runners import ProcessPoolRunner

    @task(task_run_name="sq-{x}")
    def sq(x):
        task_ctx = TaskRunContext.get()
        flow_ctx = FlowRunContext.get()
        innermost = get_run_context()
        try:
            task_ctx.task_run.state  # noqa: B018 - read to see how it fails
            state_error = ""
        except AttributeError as exc:
            state_error = str(exc)
        return (
            task_ctx.task_run.name,
            task_ctx.parameters,
            task_ctx.flow_run.id,
            flow_ctx.flow_run.id,
            flow_ctx.parameters,
            type(innermost).__name__,
            state_error,
        )

    @flow(task_runner=ProcessPoolRunner(max_workers=1))
    def pipeline():
        return FlowRunContext.get().flow_run.id, sq.submit(2).result()

    flow_id, (name, task_parameters, seen_flow_id, flow_ctx_id, flow_parameters, innermost, state_error) = pipeline()
    assert (name, task_parameters, flow_parameters, innermost) == ("sq-2", {}, {}, "TaskRunContext")
    assert seen_flow_id == flow_ctx_id == flow_id
    assert "'sq-2' is not known here" in state_error and "future.state" in state_error


def test_a_cache_key_fn_sees_the_run_through_its_context(runner):
    seen = []

    def key(context, parameters):
        seen.append((context.task_run.name, context.task_run.task_name, context.task.name, dict(parameters)))
        assert context.flow_run.name == context.flow_run_context.flow_run.name
        return "k"

    @task(cache_key_fn=key, task_run_name="load-{x}")
    def load(x, y=3):
        return x + y

    @flow(task_runner=runner)
    def pipeline():
        return load(1)

    assert pipeline() == 4
    assert seen == [("load-1", "load", "load", {"x": 1})]  # the inputs given, as Prefect passes them


def test_the_contexts_hand_out_the_users_flow_and_task(runner):
    @task
    def body():
        ctx = TaskRunContext.get()
        return ctx.task, ctx.task_run.task

    @flow(task_runner=runner)
    def pipeline():
        return FlowRunContext.get().flow, body()

    flow_object, (task_object, task_via_view) = pipeline()
    assert flow_object is pipeline and task_object is body and task_via_view is body
