"""The engine through its public API, written the way a Prefect user writes flows.

Every test that does not depend on threads runs on both runners: the thread pool
(the default) and the inline runner. Order is forced with `threading.Event`, never
with sleeps; events are observed through an `InMemoryRecorder` on the engine's stream.
"""

from __future__ import annotations

import threading
from collections import namedtuple

import pytest

import tether
from tether import (
    ParameterError,
    UnresolvedFailureError,
    UpstreamFailedError,
    as_completed,
    flow,
    get_run_logger,
    tags,
    task,
    unmapped,
    wait,
)
from tether._core import InMemoryRecorder, LogEmitted, RunCreated, StateChanged
from tether.runners import InlineRunner, ThreadPoolRunner
from tether.states import State


def created(recorder: InMemoryRecorder, kind: str | None = None, name: str | None = None) -> list[RunCreated]:
    return [
        e
        for e in recorder.events
        if isinstance(e, RunCreated) and (kind is None or e.kind == kind) and (name is None or e.name == name)
    ]


def logs(recorder: InMemoryRecorder) -> list[LogEmitted]:
    return [e for e in recorder.events if isinstance(e, LogEmitted)]


def threads_only(runner) -> None:
    if isinstance(runner, InlineRunner):
        pytest.skip("needs concurrent task runs; the inline runner runs each at submit")


@task
def add(x, y):
    return x + y


@task
def echo(x):
    return x


@task
def boom(message="boom"):
    raise ValueError(message)


# -- calling, submitting, mapping ---------------------------------------------------------


def test_a_called_task_returns_its_value(runner):
    @flow(task_runner=runner)
    def pipeline(a):
        b = add(a, 1)
        return add(b, b)

    assert pipeline(2) == 6


def test_a_called_task_that_fails_raises_its_error_in_the_flow(runner):
    @flow(task_runner=runner)
    def pipeline():
        with pytest.raises(ValueError, match="kaput"):
            boom("kaput")
        return "carried on"

    assert pipeline() == "carried on"


def test_submit_returns_a_future_with_result_state_and_id(runner):
    @flow(task_runner=runner)
    def pipeline():
        future = add.submit(1, 2)
        assert isinstance(future, tether.TaskFuture)
        assert isinstance(future.task_run_id, str) and future.task_run_id
        value = future.result()
        future.wait()
        assert future.done()
        assert future.state.is_completed()
        assert future.state.name == "Completed"
        return value

    assert pipeline() == 3


def test_future_result_raises_the_task_error_or_returns_it(runner):
    @flow(task_runner=runner)
    def pipeline():
        future = boom.submit("no rows")
        with pytest.raises(ValueError, match="no rows"):
            future.result()
        error = future.result(raise_on_failure=False)
        assert isinstance(error, ValueError)
        assert future.state.is_failed()
        return "handled"

    assert pipeline() == "handled"


def test_futures_pass_values_downstream(runner):
    @flow(task_runner=runner)
    def pipeline():
        a = add.submit(1, 1)
        b = add.submit(a, 10)
        c = add.submit(a, b)
        return c.result()

    assert pipeline() == 14


def test_a_flow_returning_futures_returns_their_values(runner):
    @flow(task_runner=runner)
    def pipeline():
        return add.submit(1, 2), [add.submit(3, 4)], {"k": add.submit(5, 6)}

    assert pipeline() == (3, [7], {"k": 11})


def test_map_with_unmapped(runner):
    @flow(task_runner=runner)
    def pipeline():
        futures = add.map([1, 2, 3], unmapped(10))
        assert isinstance(futures, tether.TaskFutureList)
        assert len(futures) == 3
        futures.wait()
        return futures.result()

    assert pipeline() == [11, 12, 13]


