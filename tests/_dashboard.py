"""Shared pieces of the dashboard tests: a `tether ui` in a subprocess over a store of the test's own,
and flows run by `tether run` in other processes, as a user runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from _waiting import wait_until  # the dashboard tests import it from here too
from conftest import own_postgres_database  # noqa: F401 - likewise

_SCRIPT = Path(sys.executable).with_name("tether")
TETHER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tether.cli"]

#: A resource used by three tasks of different lengths, a task failing once then passing, one that fails.
FLOWS = textwrap.dedent(
    """
    import time
    from tether import flow, task, resource, get_run_logger

    @resource
    def warehouse(name):
        get_run_logger().info("connecting to %s", name)
        yield f"conn-{name}"

    @task
    def load(i, conn):
        get_run_logger().info("loading part %s through %s", i, conn)
        time.sleep(0.15 * (i + 1))  # the work: lengths 1:2:3 for the timeline
        return i

    ATTEMPTS = []

    @task(retries=1, retry_delay_seconds=0)
    def flaky():
        ATTEMPTS.append(1)
        if len(ATTEMPTS) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    @task
    def explode(x):
        raise ValueError(f"exploded on {x}")

    @flow
    def nightly(parts: int = 3, db_password: str = "hunter2"):
        with warehouse("main") as conn:
            done = [load.submit(i, conn) for i in range(parts)]
            [f.result() for f in done]
        flaky()
        explode.submit(7)  # a failure nobody looks at: the flow run fails
        return parts

    @flow
    def quick():
        return 1

    @task
    def noop(i):
        return i

    @flow
    def many(n: int = 2050):
        return len([f.result() for f in [noop.submit(i) for i in range(n)]])
    """
)


#: A flow holding a resource while its task waits for ever, and one whose subflow does the same; the resource
#: writes each setup and cleanup to $CANCEL_LOG, so a test counts what ran in the flow's process.
STUCK = textwrap.dedent(
    """
    import os, time
    from tether import flow, task, resource

    def note(line):
        with open(os.environ["CANCEL_LOG"], "a") as f:
            f.write(line + "\\n")

    @resource
    def warehouse(name):
        note(f"setup {name}")
        try:
            yield f"conn-{name}"
        except BaseException as exc:
            note(f"cleanup {name} failed {type(exc).__name__}")
            raise
        else:
            note(f"cleanup {name} succeeded")

    @task
    def wait_forever(conn):
        note(f"waiting with {conn}")
        while True:
            time.sleep(0.05)

    @flow
    def stuck():
        with warehouse("main") as conn:
            wait_forever.submit(conn).result()

    @flow
    def inner():
        with warehouse("inner") as conn:
            wait_forever(conn)

    @flow
    def outer():
        inner()
    """
)


def resource_log(env) -> list[str]:
    """The lines the `STUCK` flows' resource wrote so far."""
    path = Path(env["CANCEL_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def start_flow(env, script: Path, target: str) -> subprocess.Popen[str]:
    """``tether run FILE:FLOW`` in a process of its own, left running."""
    return subprocess.Popen([*TETHER, "run", f"{script}:{target}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def running_run(store, name: str, process: subprocess.Popen[str]):
    """The flow run ``name`` once the store shows it running in ``process``."""
    def found():
        return next((r for r in store.flow_runs(limit=10) if r.name == name and r.state_type == "RUNNING"
                     and r.pid == process.pid), None)
    return wait_until(found, f"flow run {name!r} recorded running", process)


def env_for(home: Path) -> dict[str, str]:
    values = {**os.environ, "TETHER_HOME": str(home), "TETHER_LOGGING_LEVEL": "WARNING"}
    values.pop("TETHER_DATABASE_URL", None)
    values.pop("TETHER_STORE", None)
    return values


def run_flow(env: dict[str, str], script: Path, target: str, *params: str, expect: int = 0) -> str:
    """Run a flow with ``tether run`` in its own process; returns the flow run's id, as it prints it."""
    args = [*TETHER, "run", f"{script}:{target}", *[a for p in params for a in ("-p", p)]]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == expect, f"{args} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    said = re.search(r"Flow run '[^']*' \((\w+)\)", done.stdout + done.stderr)  # tether run names the run
    assert said, f"{args} did not name its flow run:\n{done.stdout}\n{done.stderr}"
    return said.group(1)


class Dashboard:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        request = urllib.request.Request(self.url.rstrip("/") + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers)

    def post(self, path: str, body: str) -> tuple[int, str]:
        request = urllib.request.Request(self.url.rstrip("/") + path, data=body.encode(), method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@contextmanager
def dashboard(env: dict[str, str], *args: str) -> Iterator[Dashboard]:
    """``tether ui --port 0`` on 127.0.0.1 in a subprocess; stopped with SIGTERM (then SIGKILL) at the end."""
    process = subprocess.Popen([*TETHER, "ui", "--port", "0", *args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://"), f"tether ui printed {url!r} first; stderr: {process.stderr.read() if process.poll() is not None else ''}"
        yield Dashboard(process, url)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


# -- the fixtures the dashboard's tests share (imported by name into each test module) ---------


@pytest.fixture
def home(tmp_path):
    """The test's own TETHER_HOME (its store, spool and cache)."""
    return tmp_path / "home"


@pytest.fixture
def env(home):
    """The environment a tether command of the test runs in."""
    return env_for(home)


@pytest.fixture
def flows(tmp_path):
    """The dashboard tests' flows (`FLOWS`), as a script of the test's own."""
    script = tmp_path / "flows.py"
    script.write_text(FLOWS)
    return script
