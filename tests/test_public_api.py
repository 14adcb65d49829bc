"""The public surface: what ``import tether`` offers, and Prefect's names for it."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import subprocess
import sys

import pytest

import tether


def public_names(module) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name not in {"annotations"}
    }


PREFECT_PATHS = [
    "tether.cache_policies",
    "tether.client.schemas.objects",
    "tether.client.schemas.schedules",
    "tether.context",
    "tether.exceptions",
    "tether.flows",
    "tether.futures",
    "tether.logging",
    "tether.logging.loggers",
    "tether.task_runners",
    "tether.tasks",
    "tether.variables",
    "tether.artifacts",
    "tether.blocks.system",
]


@pytest.mark.parametrize("module_name", ["tether", "tether.runners", "tether.states", "tether.resources", *PREFECT_PATHS])
def test_all_is_sorted_and_equals_the_public_names(module_name):
    module = importlib.import_module(module_name)
    assert module.__all__ == sorted(module.__all__), f"{module_name}.__all__ is not sorted"
    assert len(set(module.__all__)) == len(module.__all__), f"{module_name}.__all__ has duplicates"
    assert not [n for n in module.__all__ if n.startswith("_")], "private names in __all__"
    assert set(module.__all__) == public_names(module)


def test_the_authoring_api_imports_as_in_prefect():
    from tether import (  # noqa: F401
        as_completed,
        flow,
        get_run_logger,
        resource,
        resource_manager,
        tags,
        task,
        unmapped,
        wait,
    )
    from tether.states import Cancelled, Completed, Crashed, Failed, Pending, Running, State  # noqa: F401

    assert State is tether.State


@pytest.mark.parametrize(
    ("ours", "prefects"),
    [
        ("ThreadPoolRunner", "ThreadPoolTaskRunner"),
        ("ProcessPoolRunner", "ProcessPoolTaskRunner"),
        ("DaskRunner", "DaskTaskRunner"),
        ("RayRunner", "RayTaskRunner"),
    ],
)
def test_prefect_runner_names_are_aliases_of_ours(ours, prefects):
    runners = importlib.import_module("tether.runners")
    if not hasattr(runners, ours):
        raise AssertionError(f"{ours} is missing")
    assert getattr(runners, prefects) is getattr(runners, ours)
    assert prefects in runners.__all__ and ours in runners.__all__


def test_the_default_runner_is_the_thread_pool():
    from tether.runners import ThreadPoolRunner, ThreadPoolTaskRunner

    @tether.flow
    def pipeline():
        pass

    assert isinstance(pipeline.task_runner, ThreadPoolRunner)
    assert ThreadPoolTaskRunner is ThreadPoolRunner


def test_the_inline_runner_is_public():
    from tether.runners import InlineRunner, TaskRunner

    assert issubclass(InlineRunner, TaskRunner)


def test_the_package_is_typed_and_versioned():
    assert (pathlib.Path(tether.__file__).parent / "py.typed").exists()
    assert isinstance(tether.__version__, str) and tether.__version__


def test_every_exported_name_is_documented():
    undocumented = [n for n in tether.__all__ if inspect.isclass(getattr(tether, n)) and not getattr(tether, n).__doc__]
    assert undocumented == []


def test_the_testing_module_exports_what_it_lists():
    import tether.testing

    assert tether.testing.__all__ == sorted(tether.testing.__all__)
    for name in tether.testing.__all__:
        assert hasattr(tether.testing, name), name
    assert {"FakeClock", "InlineRunner"} <= set(tether.testing.__all__)


# -- Prefect's module paths ------------------------------------------------------------------


def test_prefects_module_paths_name_tethers_own_objects():
    from tether import cache_policies, context, exceptions, futures, logging, task_runners, tasks
    from tether.client.schemas import objects

    assert futures.PrefectFuture is tether.TaskFuture and futures.wait is tether.wait
    assert futures.as_completed is tether.as_completed and futures.PrefectFutureList is tether.TaskFutureList
    assert tether.flows.Flow is tether.FlowFunction and tether.flows.flow is tether.flow
    assert tasks.task_input_hash is tether.task_input_hash and tasks.Task is tether.Task and tasks.task is tether.task
    assert task_runners.ThreadPoolTaskRunner is tether.runners.ThreadPoolRunner
    assert task_runners.ConcurrentTaskRunner is tether.runners.ThreadPoolRunner  # Prefect 2's name
    assert task_runners.SequentialTaskRunner is tether.runners.InlineRunner
    assert task_runners.DaskTaskRunner is tether.runners.DaskRunner
    assert logging.get_run_logger is tether.get_run_logger
    assert exceptions.PrefectException is tether.TetherError
    assert exceptions.UpstreamTaskError is tether.UpstreamFailedError
    assert exceptions.MissingContextError is tether.MissingContextError
    assert objects.State is tether.State and objects.Flow is tether.FlowFunction
    assert {"FlowRun", "TaskRun", "StateType"} <= set(objects.__all__)
    from tether.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    assert CronSchedule is tether.schedules.CronSchedule and IntervalSchedule and RRuleSchedule
    assert {"FlowRunContext", "TaskRunContext", "get_run_context", "tags"} == set(context.__all__)
    assert context.tags is tether.tags
    assert {"INPUTS", "TASK_SOURCE", "NONE", "DEFAULT", "RUN_ID"} <= set(cache_policies.__all__)


def test_prefects_state_names_and_functions():
    from tether import states

    for name in ["Scheduled", "Late", "Paused", "Suspended", "Pending", "AwaitingRetry", "AwaitingConcurrencySlot"]:
        state = getattr(states, name)()
        assert state.is_pending() and state.name == name
    assert states.Cancelling().is_running() and states.Cached().is_completed() and states.TimedOut().is_failed()
    failed = states.Failed(ValueError("bad"), message="it broke")
    assert isinstance(states.get_state_exception(failed), ValueError)
    with pytest.raises(ValueError, match="bad"):
        states.raise_state_exception([states.Completed(1), failed])
    with pytest.raises(ValueError, match="no exception"):
        states.get_state_exception(states.Completed(1))
    assert states.return_value_to_state([states.Completed(1), failed]).is_failed()
    assert states.return_value_to_state(5).result() == 5
    assert states.is_state_iterable([states.Completed()]) and not states.is_state_iterable([1])
    try:
        raise KeyError("k")
    except KeyError:
        assert isinstance(states.exception_to_failed_state().data, KeyError)


def test_import_tether_alone_reaches_every_public_submodule():
    """In a fresh interpreter: tether.limits.set(...) as the README shows, and the rest."""
    code = (
        "import tether\n"
        "for name in ['limits', 'resources', 'states', 'runtime', 'runners', 'store', 'futures', 'tasks',\n"
        "             'task_runners', 'logging', 'exceptions', 'context', 'cache_policies', 'client', 'sql', 'testing',\n"
        "             'flows', 'utilities', 'variables', 'artifacts', 'blocks', 'transactions']:\n"
        "    assert hasattr(tether, name), name\n"
        "assert callable(tether.limits.set)\n"
        "assert tether.runtime.flow_run.id is None\n"
        "assert tether.client.schemas.objects.FlowRun.__name__ == 'FlowRun'\n"
        "import sys; print('sqlalchemy.orm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_a_missing_attribute_of_tether_says_so():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        tether.nonexistent  # noqa: B018


def test_get_run_logger_outside_a_run_raises_prefects_error_unless_disabled():
    from tether.logging import disable_run_logger, get_logger, get_run_logger

    with pytest.raises(tether.MissingContextError, match="outside a flow or task run"):
        get_run_logger()
    with disable_run_logger():
        get_run_logger().info("dropped")  # a task's .fn tested without a run
    with pytest.raises(tether.MissingContextError):
        get_run_logger()
    assert get_logger("mine").name == "tether.mine" and get_logger().name == "tether"


def test_a_hook_logs_to_its_run_through_prefects_flow_run_logger(runner):
    from tether._core import LogEmitted
    from tether.logging.loggers import flow_run_logger, task_run_logger
    from tether.testing import RecordingStore

    @tether.task(on_completion=[lambda t, run, state: task_run_logger(run, t).info("task %s done", run.name)])
    def work():
        return 1

    @tether.flow(task_runner=runner, on_completion=[lambda f, run, state: flow_run_logger(run, f).info("flow %s done", run.name)])
    def pipeline():
        return work()

    with RecordingStore() as store:
        pipeline()
    logged = [e.message for e in store.events if isinstance(e, LogEmitted)]
    assert "task work done" in logged and "flow pipeline done" in logged