def test_map_keyword_arguments_ranges_and_static_values(runner):
    @task
    def describe(item, prefix, suffix):
        return f"{prefix}{item}{suffix}"

    @flow(task_runner=runner)
    def pipeline():
        by_keyword = describe.map(item=range(3), prefix=unmapped("<"), suffix=">")
        return by_keyword.result()

    assert pipeline() == ["<0>", "<1>", "<2>"]


def test_map_passes_an_unmapped_list_whole(runner):
    @task
    def pair(x, all_of_them):
        return (x, tuple(all_of_them))

    @flow(task_runner=runner)
    def pipeline():
        return pair.map([1, 2], unmapped([7, 8, 9])).result()

    assert pipeline() == [(1, (7, 8, 9)), (2, (7, 8, 9))]


def test_map_over_the_futures_of_a_map(runner):
    @flow(task_runner=runner)
    def pipeline():
        first = add.map([1, 2, 3], unmapped(1))
        second = add.map(first, unmapped(100))
        return [f.result() for f in second]

    assert pipeline() == [102, 103, 104]


def test_map_over_nothing_runs_nothing(runner, recorder):
    @flow(task_runner=runner)
    def pipeline():
        return add.map([], unmapped(1)).result()

    assert pipeline() == []
    assert created(recorder, "task") == []


# -- dependencies -------------------------------------------------------------------------


def test_wait_for_orders_runs_without_passing_data(runner):
    order = []
    gate = threading.Event()
    if isinstance(runner, InlineRunner):
        gate.set()  # the inline runner runs `first` at submit

    @task
    def first():
        assert gate.wait(5)
        order.append("first")

    @task
    def second():
        order.append("second")

    @flow(task_runner=runner)
    def pipeline():
        a = first.submit()
        b = second.submit(wait_for=[a])
        if not gate.is_set():
            assert b.state.is_pending(), "second started before the run it waits for"
            gate.set()
        b.result()
        second(wait_for=[a, b])
        return order

    assert pipeline() == ["first", "second", "second"]


def test_wait_for_a_failed_run_fails_the_downstream_without_running_it(runner):
    ran = []

    @task
    def after():
        ran.append(True)

    @flow(task_runner=runner)
    def pipeline():
        failed = boom.submit("upstream broke")
        downstream = after.submit(wait_for=[failed])
        downstream.result(raise_on_failure=False)
        return downstream.state.name, downstream.state.message

    name, message = pipeline()
    assert name == "Failed"
    assert "'boom'" in message
    assert ran == []


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda a, b: [a, b], [1, 2]),
        (lambda a, b: (a, b), (1, 2)),
        (lambda a, b: {"a": a, "deep": [b, (a,)]}, {"a": 1, "deep": [2, (1,)]}),
        (lambda a, b: {a, b}, {1, 2}),
        (lambda a, b: frozenset([a]), frozenset([1])),
        (lambda a, b: [[[a]], {"x": {"y": b}}], [[[1]], {"x": {"y": 2}}]),
    ],
    ids=["list", "tuple", "dict", "set", "frozenset", "deep"],
)
def test_futures_nested_in_arguments_are_resolved(runner, build, expected):
    @flow(task_runner=runner)
    def pipeline():
        a = add.submit(0, 1)
        b = add.submit(1, 1)
        submitted = echo.submit(build(a, b)).result()
        called = echo(build(a, b))
        return submitted, called

    submitted, called = pipeline()
    assert submitted == expected and type(submitted) is type(expected)
    assert called == expected and type(called) is type(expected)


def test_futures_in_a_namedtuple_and_as_dict_keys_are_resolved(runner):
    Point = namedtuple("Point", "x y")

    @flow(task_runner=runner)
    def pipeline():
        a = add.submit(0, 1)
        b = add.submit(1, 1)
        return echo(Point(a, b)), echo({a: "one", b: "two"})

    point, keyed = pipeline()
    assert point == Point(1, 2) and isinstance(point, Point)
    assert keyed == {1: "one", 2: "two"}


