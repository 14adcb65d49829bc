"""The process one scheduled run executes in: forked by ``tether serve`` for each run it claims.

The child starts a session of its own (Ctrl-C in the terminal reaches only serve),
arranges to die with its serve process (Linux: ``PR_SET_PDEATHSIG``; it also exits
if its parent is already gone), drops the serve process's database connections,
moves its row to ``running`` (only while its serve process still holds the claim,
so a run is never started by two processes), runs the flow (already imported by
serve; an async flow in an event loop of its own) with the deployment's parameters,
records the flow run's id on the row as soon as the run exists, and finally records
how it ended. Inside the run,
`tether.runtime.deployment` and ``flow_run.scheduled_start_time`` answer from the
job. Exit code: 0 completed, 1 not, 3 the claim was lost (nothing ran).
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from tether._context import events
from tether._core import Event, RunCreated
from tether._deployment_context import DeploymentRun, set_deployment_run
from tether._task import tags as run_tags
from tether.store import DeploymentTable, ProcessInfo, enable, flush, open_store

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Be killed when the serve process dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(3)


class _FlowRunId:
    """Writes the top-level flow run's id on the deployment's row as the run is created."""

    def __init__(self, table: DeploymentTable, run_id: int) -> None:
        self.table = table
        self.run_id = run_id
        self.flow_run_id: str | None = None

    def record(self, event: Event) -> None:
        if self.flow_run_id is None and type(event) is RunCreated and event.kind == "flow" and event.parent_id is None:
            self.flow_run_id = event.run_id
            self.table.set_flow_run(self.run_id, event.run_id)


def run_claimed(job: dict[str, Any], flow: Callable[..., Any], serve_engine: sa.Engine) -> None:
    """The body of the forked child: run ``flow`` for the claimed row ``job`` and exit."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)  # serve's handlers are not this process's
    os.setsid()
    owner = ProcessInfo.from_json(job["owner"])
    assert owner is not None
    die_with_parent(owner.pid)
    serve_engine.dispose(close=False)  # the connections are serve's: this process opens its own
    sys.exit(_run(job, flow, owner))


def _run(job: dict[str, Any], flow: Callable[..., Any], owner: ProcessInfo) -> int:
    store = enable()
    table_store = store if store is not None else open_store(job["store_url"])
    table = DeploymentTable(table_store.engine)
    me = ProcessInfo.current()
    run_id = int(job["run_id"])
    if not table.begin_run(run_id, owner, me):
        return 3  # the serve process lost its claim (it was settled as gone): nothing ran here
    set_deployment_run(
        DeploymentRun(
            job["deployment"], float(job["scheduled_time"]), run_id, dict(job["parameters"]), job.get("version")
        )
    )
    watcher = _FlowRunId(table, run_id)
    stream = events()
    stream.subscribe(watcher)
    reason = None
    try:
        with run_tags(*job["tags"]):
            state = flow(**job["parameters"], return_state=True)
            if inspect.iscoroutine(state):  # an async flow: this process has no event loop of its own yet
                state = asyncio.run(state)
        state_type, state_name = state.type.value, state.name
    except BaseException as exc:  # noqa: BLE001 - bad parameters, or the engine itself failed
        traceback.print_exc()
        state_type, state_name, reason = "FAILED", "Failed", f"{type(exc).__name__}: {exc}"
    finally:
        stream.unsubscribe(watcher)
    flush(until="written")
    table.finish(run_id, state_type, state_name, me.pid, reason)
    return 0 if state_type == "COMPLETED" else 1
