"""The store's pure parts, without a database: folding events into rows, redaction, the orphan rule."""

from __future__ import annotations

import json
import os

import pytest

from tether._core import Completed, Failed, LogEmitted, Pending, ResourceEvent, RunCreated, Running, StateChanged
from tether._known_secrets import REDACTED, forget_secrets, remember_secret, remember_secret_fields
from tether.store import _spool
from tether.store._encode import (
    LAYOUTS,
    LOG,
    RECORD_LENGTHS,
    RESOURCE,
    RUN,
    RUN_1,
    STATE,
    Encoder,
    parameters_json,
    split_records,
)
from tether.store._ledger import ProcessInfo, orphan_reason, process_alive
from tether.store._plan import TASK_COLUMNS, Planner
from tether.store._redact import redact_parameters, redact_text
from tether.store._writer_process_main import DEFER_SECONDS, QUIET_SECONDS, Backlog
from tether.testing import FakeClock

PROCESS = ProcessInfo(pid=4242, host="here", started="1")


def plan(planner: Planner, events: list) -> None:
    """What the recorder does with a burst: encode it (in the flow's process), then plan it."""
    planner.add(Encoder(PROCESS.host, PROCESS.pid).encode(events))


def created(run_id: str, kind: str = "task", parameters: dict | None = None) -> RunCreated:
    return RunCreated(run_id, kind, "t", "flow1", "flow1", frozenset({"b", "a"}), parameters or {}, 1.0)


def changed(run_id: str, new, kind: str = "task", count: int = 1) -> StateChanged:
    return StateChanged(run_id, kind, "t", "flow1", "flow1", Pending(), new, count)


def row(values: list) -> dict:
    return dict(zip(TASK_COLUMNS, values))


def test_a_task_run_that_ends_within_the_hold_is_one_insert_with_its_final_state():
    planner = Planner(PROCESS, hold_seconds=1.0, clock=FakeClock())
    plan(planner, [created("r1", parameters={"x": 1}), changed("r1", Running()), changed("r1", Completed(5))])
    batch = planner.take()
    assert [row(r)["state_name"] for r in batch.task_inserts] == ["Completed"]
    inserted = row(batch.task_inserts[0])
    assert inserted["start_time"] is not None and inserted["end_time"] is not None
    assert json.loads(inserted["parameters"]) == {"x": 1}
    assert json.loads(inserted["tags"]) == ["a", "b"]
    assert batch.task_updates == []
    assert [s[4] for s in batch.states] == ["Running", "Completed"]


def test_an_unfinished_task_run_is_held_then_written_then_updated():
    clock = FakeClock()
    planner = Planner(PROCESS, hold_seconds=1.0, clock=clock)
    plan(planner, [created("r1"), changed("r1", Running())])
    assert planner.take().task_inserts == []  # young: held back
    clock.advance(1.5)
    aged = planner.take()
    assert [row(r)["state_name"] for r in aged.task_inserts] == ["Running"]
    plan(planner, [changed("r1", Completed())])
    later = planner.take()
    assert later.task_inserts == []
    assert [u[1] for u in later.task_updates] == ["Completed"]
    assert later.task_updates[0][-1] == "r1"


def test_a_flush_writes_held_task_runs_at_once():
    planner = Planner(PROCESS, hold_seconds=60.0, clock=FakeClock())
    plan(planner, [created("r1")])
    assert [row(r)["state_name"] for r in planner.take(everything=True).task_inserts] == ["Pending"]


def test_a_failed_run_keeps_the_traceback_it_had_when_it_failed():
    def inner():
        raise ValueError("the task's own error")

    try:
        inner()
    except ValueError as exc:
        error = exc
        traceback_then = exc.__traceback__

    def outer():
        raise error  # re-raised further up: the traceback grows

    try:
        outer()
    except ValueError:
        pass
    planner = Planner(PROCESS, clock=FakeClock())
    encoder = Encoder(PROCESS.host, PROCESS.pid)  # the recorder encodes when the run fails, with the traceback then
    planner.add([encoder.encode_one(created("r1")), encoder.encode_one(changed("r1", Failed(error, message="boom")), traceback_then)])
    text = row(planner.take().task_inserts[0])["error"]
    assert "the task's own error" in text and "inner" in text
    assert "outer" not in text