def test_a_nested_future_makes_an_upstream(runner):
    order = []
    gate = threading.Event()
    if isinstance(runner, InlineRunner):
        gate.set()

    @task
    def slow():
        assert gate.wait(5)
        order.append("slow")
        return "value"

    @task
    def use(payload):
        order.append("use")
        return payload

    @flow(task_runner=runner)
    def pipeline():
        upstream = slow.submit()
        downstream = use.submit({"inputs": [upstream]})
        if not gate.is_set():
            assert downstream.state.is_pending()
            gate.set()
        return downstream.result()

    assert pipeline() == {"inputs": ["value"]}
    assert order == ["slow", "use"]


def test_a_failed_upstream_fails_the_downstream_without_running_it(runner):
    ran = []

    @task
    def extract():
        raise ValueError("db down")

    @task
    def transform(rows):
        ran.append(rows)

    seen = {}

    @flow(task_runner=runner)
    def pipeline():
        rows = extract.submit()
        out = transform.submit([rows])
        out.wait()
        seen["state"] = out.state
        with pytest.raises(UpstreamFailedError) as caught:
            out.result()
        seen["error"] = caught.value
        with pytest.raises(UpstreamFailedError, match="'extract'"):
            transform(rows)
        return "handled"

    assert pipeline() == "handled"
    assert ran == []
    state = seen["state"]
    assert state.is_failed()
    assert "'transform'" in state.message
    assert "'extract'" in state.message
    assert "db down" in state.message
    assert isinstance(seen["error"], UpstreamFailedError)
    assert "'extract'" in str(seen["error"])


def test_a_failure_propagates_down_a_chain(runner):
    @flow(task_runner=runner)
    def pipeline():
        a = boom.submit("root cause")
        b = echo.submit(a)
        c = echo.submit(b)
        c.result(raise_on_failure=False)
        return c.state.message

    message = pipeline()
    assert "'echo'" in message


# -- the flow's end ---------------------------------------------------------------------


def test_a_submitted_failure_nobody_resolved_fails_the_flow(runner):
    @flow(task_runner=runner)
    def pipeline():
        boom.submit("silent")
        return "looks fine"

    state = pipeline(return_state=True)
    assert state.is_failed()
    assert isinstance(state.data, UnresolvedFailureError)
    assert "'boom'" in state.message
    assert "silent" in state.message
    assert isinstance(state.data.__cause__, ValueError)
    with pytest.raises(UnresolvedFailureError, match="'boom'"):
        pipeline()


def test_an_unresolved_downstream_of_a_failure_fails_the_flow(runner):
    @flow(task_runner=runner)
    def pipeline():
        echo.submit(boom.submit("root"))
        return "looks fine"

    state = pipeline(return_state=True)
    assert state.is_failed()
    assert isinstance(state.data, UnresolvedFailureError)


def test_a_failure_resolved_by_the_flow_does_not_fail_it(runner):
    @flow(task_runner=runner)
    def pipeline():
        future = boom.submit()
        return type(future.result(raise_on_failure=False)).__name__

    state = pipeline(return_state=True)
    assert state.is_completed()
    assert state.result() == "ValueError"


def test_a_flow_waits_for_every_submitted_run(runner):
    gate = threading.Event()
    body_done = threading.Event()
    finished = []

    @task
    def slow():
        assert gate.wait(5)
        finished.append("slow")

    def open_gate_after_body():
        body_done.wait(5)
        gate.set()

    if isinstance(runner, InlineRunner):
        gate.set()
    opener = threading.Thread(target=open_gate_after_body)
    opener.start()

    @flow(task_runner=runner)
    def pipeline():
        future = slow.submit()
        body_done.set()
        return future

    try:
        state = pipeline(return_state=True)
    finally:
        body_done.set()
        opener.join()
    assert finished == ["slow"]
    assert state.is_completed()


