"""Prefect's @task / @flow options: each does what it does in Prefect."""

from __future__ import annotations

import datetime
import random

import pydantic
import pytest

from tether import ParameterError, UsageError, flow, task
from tether.cache_policies import DEFAULT, INPUTS, NONE, RUN_ID, TASK_SOURCE, CompoundCachePolicy, Inputs
from tether.runtime import flow_run as runtime_flow_run
from tether.runtime import task_run as runtime_task_run
from tether.tasks import exponential_backoff
from tether.testing import FakeClock

# -- cache policies ----------------------------------------------------------------------------


def test_inputs_caches_across_flow_runs_by_input(runner):
    calls = []

    @task(cache_policy=INPUTS)
    def square(x):
        calls.append(x)
        return x * x

    @flow(task_runner=runner)
    def pipeline(x):
        return square(x)

    assert [pipeline(2), pipeline(2), pipeline(3)] == [4, 4, 9]
    assert calls == [2, 3]


def test_inputs_minus_a_name_leaves_that_input_out_of_the_key(runner):
    calls = []

    @task(cache_policy=INPUTS - "password")
    def fetch(user, password):
        calls.append(password)
        return user

    @flow(task_runner=runner)
    def pipeline():
        return fetch("ann", "one"), fetch("ann", "two"), fetch("bob", "one")

    assert pipeline() == ("ann", "ann", "bob")
    assert calls == ["one", "one"]


def test_run_id_reuses_a_result_within_one_flow_run_only(runner):
    calls = []

    @task(cache_policy=INPUTS + RUN_ID)
    def hello(name):
        calls.append(name)
        return f"hello {name}"

    @flow(task_runner=runner)
    def pipeline():
        return [hello("a", return_state=True).name, hello("a", return_state=True).name]

    assert pipeline() == ["Completed", "Cached"]
    assert pipeline() == ["Completed", "Cached"]
    assert calls == ["a", "a"]


def test_task_source_invalidates_the_cache_when_the_code_changes(runner, tmp_path):
    calls = []

    def make(body: str):
        namespace = {"calls": calls}
        source = tmp_path / f"mod_{abs(hash(body))}.py"
        source.write_text(f"def compute(x):\n    calls.append(x)\n    return {body}\n")
        code = compile(source.read_text(), str(source), "exec")
        exec(code, namespace)
        return task(name="compute", cache_policy=TASK_SOURCE + INPUTS)(namespace["compute"])

    first, edited = make("x + 1"), make("x + 2")

    @flow(task_runner=runner)
    def pipeline(t):
        return t(1)

    assert [pipeline(first), pipeline(first), pipeline(edited)] == [2, 2, 3]
    assert calls == [1, 1]


def test_none_and_persist_result_false_never_cache(runner):
    calls = []

    @task(cache_policy=NONE)
    def a(x):
        calls.append("a")
        return x

    @task(cache_policy=INPUTS, persist_result=False)
    def b(x):
        calls.append("b")
        return x

    @flow(task_runner=runner)
    def pipeline():
        return a(1), a(1), b(1), b(1)

    pipeline()
    assert calls == ["a", "a", "b", "b"]


def test_persist_result_true_caches_with_the_default_policy(runner):
    calls = []

    @task(persist_result=True)
    def add(x, y):
        calls.append((x, y))
        return x + y

    @task
    def plain(x):
        calls.append(x)
        return x

    @flow(task_runner=runner, persist_result=True)
    def keeps():
        return add(1, 2), add(1, 2), plain(7), plain(7)

    assert keeps() == (3, 3, 7, 7)
    assert calls == [(1, 2), 7]  # the flow's persist_result reaches its option-less task too


def test_refresh_cache_runs_again_and_stores_the_new_result(runner):
    values = iter([1, 2, 3])

    @task(cache_policy=INPUTS)
    def read(key):
        return next(values)

    @flow(task_runner=runner)
    def pipeline(refresh):
        return (read.with_options(refresh_cache=True) if refresh else read)("k")

    assert [pipeline(False), pipeline(False), pipeline(True), pipeline(False)] == [1, 1, 2, 2]