def test_resource_steps_fold_into_one_ledger_row():
    base = {"scope_id": "s1", "name": "db", "flow_run_id": "flow1", "worker": "here", "pid": 4242, "reaper": "mod:fn"}
    planner = Planner(PROCESS, clock=FakeClock())
    plan(
        planner,
        [
            ResourceEvent(step="setup-started", timestamp=1.0, **base),
            ResourceEvent(step="handle", timestamp=1.1, handle={"table": "tmp_1"}, **base),
            ResourceEvent(step="setup", timestamp=1.2, handle={"table": "tmp_1"}, **base),
            ResourceEvent(step="used", timestamp=1.3, task_run_id="r1", **base),
            ResourceEvent(step="cleanup", timestamp=2.0, outcome="failed", details={"seconds": 0.5}, **base),
        ],
    )
    batch = planner.take()
    (entry,) = batch.resource_inserts.values()
    assert entry["pid_started"] == "1"
    assert json.loads(entry["handle"]) == {"table": "tmp_1"}
    assert (entry["setup_outcome"], entry["scope_outcome"], entry["cleanup_outcome"], entry["cleanup_seconds"]) == (
        "succeeded",
        "failed",
        "succeeded",
        0.5,
    )
    assert batch.resource_updates == {}
    assert batch.uses == [("s1", "r1", 1.3)]
    assert batch.scopes_opened == batch.scopes_ended == {("s1", "here", 4242)}


def test_log_lines_and_messages_lose_their_url_passwords():
    planner = Planner(PROCESS, clock=FakeClock())
    plan(
        planner,
        [
            LogEmitted("r1", "flow1", 20, "connecting to postgresql://bob:hunter2@db/x", 1.0),
            created("r1"),
            changed("r1", Failed(message="cannot reach mysql://root:hunter2@h/db")),
        ],
    )
    batch = planner.take()
    assert "hunter2" not in repr(batch.logs) + repr(batch.states) + repr(batch.task_inserts)
    assert f"bob:{REDACTED}@db" in batch.logs[0][3]


class SecretStr:
    """Looks like pydantic's SecretStr to the store (it has get_secret_value)."""

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"SecretStr({self._value!r})"  # a careless repr: the store must not call it


def test_parameters_named_like_secrets_secret_values_and_url_passwords_are_redacted():
    stored = redact_parameters(
        {
            "password": "pw1",
            "db_password": "pw2",
            "api_token": "tk-77",
            "key": SecretStr("pw3"),
            "url": "postgresql+psycopg://app:pw4@db:5432/x",
            "nested": {"client_secret": "pw5", "items": [SecretStr("pw6")]},
            "rows": 10,
        }
    )
    text = json.dumps(stored)
    for secret in ("pw1", "pw2", "tk-77", "pw3", "pw4", "pw5", "pw6"):
        assert secret not in text
    assert stored["rows"] == 10
    assert stored["url"] == f"postgresql+psycopg://app:{REDACTED}@db:5432/x"
    # Plain values travel as the run's dict and are redacted where rows are planned; others
    # are turned into JSON (redacted) at once, while they are as they were passed.
    plain = {"password": "pw1", "n": 1, "url": "postgresql://app:pw4@db/x"}
    encoder = Encoder(PROCESS.host, PROCESS.pid)
    assert encoder.encode_one(created("r1", parameters=plain))[6] is plain
    secret = encoder.encode_one(created("r3", parameters={"key": SecretStr("pw3")}))[6]
    assert json.loads(secret) == {"key": REDACTED}
    planner = Planner(PROCESS, clock=FakeClock())
    plan(planner, [created("r1", parameters=plain), created("r2", parameters={"n": 2})])
    rows = [row(r) for r in planner.take(everything=True).task_inserts]
    assert [json.loads(r["parameters"]) for r in rows] == [
        {"password": REDACTED, "n": 1, "url": f"postgresql://app:{REDACTED}@db/x"},
        {"n": 2},
    ]