def test_a_flow_that_raises_is_failed_and_its_state_raises(runner):
    @flow(task_runner=runner)
    def pipeline():
        raise KeyError("missing column")

    state = pipeline(return_state=True)
    assert isinstance(state, State)
    assert state.is_failed()
    assert "missing column" in state.message
    with pytest.raises(KeyError, match="missing column"):
        state.result()
    assert isinstance(state.result(raise_on_failure=False), KeyError)
    with pytest.raises(KeyError, match="missing column"):
        pipeline()


# -- return_state ------------------------------------------------------------------------


def test_return_state_for_called_tasks(runner):
    @flow(task_runner=runner)
    def pipeline():
        good = add(1, 2, return_state=True)
        bad = boom("nope", return_state=True)
        return good.is_completed(), good.result(), bad.is_failed(), repr(bad.result(raise_on_failure=False))

    assert pipeline() == (True, 3, True, "ValueError('nope')")


def test_return_state_for_submitted_tasks_counts_as_handling_the_failure(runner):
    @flow(task_runner=runner)
    def pipeline():
        state = boom.submit("seen", return_state=True)
        assert isinstance(state, State)
        assert state.is_failed()
        return "handled"

    state = pipeline(return_state=True)
    assert state.is_completed(), state.message


def test_return_state_for_flows(runner):
    @flow(task_runner=runner)
    def pipeline(x):
        return add(x, x)

    state = pipeline(4, return_state=True)
    assert isinstance(state, State)
    assert state.is_completed() and state.name == "Completed"
    assert state.result() == 8


# -- wait and as_completed ---------------------------------------------------------------


def test_wait_returns_done_and_not_done(runner):
    @flow(task_runner=runner)
    def pipeline():
        futures = [add.submit(i, i) for i in range(5)]
        done, not_done = wait(futures)
        assert done == set(futures)
        assert not_done == set()
        return sorted(f.result() for f in done)

    assert pipeline() == [0, 2, 4, 6, 8]


def test_wait_with_a_timeout_reports_the_unfinished(runner):
    threads_only(runner)
    gate = threading.Event()

    @task
    def blocked():
        assert gate.wait(5)
        return "late"

    @flow(task_runner=runner)
    def pipeline():
        quick = add.submit(1, 1)
        slow = blocked.submit()
        quick.wait()
        done, not_done = wait([quick, slow], timeout=0.05)
        assert done == {quick}
        assert not_done == {slow}
        with pytest.raises(TimeoutError, match="'blocked'"):
            slow.result(timeout=0.01)
        gate.set()
        return slow.result()

    try:
        assert pipeline() == "late"
    finally:
        gate.set()


def test_as_completed_yields_every_future(runner):
    @flow(task_runner=runner)
    def pipeline():
        futures = add.map([1, 2, 3], unmapped(0))
        return sorted(f.result() for f in as_completed(futures))

    assert pipeline() == [1, 2, 3]


def test_as_completed_yields_in_completion_order(runner):
    threads_only(runner)
    gate = threading.Event()

    @task
    def held():
        assert gate.wait(5)
        return "held"

    @flow(task_runner=runner)
    def pipeline():
        first_submitted = held.submit()
        second_submitted = echo.submit("quick")
        order = []
        for future in as_completed([first_submitted, second_submitted]):
            order.append(future.result())
            gate.set()
        return order

    try:
        assert pipeline() == ["quick", "held"]
    finally:
        gate.set()


def test_as_completed_times_out(runner):
    threads_only(runner)
    gate = threading.Event()

    @task
    def held():
        assert gate.wait(5)

    @flow(task_runner=runner)
    def pipeline():
        future = held.submit()
        with pytest.raises(TimeoutError):
            list(as_completed([future], timeout=0.05))
        gate.set()
        future.result()

    try:
        pipeline()
    finally:
        gate.set()


# -- tags ---------------------------------------------------------------------------------


