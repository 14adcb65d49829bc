"""tether.transactions: Prefect 3's transactions on resource scopes (issue #15 item 3).

A transaction's members are the task runs of its block; it ends after all of them, commits
(on_commit hooks, oldest first) or rolls back (on_rollback hooks, newest first) on the
scope's outcome, hands a nested transaction's children to its parent, keeps a record
under its key, and rolls back when the flow is interrupted.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading

import cloudpickle
import pytest

from tether import CleanupError, flow, task
from tether.runners import ProcessPoolRunner
from tether.transactions import (
    CommitMode,
    IsolationLevel,
    Transaction,
    TransactionState,
    _TransactionScope,
    get_transaction,
    transaction,
)


def recorder(log: list[str], label: str):
    def hook(txn: Transaction) -> None:
        log.append(label)

    hook.__name__ = label
    return hook


def test_a_later_failing_task_rolls_back_the_completed_one_as_in_prefects_first_example(tmp_path):
    side_effect = tmp_path / "side-effect.txt"
    log: list[str] = []

    @task
    def write_file(contents: str) -> None:
        side_effect.write_text(contents)

    @write_file.on_rollback
    def del_file(txn: Transaction) -> None:
        log.append(f"rollback {txn.get('filename')}")
        side_effect.unlink()

    write_file.on_commit(recorder(log, "commit"))

    @task
    def quality_test() -> None:
        if len(side_effect.read_text().splitlines()) < 2:
            raise ValueError("Not enough data!")

    @flow
    def pipeline(contents: str) -> None:
        with transaction() as txn:
            txn.set("filename", side_effect.name)
            write_file(contents)
            quality_test()

    with pytest.raises(ValueError, match="Not enough data"):
        pipeline("hello world")
    assert log == ["rollback side-effect.txt"]
    assert not side_effect.exists()

    log.clear()
    pipeline("hello\nworld")
    assert log == ["commit"]
    assert side_effect.exists()


def test_commit_hooks_run_oldest_first_and_rollback_hooks_newest_first(runner):
    log: list[str] = []

    def make(name: str):
        t = task(lambda: name, name=name, on_commit=[recorder(log, f"commit {name}")])
        t.on_rollback(recorder(log, f"rollback {name} first-registered"))
        t.on_rollback(recorder(log, f"rollback {name} last-registered"))
        return t

    a, b = make("a"), make("b")

    @task
    def boom() -> None:
        raise RuntimeError("boom")

    @flow(task_runner=runner)
    def ok() -> TransactionState:
        with transaction() as txn:
            a()
            b.submit().result()
        return txn.state

    assert ok() is TransactionState.COMMITTED
    assert log == ["commit a", "commit b"]

    log.clear()

    @flow(task_runner=runner)
    def bad() -> None:
        with transaction():
            a()
            b.submit().result()
            boom()

    with pytest.raises(RuntimeError, match="boom"):
        bad()
    assert log == [
        "rollback b last-registered", "rollback b first-registered",
        "rollback a last-registered", "rollback a first-registered",
    ]


def test_the_transaction_ends_only_after_a_submitted_task_ends_even_when_the_block_raised(monkeypatch):
    block_closed, release, body_done = threading.Event(), threading.Event(), threading.Event()
    log: list[str] = []
    seen_when_block_closed: list[list[str]] = []
    close_block = _TransactionScope.close_block

    def closing(self, error):
        close_block(self, error)
        block_closed.set()

    monkeypatch.setattr(_TransactionScope, "close_block", closing)

    @task
    def slow() -> None:
        release.wait(30)
        body_done.set()

    @slow.on_rollback
    def undo(txn: Transaction) -> None:
        log.append(f"rollback, body done: {body_done.is_set()}")

    def releaser() -> None:
        block_closed.wait(30)
        seen_when_block_closed.append(list(log))
        release.set()

    helper = threading.Thread(target=releaser)
    helper.start()

    @flow
    def pipeline() -> None:
        with transaction():
            slow.submit()
            raise KeyError("the block failed")

    with pytest.raises(KeyError):
        pipeline()
    helper.join()
    assert seen_when_block_closed == [[]]  # the block was over, the task still ran: nothing yet
    assert log == ["rollback, body done: True"]


def test_a_failed_submitted_task_rolls_back_even_if_the_block_never_looks_at_it():
    log: list[str] = []

    @task(on_rollback=[recorder(log, "undo first")])
    def first() -> int:
        return 1

    @task
    def fails() -> None:
        raise ValueError("late failure")

    @flow
    def pipeline() -> TransactionState:
        with transaction() as txn:
            first()
            fails.submit()
        return txn.state

    state = pipeline(return_state=True)
    assert state.is_failed()  # nobody looked at the failure: the flow fails, as always
    assert log == ["undo first"]


def test_retries_belong_to_the_run_so_a_retried_run_that_succeeds_commits():
    attempts: list[int] = []
    log: list[str] = []

    @task(retries=2, on_commit=[recorder(log, "commit")], on_rollback=[recorder(log, "rollback")])
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    @flow
    def pipeline() -> str:
        with transaction():
            return flaky()

    assert pipeline() == "ok"
    assert log == ["commit"]


def test_a_nested_transaction_hands_its_children_to_its_parent_and_its_rollback_rolls_back_the_parent():
    log: list[str] = []
    outer_task = task(lambda: None, name="outer_task", on_commit=[recorder(log, "commit outer")],
                      on_rollback=[recorder(log, "rollback outer")])
    inner_task = task(lambda: None, name="inner_task", on_commit=[recorder(log, "commit inner")],
                      on_rollback=[recorder(log, "rollback inner")])

    @task
    def fails() -> None:
        raise ValueError("inner failed")

    @flow
    def nested_ok() -> list[str]:
        with transaction() as outer:
            outer_task()
            with transaction() as inner:
                inner_task()
            states = [inner.state.value]  # LAZY with a parent: not committed yet
        return states + [inner.state.value, outer.state.value]

    assert nested_ok() == ["ACTIVE", "COMMITTED", "COMMITTED"]
    assert log == ["commit outer", "commit inner"]

    log.clear()

    @flow
    def nested_fails() -> list[str]:
        with transaction() as outer:
            outer_task()
            try:
                with transaction() as inner:
                    inner_task()
                    fails()
            except ValueError:
                pass  # caught: Prefect still rolls the parent back
        return [inner.state.value, outer.state.value]

    assert nested_fails() == ["ROLLED_BACK", "ROLLED_BACK"]  # the flow caught the failure: it completes
    assert log == ["rollback inner", "rollback outer"]


def test_get_and_set_copy_values_fall_back_to_the_parent_and_a_task_sees_its_own_transaction():
    seen: list[object] = []

    @task
    def writes(name: str) -> None:
        txn = get_transaction()
        assert txn is not None
        txn.set("name", name)  # the run's own transaction: each mapped run keeps its own
        seen.append(txn.get("shared"))

    @writes.on_rollback
    def undo(txn: Transaction) -> None:
        assert get_transaction() is txn  # as Prefect's 3.0 docs read it in a hook
        seen.append(f"undo {txn.get('name')}")

    @task
    def fails() -> None:
        raise RuntimeError("x")

    @flow
    def pipeline() -> None:
        with transaction() as txn:
            txn.set("shared", [1, 2])
            copy = txn.get("shared")
            copy.append(3)
            assert txn.get("shared") == [1, 2]
            assert txn.get("missing", "default") == "default"
            with pytest.raises(ValueError, match="txn.set\\('missing'"):
                txn.get("missing")
            writes.map(["a", "b"]).result()
            fails()

    with pytest.raises(RuntimeError):
        pipeline()
    assert seen[:2] == [[1, 2], [1, 2]]
    assert sorted(seen[2:]) == ["undo a", "undo b"]


def test_a_keyed_transaction_begins_committed_once_its_record_exists(caplog):
    log: list[str] = []
    key = f"download-and-write-data-{os.getpid()}-{id(log)}"

    @task(on_commit=[recorder(log, "wrote")])
    def write_data() -> None:
        pass

    @flow
    def pipeline(overwrite: bool = False) -> str:
        with transaction(key=key, overwrite=overwrite) as txn:
            if txn.is_committed():
                return "already written"
            write_data()
        return "written"

    assert pipeline() == "written"
    assert pipeline() == "already written"
    assert pipeline(overwrite=True) == "written"
    assert log == ["wrote", "wrote"]

    @flow
    def ignores_the_record() -> bool:
        with transaction(key=key) as txn:
            write_data()  # runs, but the transaction was committed before: its hooks are not run
        return txn.is_committed()

    with caplog.at_level(logging.WARNING, logger="tether"):
        assert ignores_the_record() is True
    assert log == ["wrote", "wrote"]
    assert "had been committed already" in caplog.text and "check txn.is_committed() first" in caplog.text
    assert transaction(key=key).read().result is None


def test_commit_modes_off_rolls_back_unless_committed_and_eager_commits_each_run_as_it_completes():
    log: list[str] = []
    first = task(lambda: None, name="first", on_commit=[recorder(log, "commit first")], on_rollback=[recorder(log, "rollback first")])

    @task
    def second() -> None:
        log.append("second ran")

    @flow
    def off(commit: bool) -> str:
        with transaction(commit_mode=CommitMode.OFF) as txn:
            first()
            if commit:
                assert txn.commit() is True
        return txn.state.value

    assert off(False) == "ROLLED_BACK"
    assert log == ["rollback first"]
    log.clear()
    assert off(True) == "COMMITTED"
    assert log == ["commit first"]
    log.clear()

    @flow
    def eager() -> None:
        with transaction(commit_mode=CommitMode.EAGER):
            first()
            second()

    eager()
    assert log == ["commit first", "second ran"]


def test_outside_a_flow_a_transaction_is_plain_and_called_tasks_are_its_members():
    log: list[str] = []

    @task(on_commit=[recorder(log, "commit")], on_rollback=[recorder(log, "rollback")])
    def step() -> int:
        assert get_transaction() is not None
        return 1

    with transaction() as txn:
        assert step() == 1
    assert txn.is_committed() and log == ["commit"]

    log.clear()
    with pytest.raises(ZeroDivisionError), transaction() as txn:
        step()
        raise ZeroDivisionError("after the task")
    assert txn.is_rolled_back() and log == ["rollback"]
    assert get_transaction() is None

    def broken(txn: Transaction) -> None:
        raise OSError("hook broke")

    breaks = task(lambda: 1, name="breaks", on_commit=[broken], on_rollback=[broken])
    with pytest.raises(CleanupError, match="the on_commit hook 'broken' of the transaction of task run 'breaks' raised OSError"), transaction():
        breaks()
    with pytest.raises(KeyError, match="the block's own"), transaction():  # a failing hook never hides the first error
        breaks()
        raise KeyError("the block's own")


def test_a_transaction_opened_in_a_task_body_has_the_runs_that_body_calls_as_members(runner):
    log: list[str] = []
    step = task(lambda: None, name="step", on_commit=[recorder(log, "commit step")], on_rollback=[recorder(log, "undo step")])

    @task
    def fails() -> None:
        raise ValueError("inside the task")

    @task
    def parent(fail: bool) -> str:
        with transaction() as txn:
            step()
            if fail:
                fails()
        return txn.state.value

    @task
    def catches() -> str:
        with transaction() as txn:
            step()
            try:
                fails()
            except ValueError:
                pass  # looked at, but the run failed: the transaction rolls back, as in Prefect
        return txn.state.value

    @flow(task_runner=runner)
    def pipeline(fail: bool) -> str:
        return parent.submit(fail).result()

    assert pipeline(False) == "COMMITTED"
    assert log == ["commit step"]
    log.clear()
    with pytest.raises(ValueError, match="inside the task"):
        pipeline(True)
    assert log == ["undo step"]
    log.clear()

    @flow(task_runner=runner)
    def caught() -> str:
        return catches()

    assert caught() == "ROLLED_BACK"
    assert log == ["undo step"]


def test_a_hook_that_raises_is_reported_the_others_still_run_and_the_flow_fails():
    log: list[str] = []

    def broken(txn: Transaction) -> None:
        raise OSError("disk gone")

    first = task(lambda: None, name="first", on_rollback=[recorder(log, "undo first")])
    second = task(lambda: None, name="second", on_rollback=[broken])

    @task
    def fails() -> None:
        raise ValueError("the real error")

    @flow
    def pipeline() -> None:
        with transaction():
            first()
            second()
            fails()

    with pytest.raises(ValueError, match="the real error"):  # the hook's error never hides the first
        pipeline()
    assert log == ["undo first"]

    good = task(lambda: None, name="good", on_commit=[broken], on_rollback=[recorder(log, "undo good")])

    @flow
    def commit_fails() -> None:
        with transaction():
            good()

    log.clear()
    state = commit_fails(return_state=True)
    assert state.is_failed()
    assert "the on_commit hook 'broken' of the transaction of task run 'good' raised OSError: disk gone" in str(state.message)
    assert log == ["undo good"]  # a failing commit rolls back instead, as in Prefect


def test_serializable_transactions_on_one_key_run_one_after_the_other(tmp_path):
    key = f"race-{os.getpid()}-{id(tmp_path)}"
    first_in, first_go, second_trying, second_in = (threading.Event() for _ in range(4))
    seen: list[bool] = []

    def first() -> None:
        with transaction(key=key, isolation_level=IsolationLevel.SERIALIZABLE) as txn:
            seen.append(txn.is_committed())
            first_in.set()
            first_go.wait(30)

    def second() -> None:
        second_trying.set()
        with transaction(key=key, isolation_level=IsolationLevel.SERIALIZABLE) as txn:
            second_in.set()
            seen.append(txn.is_committed())  # it began after the first committed: it sees the record

    a = threading.Thread(target=first)
    a.start()
    first_in.wait(30)
    b = threading.Thread(target=second)
    b.start()
    second_trying.wait(30)
    # A wait for something that must not happen: it can only pass early if the lock is broken.
    assert not second_in.wait(0.2)
    first_go.set()
    a.join(30)
    b.join(30)
    assert seen == [False, True]

    seen.clear()
    with transaction(key=key, isolation_level=IsolationLevel.SERIALIZABLE, overwrite=True) as txn:
        seen.append(txn.is_committed())  # the lock was let go; overwrite ignores the record
    assert seen == [False]


def test_hooks_travel_with_the_task_and_with_options_keeps_them():
    hook = recorder([], "h")
    t = task(lambda: 1, name="t", on_commit=[hook])
    assert t.on_commit_hooks == [hook] and t.on_rollback_hooks == []
    assert list(t.with_options(retries=1).on_commit) == [hook]
    copied = cloudpickle.loads(cloudpickle.dumps(t))  # how a task reaches a process pool's worker
    assert list(copied.on_commit) == [copied.on_commit[0]] and type(copied.on_commit) is type(t.on_commit)
    with pytest.raises(TypeError, match="on_rollback must be a list of callables"):
        task(lambda: 1, on_rollback=["nope"])
    with pytest.raises(TypeError, match="store="):
        transaction(store=object())


def test_tasks_on_a_process_pool_count_and_their_hooks_run_in_the_flow_process():
    log: list[str] = []
    parent = os.getpid()

    @flow(task_runner=ProcessPoolRunner(1))
    def pipeline() -> None:
        with transaction():
            square.submit(3).result()
            fails.submit().wait()

    square.on_rollback(lambda txn: log.append(f"undo in flow process: {os.getpid() == parent}"))
    try:
        state = pipeline(return_state=True)
    finally:
        square.on_rollback = type(square.on_rollback)((), square, "on_rollback")
    assert state.is_completed()  # the failure was looked at (wait)
    assert log == ["undo in flow process: True"]


@task
def square(x: int) -> int:
    return x * x


@task
def fails() -> None:
    raise ValueError("fails on a worker")


INTERRUPTED = textwrap.dedent(
    """
    import sys, time
    from tether import flow, task
    from tether.transactions import transaction

    @task
    def write():
        return "written"

    @write.on_rollback
    def undo(txn):
        print("rolled back", txn.get("what"), flush=True)

    @task
    def long_step():
        print("ready", flush=True)
        time.sleep(60)

    @flow
    def pipeline():
        with transaction() as txn:
            txn.set("what", "the write")
            write()
            long_step()
        print("never here", flush=True)

    pipeline()
    """
)


def test_sigterm_inside_a_transaction_rolls_it_back_before_the_process_exits(tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TETHER_INTERRUPT_GRACE_SECONDS": "2"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert out.splitlines() == ["rolled back the write"], err
    assert proc.returncode == 143, err


def test_a_member_runs_cached_result_is_kept_only_if_its_transaction_commits():
    """As Prefect persists a task's result in a transaction only at commit: a rolled-back
    member's cached result is gone, so the next run computes it again."""
    from tether._cache import MISSING, results

    calls: list[str] = []

    @task(cache_key_fn=lambda *args, **kwargs: "txn-cache-load")
    def load() -> str:
        calls.append("load")
        return "data"

    @task
    def process(data: str, fail: bool) -> int:
        if fail:
            raise RuntimeError("abort")
        return len(data)

    @flow
    def pipeline(fail: bool) -> int:
        with transaction():
            data = load()
            return process(data, fail)

    with pytest.raises(RuntimeError, match="abort"):
        pipeline(True)
    assert results().get("txn-cache-load") is MISSING  # rolled back: not kept
    assert pipeline(False) == 4
    assert calls == ["load", "load"]
    assert results().get("txn-cache-load") == "data"  # committed: kept
    assert pipeline(False) == 4 and calls == ["load", "load"]  # and used