@pytest.mark.parametrize(
    "parameters",
    [
        {},
        {"x": 1, "n": None, "big": 10**30},
        {"yes": True, "no": False, "f": 1.5, "neg": -0.0, "nan": float("nan"), "inf": float("-inf")},
        {"password": "hunter2", "api_key": 5, "text": 'é\n"quoted"\t\u2603'},
        {"url": "postgresql://app:pw4@db/x", "dsn": "host=db password=pw5"},
        {"long": "a" * 3990 + " password=abcdefghijkl", "longer": "x" * 5000},
        {1: "a key that is not a str"},
        {"items": [1, 2], "nested": {"token": "t"}},
    ],
)
def test_plain_parameters_become_the_json_that_json_dumps_of_the_redacted_dict_gives(parameters):
    # parameters_json writes plain dicts item by item (it runs once per task run); it must
    # write what the general path writes, character for character.
    assert parameters_json(parameters) == json.dumps(redact_parameters(parameters))


def test_redact_text_leaves_urls_without_passwords_alone():
    assert redact_text("mysql+pymysql://root@127.0.0.1:3306/test") == "mysql+pymysql://root@127.0.0.1:3306/test"
    assert redact_text("no url here") == "no url here"


def test_orphan_rule_on_this_host_asks_the_process_and_elsewhere_the_heartbeat():
    me = os.getpid()
    assert process_alive(me, None)
    assert orphan_reason("here", me, None, heartbeat=0.0, now=1e9, stale_after=60, this_host="here") is None
    if os.path.exists("/proc/self/stat"):  # a live pid that started at another time is a reused pid
        assert orphan_reason("here", me, "0", heartbeat=None, now=0, stale_after=60, this_host="here") is not None
    assert orphan_reason("there", 1, None, heartbeat=990.0, now=1000.0, stale_after=60, this_host="here") is None
    assert "no heartbeat" in orphan_reason(
        "there", 1, None, heartbeat=900.0, now=1000.0, stale_after=60, this_host="here"
    )


def test_records_hold_no_live_objects_so_they_can_go_to_the_writer_process():
    import pickle

    class Unpicklable:
        def __reduce__(self):
            raise TypeError("no")

    try:
        raise RuntimeError("failed")
    except RuntimeError as exc:
        error = exc
    base = {"scope_id": "s1", "name": "db", "flow_run_id": "flow1", "worker": "here", "pid": 4242}
    events = [
        created("r1", parameters={"conn": Unpicklable(), "n": 1}),
        changed("r1", Completed(Unpicklable())),
        changed("r2", Failed(error)),
        ResourceEvent(step="setup", timestamp=1.0, handle={"table": "t"}, **base),
        LogEmitted("r1", "flow1", 20, "hello", 1.0),
    ]
    records = Encoder(PROCESS.host, PROCESS.pid).encode(events)
    assert pickle.loads(pickle.dumps(records)) == records
    assert "RuntimeError: failed" in records[2][-1]

    # The recorder queues them flat, item after item, and spools them marshalled; whoever writes cuts them apart.
    assert {r[0]: len(r) for r in records} == {k: RECORD_LENGTHS[k] for k in ("run2", "state", "resource", "log")}
    flat = [item for record in records for item in record]
    assert split_records(flat) == records
    import marshal

    assert split_records(marshal.loads(marshal.dumps(flat))) == records