def test_tags_block_adds_tags_to_runs_created_inside(runner, recorder):
    @task(tags=["etl"])
    def tagged():
        return 1

    @flow(task_runner=runner)
    def pipeline():
        with tags("mysql"):
            inside = tagged.submit()
            with tags("db", "slow"):
                nested = tagged.submit()
                tagged()
        outside = tagged.submit()
        wait([inside, nested, outside])
        return inside._run.record.tags, nested._run.record.tags, outside._run.record.tags

    inside, nested, outside = pipeline()
    assert inside == {"etl", "mysql"}
    assert nested == {"etl", "mysql", "db", "slow"}
    assert outside == {"etl"}
    recorded = sorted(sorted(e.tags) for e in created(recorder, "task"))
    assert recorded == sorted([["etl", "mysql"], ["db", "etl", "mysql", "slow"], ["db", "etl", "mysql", "slow"], ["etl"]])


def test_tags_outside_a_flow_are_harmless():
    with tags("mysql") as active:
        assert "mysql" in active
        assert add(1, 2) == 3


# -- subflows -----------------------------------------------------------------------------


def test_a_subflow_has_its_own_run_linked_to_its_parent(runner, recorder):
    @flow(task_runner=runner)
    def child(x):
        return add(x, 1)

    @flow(task_runner=runner)
    def parent():
        return child(1) + child(10)

    assert parent() == 13
    [parent_run] = created(recorder, "flow", "parent")
    children = created(recorder, "flow", "child")
    assert len(children) == 2
    assert parent_run.parent_id is None
    assert {c.parent_id for c in children} == {parent_run.run_id}
    assert children[0].run_id != children[1].run_id != parent_run.run_id
    assert children[0].parameters == {"x": 1}
    # The subflows' task runs belong to the subflows.
    task_runs = created(recorder, "task", "add")
    assert sorted(t.flow_run_id for t in task_runs) == sorted(c.run_id for c in children)
    for c in children:
        assert recorder.states_of(c.run_id) == ["Running", "Completed"]


def test_a_failed_subflow_raises_in_its_parent(runner):
    @flow(task_runner=runner)
    def child():
        raise ValueError("child broke")

    @flow(task_runner=runner)
    def parent():
        state = child(return_state=True)
        assert state.is_failed()
        with pytest.raises(ValueError, match="child broke"):
            child()
        return "parent survived"

    assert parent() == "parent survived"


def test_a_subflow_uses_its_own_runner(recorder):
    seen = []

    @task
    def where():
        seen.append(threading.current_thread().name)

    @flow(task_runner=InlineRunner())
    def child():
        where.submit().result()

    @flow(task_runner=ThreadPoolRunner(max_workers=2))
    def parent():
        where.submit().result()
        child()

    parent()
    assert seen[0].startswith("tether-worker")
    assert seen[1] == threading.current_thread().name


# -- logging ------------------------------------------------------------------------------


def test_get_run_logger_in_flows_and_tasks(runner, recorder):
    @task
    def noisy():
        get_run_logger().info("task says %s", "hi")
        get_run_logger().warning("task warns")

    @flow(task_runner=runner)
    def pipeline():
        get_run_logger().info("flow says hi")
        return noisy.submit().task_run_id

    task_run_id = pipeline()
    [flow_run] = created(recorder, "flow")
    by_message = {e.message: e for e in logs(recorder)}
    assert by_message["flow says hi"].run_id == flow_run.run_id
    assert by_message["flow says hi"].flow_run_id == flow_run.run_id
    assert by_message["task says hi"].run_id == task_run_id
    assert by_message["task says hi"].flow_run_id == flow_run.run_id
    assert by_message["task warns"].level == 30


def test_get_run_logger_outside_a_run_says_where_to_call_it():
    with pytest.raises(tether.UsageError, match=r"outside a flow or task run"):
        get_run_logger()


