"""Prefect's Variable, Secret and artifacts on the run store, SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest
from pydantic import SecretStr

import tether.runtime
import tether.store
from tether import flow, task
from tether._errors import SecretKeyError
from tether.artifacts import (
    Artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from tether.blocks.core import Block
from tether.blocks.system import Secret
from tether.runners import ProcessPoolRunner
from tether.store import StoreError, StoreOff, open_store, run_artifacts
from tether.store._db import make_engine
from tether.store._migrate import run_migrations
from tether.store._schema import HEAD
from tether.store._secrets import KEY_FILE, _read_or_create
from tether.store._variables import close_engines
from tether.variables import Variable

# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def engines_closed(store_url):
    """The variables' and artifacts' engines let go of the store before its schema is dropped
    (a fixture that depends on `store_url` ends before it)."""
    yield
    close_engines()


@pytest.fixture
def store(store_url, engines_closed, monkeypatch):
    """The store on, as the engine enables it: flows record to it, and variables live in it."""
    monkeypatch.setenv("TETHER_DATABASE_URL", store_url)
    monkeypatch.delenv("TETHER_STORE", raising=False)
    opened = tether.store.enable()
    assert opened is not None
    yield opened
    tether.store.disable()
    close_engines()


@pytest.fixture
def artifact_log():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    target = logging.getLogger("tether.artifacts")
    target.addHandler(handler)
    yield records
    target.removeHandler(handler)


def rows(store, sql: str) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql)]


# -- variables ---------------------------------------------------------------------------


def test_a_variable_is_set_read_replaced_and_unset(store):
    for value in ["text", 42, 2.5, True, None, [1, "a"], {"nested": {"list": [1, 2]}}]:
        assert Variable.set("answer", value, overwrite=True).value == value
        assert Variable.get("answer") == value
    assert Variable.get("nothing-here") is None
    assert Variable.get("nothing-here", default={"d": 1}) == {"d": 1}
    assert Variable.unset("answer") is True
    assert Variable.unset("answer") is False
    assert Variable.get("answer", default="gone") == "gone"


def test_setting_an_existing_variable_needs_overwrite(store):
    created = Variable.set("region", "eu", tags=["geo"])
    assert (created.name, created.value, created.tags) == ("region", "eu", ["geo"])
    with pytest.raises(ValueError, match="Variable 'region' already exists") as caught:
        Variable.set("region", "us")
    assert isinstance(caught.value, tether.store.VariableExists)
    assert "overwrite=True" in str(caught.value)
    assert Variable.get("region") == "eu"
    assert Variable.set("region", "us", overwrite=True).value == "us"
    assert rows(store, "SELECT value, tags FROM variables WHERE name = 'region'") == [('"us"', "[]")]


def test_only_one_of_many_concurrent_sets_creates_the_variable(store):
    start = threading.Barrier(6)
    outcomes: list[str] = []

    def set_it(i: int) -> None:
        start.wait(10)
        try:
            Variable.set("first", i)
            outcomes.append(f"set {i}")
        except tether.store.VariableExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=set_it, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    (winner,) = [o for o in outcomes if o.startswith("set")]
    assert outcomes.count("exists") == 5
    assert Variable.get("first") == int(winner.split()[1])


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("My Var", "lowercase letters, numbers, and dashes or underscores"),
        ("a.b", "lowercase letters, numbers, and dashes or underscores"),
        ("", "lowercase letters"),
        ("x" * 256, "at most 255"),
    ],
)
def test_variable_names_follow_prefects_rule(store, name, problem):
    with pytest.raises(ValueError, match=problem):
        Variable.set(name, 1)
    assert rows(store, "SELECT count(*) FROM variables") == [(0,)]


def test_variable_values_are_json_of_at_most_5000_characters(store):
    with pytest.raises(ValueError, match=r"Variable 'when': Variable value must be serializable to JSON"):
        Variable.set("when", {1, 2})
    with pytest.raises(ValueError, match="must be less than 5000 characters"):
        Variable.set("big", "x" * 5000)
    Variable.set("ok_and-fine", "x" * 4990)
    assert Variable.set("nan", float("nan")).value is None  # as Prefect's encoder writes it


def test_variables_in_sync_and_async_flows_and_tasks(store):
    Variable.set("greeting", "hello")

    @task
    def sync_task() -> str:
        return Variable.get("greeting")

    @task
    async def async_task() -> str:
        return await Variable.get("greeting") + await Variable.aget("missing", default="!")

    @flow
    async def async_flow() -> tuple:
        await Variable.set("count", 1)
        await Variable.aset("count", 2, overwrite=True)
        removed = await Variable.unset("count")
        return sync_task(), await async_task(), removed, await Variable.get("count", default=0)

    @flow
    def sync_flow() -> str:
        return Variable.get("greeting")

    async def outside_any_run() -> str:
        return await Variable.get("greeting")  # under a running loop, as Prefect decides it

    assert asyncio.run(async_flow()) == ("hello", "hello!", True, 0)
    assert sync_flow() == "hello"
    assert asyncio.run(outside_any_run()) == "hello"
    assert Variable.get("greeting", _sync=True) == "hello"


def test_variables_with_the_store_off_or_unreachable_say_so(monkeypatch, tmp_path):
    monkeypatch.setenv("TETHER_STORE", "off")
    with pytest.raises(StoreOff, match=r"Cannot read variable 'x': .*TETHER_STORE='off'.*Unset TETHER_STORE"):
        Variable.get("x")
    monkeypatch.delenv("TETHER_STORE")
    monkeypatch.setenv("TETHER_DATABASE_URL", "postgresql+psycopg://app:hunter2@127.0.0.1:1/nothing")
    with pytest.raises(StoreError) as caught:
        Variable.set("x", 1)
    message = str(caught.value)
    assert message.startswith("Cannot set variable 'x': The run store at") and "127.0.0.1:1" in message
    assert "hunter2" not in message


# -- secrets -----------------------------------------------------------------------------


def test_a_secret_is_saved_encrypted_and_loaded(store, tmp_path):
    assert isinstance(Secret(value="sk-1234567890").save("openai-key"), uuid.UUID)
    loaded = Secret.load("openai-key")
    assert loaded.get() == "sk-1234567890"
    assert "sk-1234567890" not in repr(loaded) and "**********" in repr(loaded)
    Secret(value={"username": "johndoe", "password": "s3cr3t"}).save("login")
    assert Secret.load("login").get() == {"username": "johndoe", "password": "s3cr3t"}
    assert Block.load("secret/login").get()["password"] == "s3cr3t"
    assert Secret(value="123").get() == 123  # a str holding JSON comes back parsed, as in Prefect

    stored = rows(store, "SELECT block_type, name, data FROM blocks ORDER BY name")
    assert [(t, n) for t, n, _ in stored] == [("secret", "login"), ("secret", "openai-key")]
    assert not [d for _, _, d in stored if "sk-1234567890" in d or "s3cr3t" in d or "johndoe" in d]
    key_file = tmp_path / "tether-home" / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_saving_a_secret_twice_needs_overwrite_and_a_missing_one_is_named(store):
    Secret(value="one").save("db-password")
    with pytest.raises(ValueError, match="already in use for this block type") as caught:
        Secret(value="two").save("db-password")
    assert isinstance(caught.value, tether.store.BlockExists) and "overwrite=True" in str(caught.value)
    assert Secret.load("db-password").get() == "one"
    Secret(value="two").save("db-password", overwrite=True)
    assert Secret.load("db-password").get() == "two"
    with pytest.raises(ValueError, match="Unable to find block document named nope for block type secret"):
        Secret.load("nope")
    with pytest.raises(ValueError, match="Block document name must only contain lowercase letters"):
        Secret(value="x").save("DB_Password")
    Secret.delete("db-password")
    with pytest.raises(tether.store.BlockNotFound):
        Secret.load("db-password")


def test_a_secret_never_reaches_parameters_logs_or_the_dashboards_queries(store):
    Secret(value="hunter2-value").save("api")

    @task
    def use(secret: Secret, user: str) -> int:
        tether.get_run_logger().info("connecting as %s with %r", user, secret)
        return len(secret.get())

    @flow
    def uses_a_secret(secret: Secret) -> tuple[str, int]:
        return tether.runtime.flow_run.id, use(secret, "app")

    run_id, length = uses_a_secret(Secret.load("api"))
    assert length == len("hunter2-value")
    assert tether.store.flush()
    detail = store.flow_run(run_id)
    shown = json.dumps([detail.flow_run.parameters, [t.parameters for t in detail.task_runs]]) + " ".join(
        line.message for line in detail.logs
    )
    assert "**********" in shown and "hunter2-value" not in shown
    everything = " ".join(
        str(r) for table in ("flow_runs", "task_runs", "logs", "blocks") for r in rows(store, f"SELECT * FROM {table}")
    )
    assert "hunter2-value" not in everything


def test_a_secret_saved_with_another_key_or_moved_to_another_name_is_refused(store, tmp_path, monkeypatch):
    Secret(value="kept").save("moved")
    with store.engine.begin() as conn:  # someone copies the row to another name
        conn.exec_driver_sql("UPDATE blocks SET name = 'other' WHERE name = 'moved'")
    with pytest.raises(SecretKeyError, match="row in the store was changed"):
        Secret.load("other")

    Secret(value="mine").save("elsewhere")
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "another-home"))  # another machine's key
    with pytest.raises(SecretKeyError, match=r"saved with another key .* Copy that secrets.key here"):
        Secret.load("elsewhere")


def test_a_key_file_others_can_read_is_refused(tmp_path):
    key_file = tmp_path / "home" / KEY_FILE
    _read_or_create(key_file)
    os.chmod(key_file, 0o644)
    with pytest.raises(SecretKeyError, match=r"can be read by other users .* chmod 600"):
        _read_or_create(key_file)
    key_file.write_text("not a key\n")
    os.chmod(key_file, 0o600)
    with pytest.raises(SecretKeyError, match="is not a tether key"):
        _read_or_create(key_file)


def test_processes_creating_the_key_at_once_agree_on_one(tmp_path):
    start = threading.Barrier(4)
    keys: list[bytes] = []

    def create() -> None:
        start.wait(10)
        keys.append(_read_or_create(tmp_path / "home" / KEY_FILE))

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(keys) == 4 and len(set(keys)) == 1
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == [KEY_FILE]  # no draft left behind


def test_loading_through_block_needs_a_known_type_and_name(store):
    with pytest.raises(ValueError, match=r"needs the block's type too, as \"block-type-slug/name\""):
        Block.load("just-a-name")
    with pytest.raises(ValueError, match=r"no block class with the slug 'nowhere' is imported"):
        Block.load("nowhere/x")


def test_a_block_of_ones_own_keeps_its_secret_fields_encrypted(store):
    class Warehouse(Block):
        host: str
        password: SecretStr

    Warehouse(host="db.internal", password="pa55").save("prod")
    loaded = Warehouse.load("prod")
    assert (loaded.host, loaded.password.get_secret_value()) == ("db.internal", "pa55")
    assert "pa55" not in repr(loaded)
    assert not [r for r in rows(store, "SELECT data FROM blocks") if "db.internal" in r[0] or "pa55" in r[0]]
    loaded.password = SecretStr("new")
    loaded.save(overwrite=True)  # saved under the name it was loaded by
    assert Warehouse.load("prod").password.get_secret_value() == "new"


# -- artifacts ---------------------------------------------------------------------------


def test_artifacts_are_linked_to_their_flow_and_task_runs(store):
    @task
    def summarize(n: int) -> uuid.UUID:
        return create_table_artifact([{"n": n, "api_key": "abc"}], key="summary", description="rows")

    @flow
    def report() -> tuple[str, list]:
        ids = [
            create_markdown_artifact("# Report\n\ntoken=abc123", key="report", description="Weekly"),
            summarize(3),
            create_link_artifact("https://example.com/dash", link_text="Dashboard"),
            create_progress_artifact(10.0, key="progress"),
        ]
        update_progress_artifact(ids[-1], 55.5, description="halfway")
        return tether.runtime.flow_run.id, ids

    run_id, ids = report()
    found = run_artifacts(store, run_id)
    assert [uuid.UUID(a.id) for a in found] == ids
    markdown, table, link, progress = found
    assert (markdown.type, markdown.key, markdown.description, markdown.task_run_id) == (
        "markdown",
        "report",
        "Weekly",
        None,
    )
    assert markdown.data == "# Report\n\ntoken=********"
    assert table.type == "table" and table.task_run_id is not None and table.flow_run_id == run_id
    assert table.table_rows() == (["n", "api_key"], [[3, "********"]])
    assert (link.data, link.key) == ("[Dashboard](https://example.com/dash)", None)
    assert (progress.data, progress.description) == (55.5, "halfway")
    assert "abc123" not in str(rows(store, "SELECT data FROM artifacts"))
    tether.store.flush()
    (task_run,) = store.flow_run(run_id).task_runs
    assert table.task_run_id == task_run.id


def test_artifact_rows_written_before_a_redaction_rule_are_shown_redacted(store):
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO artifacts (id, key, type, description, data, flow_run_id, created, updated) VALUES "
            "('old', 'old', 'markdown', 'dsn postgresql://app:pw1@db/x', '\"password=pw2\"', 'run', 1.0, 1.0)"
        )
    (old,) = run_artifacts(store, "run")
    assert (old.description, old.data) == ("dsn postgresql://app:********@db/x", "password=********")


def test_artifacts_sharing_a_key_are_its_versions(store):
    first = create_markdown_artifact("v1", key="daily")
    second = create_markdown_artifact("v2", key="daily")
    assert Artifact.get("daily").data == "v2"
    table = tether.store.ArtifactTable(store.engine)
    assert [a.id for a in table.versions("daily")] == [second.hex, first.hex]
    assert Artifact.get("never") is None


def test_table_shapes_keys_and_progress_are_checked(store):
    create_table_artifact({"a": [1, 2], "b": [3, float("nan")]}, key="columns")
    assert Artifact.get("columns").table_rows() == (["a", "b"], [[1, 3], [2, None]])
    create_table_artifact([[1, 2], [3, 4]], key="lists")
    assert Artifact.get("lists").table_rows() == (["0", "1"], [[1, 2], [3, 4]])
    with pytest.raises(TypeError, match=r"df.to_dict\(orient=\"records\"\)"):
        create_table_artifact("not a table", key="bad")
    with pytest.raises(ValueError, match="Artifact key must only contain lowercase letters, numbers, and dashes"):
        create_markdown_artifact("x", key="My_Key")
    assert create_progress_artifact(150) is not None
    with pytest.raises(ValueError, match="no artifact with id"):
        update_progress_artifact(uuid.uuid4(), 5)
    with pytest.raises(ValueError, match="a markdown artifact, not a progress one"):
        update_progress_artifact(create_markdown_artifact("m"), 5)
    assert rows(store, "SELECT count(*) FROM artifacts WHERE key = 'bad' OR key = 'My_Key'") == [(0,)]


def test_artifacts_in_async_code_are_awaited(store):
    @flow
    async def async_report() -> str:
        await create_markdown_artifact("async", key="async-md")
        return tether.runtime.flow_run.id

    run_id = asyncio.run(async_report())
    assert [a.data for a in run_artifacts(store, run_id)] == ["async"]


def test_with_the_store_off_a_flow_with_artifacts_runs_and_says_they_are_not_kept(monkeypatch, artifact_log):
    monkeypatch.setenv("TETHER_STORE", "off")

    @flow
    def unrecorded() -> list:
        return [create_markdown_artifact("a"), create_markdown_artifact("b")]

    made = unrecorded()
    assert len({*made}) == 2
    (warning,) = [r.getMessage() for r in artifact_log]
    assert "the artifact was not kept" in warning and "TETHER_STORE" in warning


# -- a task on another process -------------------------------------------------------------


@task
def worker_task(n: int) -> str:
    create_markdown_artifact(f"from worker {n}", key="worker")
    return f"{Variable.get('prefix')}{Secret.load('token').get()}"


@flow(task_runner=ProcessPoolRunner(max_workers=1))
def pool_flow() -> tuple[str, str]:
    return tether.runtime.flow_run.id, worker_task.submit(1).result()


def test_a_task_on_a_process_pool_reaches_the_flows_store(store):
    Variable.set("prefix", "p-")
    Secret(value="t0ken").save("token")
    run_id, value = pool_flow()
    assert value == "p-t0ken"
    (artifact,) = run_artifacts(store, run_id)
    assert (artifact.data, artifact.flow_run_id) == ("from worker 1", run_id) and artifact.task_run_id is not None


# -- the schema ----------------------------------------------------------------------------


def test_a_store_made_by_the_previous_revision_is_upgraded(store_url, engines_closed):
    location = tether.store.StoreLocation.resolve(store_url)
    engine = make_engine(location)
    with engine.begin() as conn:
        run_migrations(conn, "0004")
        conn.exec_driver_sql("INSERT INTO flow_runs (id, name, run_count, created) VALUES ('old', 'before', 0, 1.0)")
    engine.dispose()
    upgraded = open_store(store_url)
    try:
        assert rows(upgraded, "SELECT version_num FROM alembic_version") == [(HEAD,)]
        tether.store.ArtifactTable(upgraded.engine).create("markdown", "after", flow_run_id="old")
        assert [a.data for a in run_artifacts(upgraded, "old")] == ["after"]
    finally:
        upgraded.close()


def test_a_loaded_secret_is_hidden_in_the_logs_and_records_of_this_process(store, caplog):
    """A secret's value matches no redaction rule (no password= around it), yet once loaded it is
    hidden wherever this process would record it: a task's log line and its parameters."""
    value = "tok-4f8a2c91e7"
    Secret(value=value).save("api-token")
    tether.store.forget_secrets()

    @task
    def call_api(token: str) -> str:
        tether.get_run_logger().info("calling with %s", token)
        return "ok"

    @flow
    def uses_token() -> str:
        token = Secret.load("api-token").get()
        return call_api(token)

    try:
        assert uses_token() == "ok"
        tether.store.flush()
        with store.engine.connect() as conn:
            stored = "\n".join(str(row) for table in ("logs", "task_runs", "flow_runs")
                               for row in conn.exec_driver_sql(f"SELECT * FROM {table}"))
        assert "calling with" in stored
        assert value not in stored
    finally:
        tether.store.forget_secrets()


def test_a_loaded_secret_is_hidden_on_the_console_too(tmp_path):
    script = tmp_path / "uses_secret.py"
    script.write_text(textwrap.dedent('''
        from tether import flow, get_run_logger, task
        from tether.blocks.system import Secret

        @task
        def call_api(token):
            get_run_logger().info("calling with %s", token)
            print("printed", token)
            return "ok"

        @flow(log_prints=True)
        def uses_token():
            return call_api(Secret.load("api-token").get())

        Secret(value="tok-4f8a2c91e7").save("api-token")
        print(uses_token())
    '''))
    env = {**os.environ, "TETHER_HOME": str(tmp_path / "home")}
    env.pop("TETHER_DATABASE_URL", None)
    env.pop("TETHER_STORE", None)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    assert "calling with ********" in said and "printed ********" in said, said
    assert "tok-4f8a2c91e7" not in said