def test_a_run_keeps_its_own_name_next_to_its_task_s_and_stores_it_only_where_it_differs():
    """``name`` stays the task's or flow's (filters group by it); ``run_name`` is a template's, and
    NULL in the row when the run has none of its own (or its template rendered the same name)."""
    encoder = Encoder(PROCESS.host, PROCESS.pid)
    base = ("flow1", "flow1", frozenset(), {}, 1.0)
    records = encoder.encode([
        RunCreated("flow1", "flow", "etl", "flow1", None, frozenset(), {}, 1.0, "etl-eu"),
        RunCreated("r1", "task", "load", *base, "load-eu"),
        RunCreated("r2", "task", "load", *base, "load"),
        RunCreated("r3", "task", "load", *base),
        changed("r1", Completed(1)), changed("r2", Completed(1)), changed("r3", Completed(1)),
    ])  # fmt: skip
    assert [RUN.named(r)["run_name"] for r in records[:4]] == ["etl-eu", "load-eu", None, None]
    planner = Planner(PROCESS, hold_seconds=1.0, clock=FakeClock())
    planner.add(records)
    batch = planner.take(everything=True)
    assert [(row(r)["name"], row(r)["run_name"]) for r in batch.task_inserts] == [
        ("load", "load-eu"), ("load", None), ("load", None)
    ]
    assert (batch.flow_inserts["flow1"]["name"], batch.flow_inserts["flow1"]["run_name"]) == ("etl", "etl-eu")


def test_a_spool_of_the_old_layout_replays_its_runs_without_run_names(tmp_path):
    """Run records written before run names (kind ``run``, `RUN_1`) still cut apart and plan: a spool
    left by a process of the old version is replayed into the new store."""
    old_task = ("run", "r1", "task", "load", "flow1", "flow1", {"n": 1}, "[]", 1.0)
    old_flow = ("run", "flow1", "flow", "etl", "flow1", None, {}, "[]", 1.0)
    assert RUN_1.named(old_task)["name"] == "load" and len(old_task) == RECORD_LENGTHS["run"]
    new_task = ("run2", "r2", "task", "load", "flow1", "flow1", {}, "[]", 1.0, "load-us")
    flat = [*old_flow, *old_task, *new_task, "log", "r1", "flow1", 20, "hi", 1.0]
    dead = ProcessInfo(pid=2**22 + 11, host=ProcessInfo.current().host, started="1")
    spool = _spool.Spool("mine", dead, tmp_path)
    spool.append(flat)  # marshalled, positional, as a process of the old version spooled them
    spool.close()
    planner = Planner(PROCESS, hold_seconds=1.0, clock=FakeClock())
    kinds: list[str] = []

    def writer(process: ProcessInfo):
        def write(records: list) -> None:
            kinds.extend(r[0] for r in records)
            planner.add(records)

        return write

    assert _spool.replay_orphans("mine", writer, tmp_path) == 1
    assert kinds == ["run", "run", "run2", "log"]
    batch = planner.take(everything=True)
    assert [(row(r)["id"], row(r)["name"], row(r)["run_name"]) for r in batch.task_inserts] == [
        ("r1", "load", None), ("r2", "load", "load-us")
    ]
    assert json.loads(row(batch.task_inserts[0])["parameters"]) == {"n": 1}
    assert (batch.flow_inserts["flow1"]["name"], batch.flow_inserts["flow1"]["run_name"]) == ("etl", None)