def test_log_prints_routes_print_to_the_run_log(runner, recorder, capsys):
    @task
    def chatty():
        print("hello from the task")

    @task(log_prints=False)
    def quiet():
        print("task keeps stdout")

    @flow(task_runner=runner, log_prints=True)
    def pipeline():
        print("hello from the flow", 42)
        chatty.submit().result()
        quiet()

    pipeline()
    messages = {e.message: e for e in logs(recorder)}
    [flow_run] = created(recorder, "flow")
    assert messages["hello from the flow 42"].run_id == flow_run.run_id
    [chatty_run] = created(recorder, "task", "chatty")
    assert messages["hello from the task"].run_id == chatty_run.run_id
    assert "task keeps stdout" not in messages
    out = capsys.readouterr().out
    assert "task keeps stdout" in out
    assert "hello from the flow" not in out


def test_without_log_prints_print_goes_to_stdout(runner, recorder, capsys):
    @flow(task_runner=runner)
    def pipeline():
        print("plain print")

    pipeline()
    assert "plain print" in capsys.readouterr().out
    assert all(e.message != "plain print" for e in logs(recorder))


# -- hooks --------------------------------------------------------------------------------


def test_flow_hooks_on_completion_and_on_failure(runner):
    calls = []

    def completed(flow_, flow_run, state):
        calls.append(("completed", flow_.name, flow_run.name, state.name, state.result()))

    def failed(flow_, flow_run, state):
        calls.append(("failed", flow_.name, flow_run.name, state.name, type(state.data).__name__))

    @flow(task_runner=runner, on_completion=[completed], on_failure=[failed])
    def pipeline(fail):
        if fail:
            raise RuntimeError("no")
        return "yes"

    pipeline(False)
    pipeline(True, return_state=True)
    assert calls == [
        ("completed", "pipeline", "pipeline", "Completed", "yes"),
        ("failed", "pipeline", "pipeline", "Failed", "RuntimeError"),
    ]


def test_flow_on_cancellation_hook_runs_on_timeout(runner):
    calls = []
    never = threading.Event()

    @flow(task_runner=runner, timeout_seconds=0.2, on_cancellation=[lambda f, r, s: calls.append(s.type.value)],
          on_failure=[lambda f, r, s: calls.append("failure")])
    def pipeline():
        never.wait(2)

    state = pipeline(return_state=True)
    assert state.is_cancelled()
    assert calls == ["CANCELLED"]


def test_task_hooks_on_completion_and_on_failure(runner):
    calls = []

    def completed(task_, task_run, state):
        calls.append(("completed", task_.name, task_run.name, state.result()))

    def failed(task_, task_run, state):
        calls.append(("failed", task_.name, task_run.name, str(state.data)))

    @task(on_completion=[completed], on_failure=[failed])
    def maybe(fail):
        if fail:
            raise ValueError("bad")
        return "good"

    @flow(task_runner=runner)
    def pipeline():
        maybe(False)
        maybe.submit(True).wait()
        maybe(True, return_state=True)
        return "done"

    pipeline(return_state=True)
    assert calls == [
        ("completed", "maybe", "maybe", "good"),
        ("failed", "maybe", "maybe", "bad"),
        ("failed", "maybe", "maybe", "bad"),
    ]


def test_a_hook_that_raises_does_not_change_the_state(runner):
    def broken(*_):
        raise RuntimeError("hook broke")

    @task(on_completion=[broken])
    def fine():
        return 1

    @flow(task_runner=runner, on_completion=[broken])
    def pipeline():
        return fine()

    state = pipeline(return_state=True)
    assert state.is_completed()
    assert state.result() == 1


# -- tasks as plain functions -------------------------------------------------------------


def test_fn_is_the_undecorated_function():
    def plain(x, y=2):
        return x * y

    t = task(plain)
    f = flow(plain)
    assert t.fn is plain
    assert f.fn is plain
    assert t.fn(3) == 6
    assert t.name == "plain"
    assert task(name="renamed")(plain).name == "renamed"


