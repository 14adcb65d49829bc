"""Misuse gets a clear error that names the object and says how to fix it.

The important parts of each message are pinned: the object's name, the bad value,
and the way out.
"""

from __future__ import annotations

import pytest

from tether import TetherError, UsageError, flow, task, unmapped
from tether.runners import InlineRunner, ThreadPoolRunner

RUNNERS = [pytest.param(ThreadPoolRunner, id="threads"), pytest.param(InlineRunner, id="inline")]


@pytest.fixture(params=RUNNERS)
def runner(request):
    return request.param()


@task
def add(x, y):
    return x + y


@task
def echo(x):
    return x


TASK_OPTIONS = [
    "name",
    "tags",
    "retries",
    "retry_delay_seconds",
    "timeout_seconds",
    "cache_key_fn",
    "cache_expiration",
    "on_completion",
    "on_failure",
    "log_prints",
]
FLOW_OPTIONS = [
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
]


def test_usage_errors_are_tether_errors_and_type_errors():
    assert issubclass(UsageError, TetherError)
    assert issubclass(UsageError, TypeError)


# -- unknown decorator options ------------------------------------------------------------


def test_an_unknown_task_option_lists_the_valid_ones():
    with pytest.raises(UsageError) as caught:

        @task(retry=3)
        def fetch():
            pass

    message = str(caught.value)
    assert "@task" in message
    assert "'retry'" in message
    for option in TASK_OPTIONS:
        assert option in message, option


def test_an_unknown_flow_option_lists_the_valid_ones():
    with pytest.raises(UsageError) as caught:

        @flow(timeout=5, runner=None)
        def pipeline():
            pass

    message = str(caught.value)
    assert "@flow" in message
    assert "'runner'" in message and "'timeout'" in message
    for option in FLOW_OPTIONS:
        assert option in message, option


def test_every_documented_option_is_accepted():
    task_options = {
        "name": "t",
        "tags": ["a"],
        "retries": 1,
        "retry_delay_seconds": 1,
        "timeout_seconds": 1,
        "cache_key_fn": lambda c, p: None,
        "cache_expiration": 10,
        "on_completion": [print],
        "on_failure": [print],
        "log_prints": True,
    }
    flow_options = {
        "name": "f",
        "retries": 1,
        "retry_delay_seconds": [1, 2],
        "timeout_seconds": 1,
        "task_runner": InlineRunner(),
        "log_prints": True,
        "on_completion": [print],
        "on_failure": [print],
        "on_cancellation": [print],
        "on_crashed": [print],
    }
    assert sorted(task_options) == sorted(TASK_OPTIONS)
    assert sorted(flow_options) == sorted(FLOW_OPTIONS)
    task(**task_options)(lambda: None)
    flow(**flow_options)(lambda: None)


def test_with_options_checks_options_too():
    @flow
    def pipeline():
        pass

    with pytest.raises(UsageError, match="'retires'"):
        pipeline.with_options(retires=2)


# -- non-callables ------------------------------------------------------------------------


@pytest.mark.parametrize("decorator", [task, flow], ids=["task", "flow"])
@pytest.mark.parametrize("thing", [42, "extract", 3.5], ids=["int", "str", "float"])
def test_decorating_a_non_callable_says_what_was_given(decorator, thing):
    kind = decorator.__name__
    with pytest.raises(UsageError) as caught:
        decorator(thing)
    message = str(caught.value)
    assert f"@{kind}" in message
    assert repr(thing) in message
    assert type(thing).__name__ in message
    assert "def" in message


@pytest.mark.parametrize("decorator", [task, flow], ids=["task", "flow"])
def test_decorating_a_non_callable_with_options_fails_too(decorator):
    with pytest.raises(UsageError, match=r"got \[1, 2\] of type list"):
        decorator(name="x")([1, 2])


# -- option values ------------------------------------------------------------------------


@pytest.mark.parametrize("decorator", [task, flow], ids=["task", "flow"])
@pytest.mark.parametrize("delay", ["5", None, {"a": 1}, [], [1, "2"], True], ids=repr)
def test_retry_delay_seconds_of_the_wrong_type(decorator, delay):
    with pytest.raises(UsageError) as caught:

        @decorator(retries=2, retry_delay_seconds=delay)
        def fetch():
            pass

    message = str(caught.value)
    assert "'fetch'" in message
    assert f"retry_delay_seconds={delay!r}" in message
    assert "number of seconds" in message


@pytest.mark.parametrize("decorator", [task, flow], ids=["task", "flow"])
@pytest.mark.parametrize("delay", [-1, -0.5, [1, -2]], ids=repr)
def test_retry_delay_seconds_cannot_be_negative(decorator, delay):
    with pytest.raises(UsageError) as caught:

        @decorator(retries=2, retry_delay_seconds=delay)
        def fetch():
            pass

    message = str(caught.value)
    assert "'fetch'" in message
    assert f"retry_delay_seconds={delay!r}" in message
    assert "negative" in message