def test_each_record_is_laid_out_as_its_layout_names_it():
    """The encoder writes each item where its layout says (the planner reads it from there),
    and the lengths that cut the flat queue apart are the layouts'."""
    encoder = Encoder(PROCESS.host, PROCESS.pid)
    failed = Failed(message="boom")
    run, state, log, resource = encoder.encode([
        RunCreated("r1", "task", "t", "flow1", "parent1", frozenset({"b", "a"}), {"n": 1}, 2.0),
        StateChanged("r1", "task", "t", "flow1", "flow1", Pending(), failed, 2),
        LogEmitted("r1", "flow1", 30, "careful", 4.0),
        ResourceEvent(step="cleanup", timestamp=5.0, scope_id="s1", name="db", flow_run_id="flow1", task_run_id="r1",
                      error="gone", outcome="rollback", worker="w1", pid=7, details={"seconds": 0.5}),
    ])  # fmt: skip
    assert RUN.named(run) == {
        "record": "run2", "run_id": "r1", "kind": "task", "name": "t", "flow_run_id": "flow1",
        "parent_id": "parent1", "parameters": {"n": 1}, "tags": '["a", "b"]', "timestamp": 2.0, "run_name": None,
    }  # fmt: skip
    named = STATE.named(state)
    assert (named["run_id"], named["kind"], named["flow_run_id"], named["type"], named["name"]) == (
        "r1", "task", "flow1", "FAILED", "Failed"
    )
    assert (named["message"], named["timestamp"], named["run_count"], named["error"]) == ("boom", failed.time, 2, "boom")
    assert LOG.named(log) == {
        "record": "log", "run_id": "r1", "flow_run_id": "flow1", "level": 30, "message": "careful", "timestamp": 4.0
    }
    named = RESOURCE.named(resource)
    assert {k: named[k] for k in ("step", "scope_id", "name", "task_run_id", "error", "outcome", "host", "pid")} == {
        "step": "cleanup", "scope_id": "s1", "name": "db", "task_run_id": "r1", "error": "gone",
        "outcome": "rollback", "host": "w1", "pid": 7,
    }  # fmt: skip
    assert (named["timestamp"], named["seconds"], named["handle"]) == (5.0, 0.5, None)
    assert RECORD_LENGTHS == {kind: len(layout.names) for kind, layout in LAYOUTS.items()}
    with pytest.raises(ValueError, match="'log' records have no item 'step'"):
        LOG.at("step")
    with pytest.raises(ValueError, match="not a 'log' record"):
        LOG.named(run)


def test_the_writer_process_waits_while_records_stream_in_and_writes_them_when_the_stream_pauses():
    clock = FakeClock()
    pending = Backlog(clock)
    assert pending.wait() is None and not pending.due()
    for n in range(3):
        clock.advance(0.01)
        pending.add((0, 100 + n))
    assert pending.wait() == pytest.approx(QUIET_SECONDS) and not pending.due()  # more may come: wait for a pause
    clock.advance(DEFER_SECONDS)  # ... but not forever
    assert pending.due() and pending.wait() == 0.0

    class Drain:
        def __init__(self) -> None:
            self.ends: list = []

        def write_some(self, end, limit):
            self.ends.append(end)
            return False

    drain = Drain()
    pending.write(drain)  # type: ignore[arg-type]
    assert drain.ends == [(0, 102)] and pending.wait() is None


def flat_records(encoder: Encoder, n: int) -> list:
    return [item for record in encoder.encode([created(f"r{n}"), changed(f"r{n}", Completed(n))]) for item in record]


def test_the_spool_gives_back_every_record_in_order_across_segments_once_each(tmp_path, monkeypatch):
    """Records spooled are read back (and deleted) in order; what a writer committed is not read
    again by the next; a frame cut off by a kill is left for later, never half read."""
    monkeypatch.setattr(_spool, "SEGMENT_BYTES", 400)
    spool = _spool.Spool("key", PROCESS, tmp_path)
    encoder = Encoder(PROCESS.host, PROCESS.pid)
    written: list = []
    drain = _spool.Drain(tmp_path, spool.stem, written.extend)
    assert drain.take_lock()
    for n in range(12):
        spool.append(flat_records(encoder, n))
        if n == 3:
            drain.write_all(spool.end)
    assert len(list(tmp_path.glob("*.spool"))) > 1  # not all written yet: several segments
    drain.write_all(spool.end)
    assert [r[1] for r in written] == [f"r{n}" for n in range(12) for _ in ("run", "state")]
    assert len(list(tmp_path.glob("*.spool"))) == 1  # the segments read to their end are gone
    drain.release()

    spool.append(flat_records(encoder, 12))
    with open(next(tmp_path.glob("*.spool")), "ab") as f:
        f.write(b"\x00\x00\x10\x00m half a frame")  # as a kill in the middle of a write would leave it
    again: list = []
    other = _spool.Drain(tmp_path, spool.stem, again.extend)
    assert other.take_lock(wait=False)
    assert not _spool.Drain(tmp_path, spool.stem, again.extend).take_lock(wait=False)  # one writer at a time
    other.write_all()
    assert [r[1] for r in again] == ["r12", "r12"]  # only what the first writer had not committed
    other.remove()
    assert not list(tmp_path.iterdir())