def test_a_task_called_outside_a_flow_runs_as_a_task_run_of_its_own(recorder):
    # As in Prefect 3 (was plain Python before: no record): a task run with no flow run.
    assert add(2, 3) == 5
    with pytest.raises(ValueError, match="plain"):
        boom("plain")
    created = [e for e in recorder.events if isinstance(e, RunCreated)]
    assert [(e.kind, e.name, e.flow_run_id) for e in created] == [("task", "add", None), ("task", "boom", None)]
    finals = [e.new.name for e in recorder.events if isinstance(e, StateChanged) and e.new.is_final()]
    assert finals == ["Completed", "Failed"]
    with pytest.raises(ParameterError):  # the arguments are bound as in a flow
        add(1)
    assert add.fn(2, 3) == 5  # .fn stays the plain function


def test_runs_go_through_the_state_machine(runner, recorder):
    @flow(task_runner=runner)
    def pipeline():
        ok = add.submit(1, 2)
        bad = boom.submit()
        wait([ok, bad])
        bad.result(raise_on_failure=False)
        return ok.task_run_id, bad.task_run_id

    ok_id, bad_id = pipeline()
    assert recorder.states_of(ok_id) == ["Running", "Completed"]
    assert recorder.states_of(bad_id) == ["Running", "Failed"]
    [flow_run] = created(recorder, "flow")
    assert recorder.states_of(flow_run.run_id) == ["Running", "Completed"]
    changes = [e for e in recorder.events if isinstance(e, StateChanged) and e.run_id == ok_id]
    assert changes[0].old.name == "Pending"
    assert changes[-1].run_count == 1
    [ok_created] = created(recorder, "task", "add")
    assert ok_created.parameters == {"x": 1, "y": 2}
    assert ok_created.flow_run_id == flow_run.run_id


# -- parameters ---------------------------------------------------------------------------


def test_a_flow_called_with_a_missing_argument_names_it():
    @flow
    def load(table, rows):
        return rows

    with pytest.raises(ParameterError) as caught:
        load("sales")
    message = str(caught.value)
    assert "'load'" in message
    assert "'rows'" in message
    assert isinstance(caught.value, TypeError)


def test_a_flow_called_with_an_unexpected_argument_names_it():
    @flow
    def load(table):
        return table

    with pytest.raises(ParameterError, match="'colour'"):
        load("sales", colour="red")
    with pytest.raises(ParameterError, match="too many positional"):
        load("sales", "extra")


def test_a_task_called_with_bad_arguments_in_a_flow_names_them(runner):
    @flow(task_runner=runner)
    def pipeline(how):
        if how == "missing":
            add.submit(1)
        elif how == "unexpected":
            add(1, 2, z=3)
        else:
            add.map([1, 2], unmapped(1), w=unmapped(0))

    with pytest.raises(ParameterError, match=r"Task 'add'.*'y'"):
        pipeline("missing")
    with pytest.raises(ParameterError, match=r"Task 'add'.*'z'"):
        pipeline("unexpected")
    with pytest.raises(ParameterError, match=r"Task 'add'.*'w'"):
        pipeline("map")


def test_defaults_and_keyword_arguments_bind(runner, recorder):
    @task
    def scaled(x, factor=2, *, offset=0):
        return x * factor + offset

    @flow(task_runner=runner)
    def pipeline(x, factor=3):
        return scaled(x, factor=factor, offset=1)

    assert pipeline(2) == 7
    [flow_run] = created(recorder, "flow")
    assert flow_run.parameters["x"] == 2


def test_map_reads_a_generator_once():
    @tether.task
    def add(x, y):
        return x + y

    @tether.flow
    def pipeline():
        return add.map((i for i in range(3)), tether.unmapped(10)).result()

    assert pipeline() == [10, 11, 12]
