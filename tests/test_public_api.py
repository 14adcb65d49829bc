"""The public surface: what ``import tether`` offers, and Prefect's names for it."""

from __future__ import annotations

import importlib
import inspect
import pathlib

import pytest

import tether


def public_names(module) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name not in {"annotations"}
    }


@pytest.mark.parametrize("module_name", ["tether", "tether.runners", "tether.states"])
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
