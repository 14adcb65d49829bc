"""tether.runtime (Prefect's prefect.runtime), run contexts, allow_failure and quote."""

from __future__ import annotations

import datetime

import pytest

from tether import MissingContextError, UpstreamFailedError, allow_failure, flow, get_run_context, quote, task
from tether.context import FlowRunContext, TaskRunContext
from tether.runtime import deployment, flow_run, task_run


def test_outside_a_run_everything_is_none_or_empty():
    assert (flow_run.id, flow_run.name, flow_run.flow_name, flow_run.parameters, flow_run.tags) == (None, None, None, {}, [])
    assert (task_run.id, task_run.name, task_run.task_name, task_run.parameters) == (None, None, None, {})
    assert (deployment.id, deployment.name, deployment.version, deployment.parameters, deployment.flow_run_id) == (None, None, None, {}, None)
    # As in Prefect: outside a run, the scheduled start is now.
    assert abs((flow_run.scheduled_start_time - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) < 60
    assert FlowRunContext.get() is None and TaskRunContext.get() is None
    with pytest.raises(MissingContextError, match="outside a flow or task run"):
        get_run_context()


def test_inside_a_flow_and_its_tasks(runner):
    @task
    def inner(x):
        ctx = TaskRunContext.get()
        return {
            "task_run.name": task_run.name,
            "task_run.task_name": task_run.task_name,
            "task_run.parameters": task_run.parameters,
            "task_run.id": task_run.id == ctx.task_run.id,
            "flow_run.name": flow_run.name,
            "flow_run.id": flow_run.id == ctx.task_run.flow_run_id,
            "ctx.task.name": ctx.task.name,
            "run_count": task_run.run_count,
        }

    @flow(task_runner=runner, flow_run_name="nightly-{n}")
    def pipeline(n: int):
        seen = inner(n)
        ctx = get_run_context()
        assert isinstance(ctx, FlowRunContext) and ctx.flow_run.name == "nightly-3"
        started = flow_run.scheduled_start_time
        assert started.tzinfo is not None and abs((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()) < 60
        return seen, flow_run.flow_name, flow_run.parameters, task_run.id, deployment.flow_run_id == flow_run.id, deployment.name

    seen, flow_name, parameters, task_id, same_run, deployment_name = pipeline("3")
    assert seen == {
        "task_run.name": "inner",
        "task_run.task_name": "inner",
        "task_run.parameters": {"x": 3},
        "task_run.id": True,
        "flow_run.name": "nightly-3",
        "flow_run.id": True,
        "ctx.task.name": "inner",
        "run_count": 1,
    }
    assert (flow_name, parameters, task_id, same_run, deployment_name) == ("pipeline", {"n": 3}, None, True, None)


def test_a_subflow_knows_its_parent_and_root(runner):
    @flow(task_runner=runner)
    def child():
        return flow_run.parent_flow_run_id, flow_run.root_flow_run_id, flow_run.id

    @flow(task_runner=runner)
    def parent():
        return flow_run.id, child()

    parent_id, (child_parent, child_root, child_id) = parent()
    assert child_parent == parent_id == child_root and child_id != parent_id


def test_an_unknown_runtime_attribute_says_what_there_is():
    with pytest.raises(AttributeError, match="no attribute 'nmae'.*name"):
        flow_run.nmae  # noqa: B018


def test_hooks_get_runs_with_their_parameters(runner):
    seen = []

    def on_done(flow_, run, state):
        seen.append((flow_.name, run.name, run.parameters, state.name))

    def on_task_failure(task_, run, state):
        seen.append((task_.name, run.name, run.parameters, state.name))

    @task(on_failure=[on_task_failure], task_run_name="t-{x}")
    def bad(x):
        raise ValueError(x)

    @flow(task_runner=runner, on_completion=[on_done])
    def pipeline(day: str):
        bad(1, return_state=True)

    pipeline("mon")
    assert seen == [("bad", "t-1", {"x": 1}, "Failed"), ("pipeline", "pipeline", {"day": "mon"}, "Completed")]


# -- allow_failure and quote ----------------------------------------------------------------------


def test_allow_failure_runs_the_downstream_with_the_upstreams_error(runner):
    @task
    def fails():
        raise ValueError("boom")

    @task
    def works():
        return 1

    @task
    def report(a, b):
        return repr(a), b

    @task
    def cleanup():
        return "cleaned"

    @flow(task_runner=runner)
    def pipeline():
        bad, good = fails.submit(), works.submit()
        reported = report.submit(allow_failure(bad), good)
        cleaned = cleanup.submit(wait_for=[allow_failure(bad)])
        return reported.result(), cleaned.result()

    # The failure was handled by its downstreams: the flow completes.
    assert pipeline() == (("ValueError('boom')", 1), "cleaned")


def test_without_allow_failure_the_downstream_does_not_run(runner):
    @task
    def fails():
        raise ValueError("boom")

    @task
    def report(a):
        return a

    @flow(task_runner=runner)
    def pipeline():
        return report.submit(fails.submit()).result(raise_on_failure=False)

    assert isinstance(pipeline(), UpstreamFailedError)


def test_allow_failure_of_a_plain_value_is_the_value(runner):
    @task
    def echo(x):
        return x

    @flow(task_runner=runner)
    def pipeline():
        return echo(allow_failure(5))

    assert pipeline() == 5


def test_quote_passes_the_value_without_looking_inside(runner):
    @task
    def produce():
        return 1

    @task
    def inspect_it(value):
        return type(value[0]).__name__

    @flow(task_runner=runner)
    def pipeline():
        future = produce.submit()
        future.wait()
        # Inside quote(...), a future is data, not an upstream: it reaches the task as itself.
        return inspect_it(quote([future])), inspect_it(quote([1, 2]))

    assert pipeline() == ("TaskFuture", "int")


def test_runtime_attributes_can_be_mocked_from_the_environment(monkeypatch, runner):
    """As Prefect documents: PREFECT__RUNTIME__<MODULE>__<ATTRIBUTE> (or TETHER__...)."""
    monkeypatch.setenv("PREFECT__RUNTIME__TASK_RUN__FAKE_KEY", "foo")
    monkeypatch.setenv("TETHER__RUNTIME__FLOW_RUN__RUN_COUNT", "3")
    monkeypatch.setenv("TETHER__RUNTIME__DEPLOYMENT__NAME", "nightly")
    assert (task_run.fake_key, flow_run.run_count, deployment.name) == ("foo", 3, "nightly")

    @flow(task_runner=runner)
    def pipeline():
        return flow_run.run_count, flow_run.name

    assert pipeline() == (3, "pipeline")


def test_run_parameters_include_defaults_as_in_prefect(runner):
    @task(task_run_name="t-{x}-{y}")
    def t(x, y=3):
        return task_run.name, task_run.parameters

    @flow(task_runner=runner, flow_run_name=lambda: f"limit-{flow_run.parameters['limit']}")
    def pipeline(name: str, limit: int = 100):
        return flow_run.name, flow_run.parameters, t(1)

    assert pipeline("marvin") == ("limit-100", {"name": "marvin", "limit": 100}, ("t-1-3", {"x": 1, "y": 3}))


def test_runtime_answers_in_task_bodies_on_a_process_pool():
    """On a remote worker the runs are the worker's stand-ins: ids and names, nothing that fails."""
    from tether.runners import ProcessPoolRunner

    @task(task_run_name="sq-{x}")
    def sq(x):
        return (task_run.name, task_run.parameters, flow_run.id is not None, flow_run.parameters,
                flow_run.tags, flow_run.root_flow_run_id is not None, flow_run.scheduled_start_time is not None)

    @flow(task_runner=ProcessPoolRunner(max_workers=1))
    def pipeline():
        return sq.submit(2).result()

    name, task_parameters, has_flow_id, flow_parameters, tags, has_root, has_start = pipeline()
    assert (name, has_flow_id, has_root, has_start) == ("sq-2", True, True, True)
    # What the stand-ins do not carry yet (parameters, tags) is empty, not an error.
    assert isinstance(task_parameters, dict) and isinstance(flow_parameters, dict) and isinstance(tags, list)


def test_opaque_resolves_the_future_and_passes_its_value_unwalked(runner):
    from dataclasses import dataclass

    from tether.utilities.annotations import opaque

    @dataclass
    class Pipeline:
        rate: object

    made = []

    @task
    def build():
        pipeline = Pipeline(rate=None)
        made.append(pipeline)
        return pipeline

    @task
    def run(pipeline, plain):
        return pipeline is made[0], plain

    @flow(task_runner=runner)
    def pipeline_flow():
        return run.submit(opaque(build.submit()), opaque(3)).result()

    assert pipeline_flow() == (True, 3)


def test_resolve_futures_to_states_and_results(runner):
    from tether.futures import resolve_futures_to_results, resolve_futures_to_states

    @task
    def double(x):
        if x < 0:
            raise ValueError(x)
        return 2 * x

    @flow(task_runner=runner)
    def pipeline():
        futures = {"a": double.submit(1), "b": [double.submit(2), double.submit(-1)]}
        states = resolve_futures_to_states(futures)
        good = resolve_futures_to_results({"a": futures["a"], "b": futures["b"][0]})
        return states["a"].name, [s.name for s in states["b"]], good

    # The failed run was looked at through its state: the flow completes.
    assert pipeline() == ("Completed", ["Completed", "Failed"], {"a": 2, "b": 4})