@pytest.mark.parametrize("decorator", [task, flow], ids=["task", "flow"])
@pytest.mark.parametrize("retries", [-1, 1.5, "3", True], ids=repr)
def test_retries_must_be_a_whole_number(decorator, retries):
    with pytest.raises(UsageError, match=rf"'fetch'.*retries={retries!r}"):
        decorator(name="fetch", retries=retries)(lambda: None)


@pytest.mark.parametrize("decorator", [task, flow], ids=["task", "flow"])
@pytest.mark.parametrize("timeout", [0, -3, "10"], ids=repr)
def test_timeout_seconds_must_be_positive(decorator, timeout):
    with pytest.raises(UsageError, match=rf"'fetch'.*timeout_seconds={timeout!r}"):
        decorator(name="fetch", timeout_seconds=timeout)(lambda: None)


def test_cache_key_fn_must_be_callable():
    with pytest.raises(UsageError, match=r"'fetch'.*cache_key_fn='key'"):
        task(name="fetch", cache_key_fn="key")(lambda: None)


def test_hooks_must_be_callables():
    with pytest.raises(UsageError, match=r"'fetch'.*on_failure.*'alert'"):
        task(name="fetch", on_failure=["alert"])(lambda: None)
    with pytest.raises(UsageError, match=r"'etl'.*on_completion"):
        flow(name="etl", on_completion=[3])(lambda: None)


def test_a_task_runner_that_is_not_a_runner_lists_the_runners():
    with pytest.raises(TypeError, match=r"'etl'.*ThreadPoolRunner\(\)"):
        flow(name="etl", task_runner="threads")(lambda: None)


# -- submit and map outside a flow --------------------------------------------------------


def test_submit_outside_a_flow_says_to_call_the_task_or_use_a_flow():
    with pytest.raises(UsageError) as caught:
        add.submit(1, 2)
    message = str(caught.value)
    assert "Task 'add'" in message
    assert "outside a flow" in message
    assert "add(...)" in message
    assert "@flow" in message


def test_map_outside_a_flow_says_to_use_a_flow():
    with pytest.raises(UsageError) as caught:
        add.map([1, 2], unmapped(3))
    message = str(caught.value)
    assert "Task 'add'" in message
    assert "outside a flow" in message
    assert "@flow" in message


# -- map ----------------------------------------------------------------------------------


def test_map_over_iterables_of_different_lengths_gives_the_lengths(runner):
    @flow(task_runner=runner)
    def pipeline():
        add.map([1, 2], [10, 20, 30])

    with pytest.raises(UsageError) as caught:
        pipeline()
    message = str(caught.value)
    assert "Task 'add'" in message
    assert "different lengths" in message
    assert "x: 2" in message
    assert "y: 3" in message
    assert "unmapped" in message


def test_map_lengths_are_named_for_keyword_arguments_too(runner):
    @flow(task_runner=runner)
    def pipeline():
        add.map(x=range(4), y=[1])

    with pytest.raises(UsageError, match=r"x: 4, y: 1"):
        pipeline()


def test_map_with_nothing_to_map_over_says_so(runner):
    @flow(task_runner=runner)
    def pipeline():
        add.map(unmapped(1), unmapped(2))

    with pytest.raises(UsageError, match=r"Task 'add'.*at least one iterable.*unmapped"):
        pipeline()


# -- futures across flow runs -------------------------------------------------------------


def test_a_future_from_another_flow_run_is_refused(runner):
    kept = {}

    @flow(task_runner=runner)
    def first():
        kept["future"] = add.submit(1, 2)
        kept["future"].result()

    @flow(task_runner=runner)
    def second():
        return echo.submit(kept["future"])

    first()
    with pytest.raises(UsageError) as caught:
        second()
    message = str(caught.value)
    assert "Task 'echo'" in message
    assert "'add'" in message
    assert "another flow run" in message
    assert "'first'" in message
    assert "future.result()" in message


def test_a_parent_flow_future_passed_into_a_subflow_is_refused(runner):
    @flow(task_runner=runner)
    def child(future):
        return echo(future)

    @flow(task_runner=runner)
    def parent():
        upstream = add.submit(1, 2)
        upstream.result()
        return child(upstream)

    with pytest.raises(UsageError, match=r"another flow run \('parent'\)"):
        parent()


@pytest.mark.parametrize("how", ["nested", "wait_for", "call"])
def test_a_foreign_future_is_refused_wherever_it_is_passed(runner, how):
    kept = {}

    @flow(task_runner=runner)
    def first():
        kept["future"] = add.submit(1, 2)
        kept["future"].wait()

    @flow(task_runner=runner)
    def second():
        if how == "nested":
            echo.submit({"inputs": [kept["future"]]})
        elif how == "wait_for":
            echo.submit(1, wait_for=[kept["future"]])
        else:
            echo(kept["future"])

    first()
    with pytest.raises(UsageError, match="another flow run"):
        second()