def test_policies_combine_with_plus_and_none_is_neutral():
    assert NONE + INPUTS is INPUTS and INPUTS + NONE is INPUTS
    combined = INPUTS + TASK_SOURCE + RUN_ID
    assert isinstance(combined, CompoundCachePolicy) and combined.policies == DEFAULT.policies
    assert (DEFAULT - "x").policies[0] == Inputs(exclude=["x"])
    with pytest.raises(UsageError, match="is not a cache policy"):
        task(cache_policy="INPUTS")(lambda: None)


def test_keys_are_not_namespaced_by_task_as_in_prefect(runner):
    """Prefect's advanced caching docs: two tasks with INPUTS and equal inputs share a key;
    TASK_SOURCE (in DEFAULT) tells them apart."""

    @task(cache_policy=INPUTS)
    def one(x):
        return "one"

    @task(cache_policy=INPUTS)
    def two(x):
        return "two"

    @task(cache_policy=INPUTS + TASK_SOURCE)
    def three(x):
        return "three"

    @flow(task_runner=runner)
    def pipeline():
        return one(1), two(1), three(1)

    assert pipeline() == ("one", "one", "three")


# -- retries -------------------------------------------------------------------------------


def test_retry_condition_fn_decides_whether_to_retry(runner):
    attempts = []

    def retry_on_timeouts_only(task_, task_run, state):
        assert task_.name == "call_api" and task_run.name == "call_api"
        return isinstance(state.result(raise_on_failure=False), TimeoutError)

    @task(retries=3, retry_condition_fn=retry_on_timeouts_only)
    def call_api(error):
        attempts.append(error.__name__)
        raise error("no")

    @flow(task_runner=runner)
    def pipeline():
        return call_api(TimeoutError, return_state=True).name, call_api(ValueError, return_state=True).name

    assert pipeline() == ("Failed", "Failed")
    assert attempts == ["TimeoutError"] * 4 + ["ValueError"]


def test_a_retry_condition_that_raises_means_no_retry(runner):
    attempts = []

    @task(retries=2, retry_condition_fn=lambda t, r, s: 1 / 0)
    def flaky():
        attempts.append(1)
        raise ValueError("no")

    @flow(task_runner=runner)
    def pipeline():
        return flaky(return_state=True).is_failed()

    assert pipeline() and attempts == [1]


def test_retry_jitter_factor_spreads_the_delays_within_bounds(runner):
    random.seed(7)

    @task(retries=6, retry_delay_seconds=10, retry_jitter_factor=0.5)
    def flaky():
        raise ValueError("no")

    @task(retries=2, retry_delay_seconds=10)
    def steady():
        raise ValueError("no")

    @flow(task_runner=runner)
    def pipeline(t):
        return t(return_state=True).name

    with FakeClock() as clock:
        pipeline(flaky)
        jittered = list(clock.waits)
        pipeline(steady)
    assert len(jittered) == 6 and len(set(jittered)) == 6  # varied...
    assert all(0 < w <= 15 for w in jittered)  # ...never above 10 * (1 + 0.5)
    assert clock.waits[6:] == [10, 10]


def test_exponential_backoff_doubles_the_delay():
    @task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10))
    def t():
        pass

    assert t.retry_delays == (10.0, 20.0, 40.0)


def test_prefect_1_names_are_the_same_options():
    @task(max_retries=2, retry_delay=datetime.timedelta(seconds=5), log_stdout=True)
    def old():
        pass

    assert (old.retries, old.retry_delays, old.log_prints) == (2, (5.0,), True)
    with pytest.raises(UsageError, match="retries= and max_retries= are the same option"):
        task(retries=1, max_retries=2)(lambda: None)


# -- names, versions, descriptions ---------------------------------------------------------------


