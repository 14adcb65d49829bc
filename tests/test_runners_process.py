"""`ProcessPoolRunner`: task bodies in worker processes, per-worker resource copies, timeouts."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

pytest.register_assert_rewrite("_remote_cases", "_remote_value_cases")  # its asserts explain failures too

from _remote_cases import *  # noqa: F403 - every shared test runs here, on the process runner
from _remote_value_cases import *  # noqa: F403 - resource values of every type, on this runner
from _remote_cases import StepLog
from tether import UsageError, flow, resource, task
from tether.runners import ProcessPoolRunner, ProcessPoolTaskRunner
from tether.testing import RecordingStore

WORKERS = 2


@pytest.fixture
def make_runner():
    return lambda: ProcessPoolRunner(max_workers=WORKERS)


@pytest.fixture
def worker_count():
    return WORKERS


@pytest.fixture
def capacity():
    return WORKERS  # one task at a time per worker process


def test_prefect_name_is_an_alias():
    assert ProcessPoolTaskRunner is ProcessPoolRunner


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_bad_max_workers_is_refused_with_the_right_call(bad):
    with pytest.raises(UsageError, match=r"ProcessPoolRunner\(max_workers=.*number of worker processes.*ProcessPoolRunner\(max_workers=4\)"):
        ProcessPoolRunner(max_workers=bad)


def test_a_resource_whose_value_is_a_dict_is_opened_on_the_worker_not_pickled():
    @resource
    def settings():
        yield {"opened_in": os.getpid()}

    @task
    def where(value):
        return value["opened_in"], os.getpid()

    @flow(task_runner=ProcessPoolRunner(max_workers=1))
    def pipeline():
        with settings() as value:
            return where.submit(value).result()

    opened_in, ran_in = pipeline()
    assert opened_in == ran_in != os.getpid()


def test_async_tasks_and_printed_lines_run_on_workers(monkeypatch):
    @task(log_prints=True)
    async def hello(i):
        await asyncio.sleep(0)
        print(f"hello {i} from {os.getpid()}")
        return os.getpid()

    @flow(task_runner=ProcessPoolRunner(max_workers=1))
    def pipeline():
        return [f.result() for f in hello.map(range(2))]

    with RecordingStore() as store:
        pids = pipeline()
    assert os.getpid() not in pids
    assert sorted(e.message for e in store.logs() if e.message.startswith("hello")) == [f"hello {i} from {pids[i]}" for i in range(2)]


def test_a_body_blocked_past_its_timeout_ends_its_worker_process_and_the_pool_replaces_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_INTERRUPT_GRACE_SECONDS", "0.5")
    log = StepLog(tmp_path / "steps.jsonl")

    @task(timeout_seconds=0.3)
    def blocked():
        log.add("started")
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # like a body stuck in C: no interrupt lands
        time.sleep(60)

    @task
    def where():
        return os.getpid()

    futures = []

    @flow(task_runner=ProcessPoolRunner(max_workers=1))
    def pipeline():
        futures.append(blocked.submit())
        futures[0].wait()
        return where.submit().result()

    state = pipeline(return_state=True)
    (started,) = log.entries("started")
    assert state.is_completed()  # .wait() looked at the timed-out run, as in Prefect
    assert futures[0].state.name == "TimedOut"
    assert f"its worker process {started['pid']} takes no more calls" in futures[0].state.message
    with pytest.raises(ProcessLookupError):
        os.kill(started["pid"], 0)


def test_a_worker_that_dies_fails_its_task_run_which_is_retried(tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")

    @task(retries=1)
    def dies_once():
        log.add("attempt")
        if len(log.entries("attempt")) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return os.getpid()

    @flow(task_runner=ProcessPoolRunner(max_workers=1))
    def pipeline():
        return dies_once.submit().result()

    with RecordingStore() as store:
        pid = pipeline()
    first, second = log.entries("attempt")
    assert pid == second["pid"] != first["pid"]
    (run,) = store.runs("task")
    assert store.states_of(run.run_id) == ["Running", "AwaitingRetry", "Retrying", "Completed"]


def test_a_worker_that_dies_without_retries_left_crashes_its_task_run():
    @task
    def dies():
        os.kill(os.getpid(), signal.SIGKILL)

    futures = []

    @flow(task_runner=ProcessPoolRunner(max_workers=1))
    def pipeline():
        futures.append(dies.submit())
        return futures[0].result()

    state = pipeline(return_state=True)
    assert state.is_failed() and "WorkerLost: worker process" in state.message
    assert futures[0].state.name == "Crashed" and "was lost with its worker" in futures[0].state.message


def test_the_runner_stops_its_worker_processes():
    runner = ProcessPoolRunner(max_workers=2)
    with runner:
        pids = runner.worker_pids
        assert len(pids) == 2
        assert runner.submit(os.getpid).result() in pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
