"""`DaskRunner` on a real `distributed.LocalCluster` of 2 worker processes (4 threads each)."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

pytest.register_assert_rewrite("_remote_cases", "_remote_value_cases")  # its asserts explain failures too

from _remote_cases import *  # noqa: F403 - every shared test runs here, on Dask
from _remote_cases import StepLog, recorded, use
from _remote_value_cases import *  # noqa: F403 - resource values of every type, on this runner
from _waiting import wait_until
from tether import flow, task
from tether._limits import limiter
from tether.runners import DaskRunner, DaskTaskRunner
from tether.runners._dask import QUIET_SCHEDULER
from tether.store import open_store

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

WORKERS, THREADS = 2, 4


@pytest.fixture(scope="module")
def cluster():
    """One cluster for the module. Like DaskRunner's own, Dask does not re-run a task whose
    worker died (allowed-failures 0): the engine decides."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        local = distributed.LocalCluster(
            n_workers=WORKERS, threads_per_worker=THREADS, host="127.0.0.1", dashboard_address=None, processes=True,
            scheduler_kwargs=QUIET_SCHEDULER,
        )
    client = distributed.Client(local, set_as_default=False)
    yield local, client
    client.close()
    local.close()


@pytest.fixture
def make_runner(cluster):
    local, client = cluster
    client.wait_for_workers(WORKERS, timeout=60)  # a test may have killed one; its nanny restarts it
    return lambda: DaskRunner(address=local.scheduler_address)


@pytest.fixture
def worker_count():
    return WORKERS


@pytest.fixture
def capacity():
    return WORKERS * THREADS


def test_prefect_name_is_an_alias():
    assert DaskTaskRunner is DaskRunner


def test_a_missing_dask_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[dask\]"'):
        DaskRunner().start()


def test_without_an_address_the_runner_starts_a_local_cluster_and_closes_it():
    runner = DaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1})

    @task
    def where():
        return os.getpid(), distributed.get_worker().address, distributed.get_worker().scheduler.address

    @flow(task_runner=runner)
    def pipeline():
        return where.submit().result()

    pid, worker, scheduler = pipeline()
    assert pid != os.getpid()
    assert worker.startswith("tcp://127.0.0.1:") and scheduler.startswith("tcp://127.0.0.1:")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the cluster was closed with the flow


def test_a_tag_limit_holds_across_dask_workers_and_threads(make_runner, tmp_path):
    log = StepLog(tmp_path / "spans.jsonl")

    @task(tags=["db"])
    def query(i):
        started = time.time()
        time.sleep(0.02)  # the query
        log.add("span", i=i, start=started, end=time.time())

    @flow(task_runner=make_runner())
    def pipeline():
        for future in query.map(range(50)):
            future.result()

    limiter().set_limit("tag:db", 2)
    try:
        pipeline()
    finally:
        limiter().remove_limit("tag:db")
    spans = log.entries("span")
    assert len(spans) == 50
    edges = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    assert peak == 2
    assert len({s["pid"] for s in spans}) == WORKERS  # spread over both workers, still two at a time


def test_a_worker_killed_mid_flow_has_its_runs_retried_and_its_copy_left_an_orphan(make_runner, tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    store.attach()
    log = StepLog(tmp_path / "steps.jsonl")
    release = tmp_path / "release"

    @task(retries=1)
    def hold(handle, i):
        handle.use(i)
        log.add("holding", i=i)
        wait_until(release.exists, what="the test to release the held tasks")
        return os.getpid()

    @flow(task_runner=make_runner())
    def pipeline():
        with recorded(log) as handle:
            warm = {f.result() for f in use.map(handle, range(40))}  # both workers hold a copy now
            held = [hold.submit(handle, i) for i in range(2)]
            wait_until(lambda: len(log.entries("holding")) == 2, what="both held tasks to run")
            victim = log.entries("holding")[0]["pid"]
            os.kill(victim, signal.SIGKILL)
            release.touch()
            return warm, victim, [f.result() for f in held]

    try:
        warm, victim, held_pids = pipeline()
        assert len(warm) == WORKERS and victim in warm
        assert victim not in held_pids  # its held task was retried elsewhere
        assert len(log.entries("holding")) == 3  # two, and the retry of the victim's
        store.flush()
        orphans = store.orphans()
        assert [(o.name, o.pid) for o in orphans] == [("recorded", victim)]
        assert "is gone" in orphans[0].orphan
        others = [e for e in store.resources() if e.pid != victim]
        assert others and all(e.status == "closed" for e in others)
    finally:
        store.close()


def test_a_prefect1_graph_runs_on_dask_with_per_worker_copies(make_runner, tmp_path):
    """A `with Flow(...)` graph through the same runner: the resource manager's value reaches
    the workers as their own copies, and every copy is cleaned up."""
    from tether import Flow, resource_manager

    marks = tmp_path / "marks"
    marks.mkdir()

    @resource_manager
    class Scratch:
        def __init__(self, folder):
            self.folder = folder

        def setup(self):
            path = os.path.join(self.folder, f"open-{os.getpid()}")
            open(path, "w").close()
            return path

        def cleanup(self, path):
            os.rename(path, path.replace("open-", "closed-"))

    @task
    def where(path, i):
        return os.getpid(), os.path.basename(path)

    @task
    def count(pairs):
        return len({pid for pid, _ in pairs})

    with Flow("graph-on-dask") as graph:
        with Scratch(str(marks)) as path:
            pairs = [where(path, i) for i in range(20)]
        workers = count(pairs)
    state = graph.run(task_runner=make_runner())
    assert state.is_successful(), state.message
    assert 1 <= state.result[workers].result <= WORKERS
    names = sorted(p.name for p in marks.iterdir())
    assert names and all(name.startswith("closed-") for name in names)  # every copy cleaned up
    for pid, name in (state.result[node].result for node in pairs):
        assert name == f"open-{pid}"  # each task saw its own worker's copy