def test_task_run_name_template_and_callable(runner, recorder):
    def name_from_runtime():
        return f"{runtime_task_run.task_name}-with-{runtime_task_run.parameters['table']}-in-{runtime_flow_run.name}"

    @task(task_run_name="load-{table}")
    def load(table):
        return runtime_task_run.name

    @task(task_run_name=name_from_runtime)
    def save(table):
        return runtime_task_run.name

    @flow(task_runner=runner, flow_run_name="etl-{day:%Y-%m-%d}")
    def etl(day: datetime.date):
        return load("users"), save("orders"), runtime_flow_run.name

    assert etl(datetime.date(2024, 1, 31)) == ("load-users", "save-with-orders-in-etl-2024-01-31", "etl-2024-01-31")


def test_a_run_name_template_naming_no_parameter_says_so(runner):
    @task(task_run_name="load-{tabel}")
    def load(table):
        return table

    @flow(task_runner=runner)
    def pipeline():
        return load("x")

    with pytest.raises(UsageError, match=r"task_run_name='load-\{tabel\}' names \{tabel\}, which is not one of its parameters \(table\)"):
        pipeline()
    with pytest.raises(UsageError, match="must be a template string"):
        task(task_run_name=3)(lambda: None)


def test_version_and_description():
    @flow(version="1.2", description="Moves data.")
    def moves():
        """Docstring."""

    @task(version="7")
    def step():
        """Does a step."""

    assert (moves.version, moves.description, step.version, step.description) == ("1.2", "Moves data.", "7", "Does a step.")
    with pytest.raises(UsageError, match="version=3 must be a str"):
        task(version=3)(lambda: None)


def test_task_with_options_changes_only_what_it_is_given():
    @task(name="base", retries=2, tags=["a"], cache_policy=INPUTS)
    def base(x):
        return x

    copy = base.with_options(name="copy", retries=0)
    assert (copy.name, copy.retries, copy.tags, copy.cache_policy) == ("copy", 0, frozenset({"a"}), INPUTS)
    assert (base.name, base.retries) == ("base", 2)
    assert base.with_options(max_retries=4).retries == 4
    with pytest.raises(UsageError, match="'retires'"):
        base.with_options(retires=1)


def test_an_unknown_option_is_still_an_error_naming_it():
    with pytest.raises(UsageError, match="'result_storage_keyz'"):
        task(result_storage_keyz="x")(lambda: None)
    with pytest.raises(UsageError, match="'flow_run_nam'"):
        flow(flow_run_nam="x")(lambda: None)


# -- validate_parameters -----------------------------------------------------------------------


class Config(pydantic.BaseModel):
    rows: int
    name: str = "default"


def test_flow_parameters_are_coerced_from_their_type_hints(runner):
    @flow(task_runner=runner)
    def etl(day: datetime.date, limit: int, config: Config, tags: list[str] = ()):
        return day, limit, config, tags

    day, limit, config, tags = etl("2024-01-31", "5", {"rows": "3"}, tags=("x",))
    assert day == datetime.date(2024, 1, 31) and limit == 5 and config == Config(rows=3) and tags == ["x"]


def test_a_parameter_that_does_not_validate_names_itself_before_the_run(runner):
    ran = []

    @flow(task_runner=runner)
    def etl(limit: int):
        ran.append(limit)

    with pytest.raises(ParameterError, match=r"Flow 'etl'.*limit: .*\(got 'many'\).*validate_parameters=False"):
        etl("many")
    assert ran == []


def test_validate_parameters_false_passes_values_unchanged(runner):
    @flow(task_runner=runner, validate_parameters=False)
    def etl(limit: int):
        return limit

    assert etl("many") == "many"


# -- result_storage_key, on_running ------------------------------------------------------------


