"""Resource values of any type on a runner whose workers are other processes.

Star-imported by each remote runner's test module, which provides ``make_runner``.
What happened is read from a record file that every process appends lines to.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tether import ResourceClosedError, flow, resource, task


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@resource
def config(record: str):
    value = {"open": True}
    _append(record, f"setup {os.getpid()}")
    try:
        yield value
        _append(record, f"cleanup {os.getpid()} ok")
    except BaseException as exc:
        _append(record, f"cleanup {os.getpid()} {type(exc).__name__}")
        raise
    finally:
        value["open"] = False


@resource
def schema_name(record: str):
    _append(record, f"setup {os.getpid()}")
    yield "public"
    _append(record, f"cleanup {os.getpid()} ok")


@resource
def nothing(record: str):
    _append(record, f"setup {os.getpid()}")
    yield None
    _append(record, f"cleanup {os.getpid()} ok")


@task
def read_open(value: dict, record: str, label: str, gate: str | None = None) -> bool:
    if gate is not None:
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:  # another process writes it
            time.sleep(0.01)
    _append(record, f"task {label} {os.getpid()}")
    return bool(value["open"])


@task
def echo(value):
    return value


def test_a_dict_value_keeps_its_scope_for_a_task_submitted_after_the_block(make_runner, tmp_path):
    record, gate = str(tmp_path / "record"), str(tmp_path / "gate")

    @flow(task_runner=make_runner())
    def pipeline():
        with config(record) as value:
            first = read_open.submit(value, record, "inside", gate)
        later = read_open.submit(value, record, "after-block")  # a member: it received the value
        Path(gate).touch()
        return first.result(), later.result()

    assert pipeline() == (True, True)
    lines = _lines(Path(record))
    setups = [line for line in lines if line.startswith("setup")]
    cleanups = [line for line in lines if line.startswith("cleanup")]
    assert len(setups) == len(cleanups) >= 1
    assert all(line.endswith(" ok") for line in cleanups)
    last_task = max(i for i, line in enumerate(lines) if line.startswith("task"))
    assert min(i for i, line in enumerate(lines) if line.startswith("cleanup")) > last_task


def test_a_str_value_is_a_str_in_the_flow_body_and_an_equal_literal_never_joins(make_runner, tmp_path):
    record = str(tmp_path / "record")

    @flow(task_runner=make_runner())
    def pipeline():
        with schema_name(record) as name:
            assert isinstance(name, str) and f"{name}.sales" == "public.sales"
            inside = echo.submit(name).result()
        name_scope_done = echo.submit("public").result()  # the literal: not the resource's value
        with pytest.raises(ResourceClosedError, match="already cleaned up"):
            echo.submit(name)
        return inside, name_scope_done

    assert pipeline() == ("public", "public")
    lines = _lines(Path(record))
    assert len([line for line in lines if line.startswith("setup")]) == len([line for line in lines if line.startswith("cleanup")])


def test_a_none_value_is_none_in_the_flow_body(make_runner, tmp_path):
    record = str(tmp_path / "record")

    @flow(task_runner=make_runner())
    def pipeline():
        with nothing(record) as value:
            assert value is None
            return echo.submit(value).result()

    assert pipeline() is None
    lines = _lines(Path(record))
    assert len([line for line in lines if line.startswith("setup")]) == len([line for line in lines if line.startswith("cleanup")]) == 1