def test_a_spool_is_replayed_only_into_its_store_and_only_once_its_process_is_gone(tmp_path):
    encoder = Encoder(PROCESS.host, PROCESS.pid)
    here = ProcessInfo.current()
    dead = ProcessInfo(pid=2**22 + 7, host=here.host, started="1")
    dead_too = ProcessInfo(pid=2**22 + 9, host=here.host, started="1")
    for key, process in (("mine", dead), ("other", dead_too), ("mine", here)):
        spool = _spool.Spool(key, process, tmp_path)
        spool.append(flat_records(encoder, process.pid))
        spool.close()
    replayed: list = []
    assert _spool.replay_orphans("mine", lambda process: replayed.extend, tmp_path) == 1
    assert [r[1] for r in replayed] == [f"r{dead.pid}"] * 2
    assert _spool.replay_orphans("mine", lambda process: replayed.extend, tmp_path) == 0  # idempotent: gone
    left = sorted(p.name for p in tmp_path.glob("*.spool"))
    assert len(left) == 2 and any(str(here.pid) in name for name in left)


@pytest.fixture
def forget_loaded_secrets():
    yield
    forget_secrets()


def test_a_loaded_secrets_value_is_hidden_in_any_text_though_it_matches_no_rule(forget_loaded_secrets):
    line = "connecting with sk-live-93jf02 as admin"
    assert redact_text(line) == line  # no rule finds it
    remember_secret(SecretStr("sk-live-93jf02"))
    assert redact_text(line) == f"connecting with {REDACTED} as admin"
    # A str that holds JSON (Secret.get() returns it parsed): its items too; short values are not looked for.
    remember_secret('{"user": "svc-reporting", "password": "Xy7-q", "pin": 42}')
    assert redact_text("svc-reporting logged in, Xy7-q") == f"{REDACTED} logged in, {REDACTED}"
    assert redact_text("42 rows") == "42 rows"
    # A secret that holds another is hidden whole, not in pieces.
    remember_secret("sk-live-93jf02-extended")
    assert redact_text("key sk-live-93jf02-extended") == f"key {REDACTED}"


def test_a_blocks_secret_fields_are_remembered_and_its_other_fields_are_not(forget_loaded_secrets):
    class Credentials:
        def __init__(self) -> None:
            self.username = "reporting-user"
            self.token = SecretStr("tok-5f1e77a2")

    remember_secret_fields(Credentials())
    assert redact_text("as reporting-user with tok-5f1e77a2") == f"as reporting-user with {REDACTED}"


def test_records_lose_a_loaded_secrets_value_in_this_process_before_another_writes_them(forget_loaded_secrets):
    # The writer process, or a later store open, plans the rows: it does not know what this process loaded.
    remember_secret("hunter22-value")
    encoder = Encoder(PROCESS.host, PROCESS.pid)
    log = encoder.encode_one(LogEmitted("r1", "flow1", 20, "using hunter22-value now", 4.0))
    failed = encoder.encode_one(changed("r1", Failed(RuntimeError("bad hunter22-value"), message="hunter22-value?")))
    run = encoder.encode_one(created("r1", parameters={"note": "pass hunter22-value", "n": 1}))
    flat = json.dumps([log, failed, run])
    assert "hunter22" not in flat
    assert LOG.named(log)["message"] == f"using {REDACTED} now"
    assert json.loads(RUN.named(run)["parameters"]) == {"note": f"pass {REDACTED}", "n": 1}