def test_result_storage_key_is_where_the_result_is_found_again(runner):
    calls = []

    @task(result_storage_key="weather-{parameters[city]}")
    def fetch(city, units="metric"):
        calls.append(city)
        return f"sunny in {city}"

    @flow(task_runner=runner)
    def pipeline(city):
        state = fetch(city, return_state=True)
        return state.name, state.result()

    first, again, other = pipeline("paris"), pipeline("paris"), pipeline("rome")
    assert (first, again, other) == (("Completed", "sunny in paris"), ("Cached", "sunny in paris"), ("Completed", "sunny in rome"))
    assert calls == ["paris", "rome"]


def test_result_storage_key_can_name_the_run(runner):
    @task(result_storage_key="{flow_run.name}/{task_run.task_name}-{parameters[units]}")
    def fetch(city, units="metric"):
        return city

    @flow(task_runner=runner, flow_run_name="daily")
    def pipeline():
        fetch("x")
        return fetch("x", return_state=True).name

    assert pipeline() == "Cached"
    assert repr(fetch.cache_policy) == "StorageKeyPolicy('{flow_run.name}/{task_run.task_name}-{parameters[units]}')"
    assert fetch.with_options(result_storage_key="k", cache_policy=NONE).cache_policy is None


def test_on_running_hooks_run_when_the_run_starts(runner):
    seen = []

    @task(on_running=[lambda t, run, state: seen.append(("task", t.name, run.name, state.name))])
    def work():
        seen.append(("body",))

    @flow(task_runner=runner, on_running=[lambda f, run, state: seen.append(("flow", f.name, run.name, state.name))])
    def pipeline():
        seen.append(("flow body",))
        work()

    pipeline()
    assert seen == [("flow", "pipeline", "pipeline", "Running"), ("flow body",), ("task", "work", "work", "Running"), ("body",)]


def test_hooks_register_as_decorators_as_in_prefect(runner):
    seen = []

    @task
    def work():
        return "world"

    @work.on_running
    def log_start(task_, task_run, state):
        seen.append(f"Starting {task_.name}!")

    @flow(task_runner=runner)
    def failing():
        work()
        raise ValueError("oops!")

    @failing.on_failure
    def notify(flow_, flow_run, state):
        seen.append(f"{flow_run.name} entered {state.name}")

    assert failing(return_state=True).is_failed()
    assert seen == ["Starting work!", "failing entered Failed"]
    assert log_start.__name__ == "log_start" and work.on_running == (log_start,)
    with pytest.raises(UsageError, match="on_failure must be a list of callables"):
        failing.on_failure(3)


def test_a_task_run_name_callable_may_take_the_parameters(runner):
    @task(task_run_name=lambda parameters: f"sum-{parameters['x']}-{parameters['y']}")
    def add(x, y=2):
        return runtime_task_run.name

    @flow(task_runner=runner)
    def pipeline():
        return add(1)

    assert pipeline() == "sum-1-2"


def test_tasks_and_flows_with_hooks_still_pickle():
    """Remote runners send tasks pickled: their hooks must travel with them."""
    import pickle

    import cloudpickle

    @task(on_failure=[print])
    def t(x):
        return x

    copied = pickle.loads(cloudpickle.dumps(t))
    assert copied.on_failure == (print,) and copied.on_failure._owner is copied
    copied.on_running(print)
    assert copied.on_running == (print,) and t.on_running == ()


def test_a_validated_flow_still_pickles_after_its_first_call(runner):
    import pickle

    import cloudpickle

    @flow(task_runner=runner)
    def etl(limit: int):
        return limit

    assert etl("3") == 3  # builds the pydantic model of its parameters
    assert pickle.loads(cloudpickle.dumps(etl))("4") == 4


def test_flow_validate_parameters_is_prefects_method():
    @flow
    def etl(day: datetime.date, limit: int = 10):
        pass

    assert etl.should_validate_parameters is True
    assert etl.validate_parameters({"day": "2024-01-31", "limit": "5"}) == {"day": datetime.date(2024, 1, 31), "limit": 5}
    with pytest.raises(ParameterError, match="limit"):
        etl.validate_parameters({"day": "2024-01-31", "limit": "many"})
    assert etl.with_options(validate_parameters=False).should_validate_parameters is False
