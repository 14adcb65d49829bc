"""The process one scheduled run executes in: ``python -m tether._serve_child`` (started by ``tether serve``).

It reads its job (JSON on stdin), arranges to die with its serve process (Linux:
``PR_SET_PDEATHSIG``; it also exits if its parent is already gone), moves its row
to ``running`` (only while its serve process still holds the claim, so a run is
never started by two processes), imports the flow from its entry point, runs it
with the deployment's parameters, records the flow run's id on the row as soon
as the run exists, and finally records how it ended. Inside the run,
`tether.runtime.deployment` and ``flow_run.scheduled_start_time`` answer from the
job. Exit code: 0 completed, 1 not, 3 the claim was lost (nothing ran).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from tether._context import events
from tether._core import Event, RunCreated
from tether._deployment_context import DeploymentRun, set_deployment_run
from tether._flow import FlowFunction
from tether._serve import fault_point
from tether._task import tags as run_tags
from tether.store import enable, flush, open_store
from tether.store._deployments import DeploymentTable
from tether.store._ledger import ProcessInfo

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


def load_entrypoint(entrypoint: str, flow_name: str) -> FlowFunction[Any]:
    """The flow at ``/path/file.py:name`` (a variable name, else a flow name)."""
    file, _, name = entrypoint.rpartition(":")
    path = Path(file)
    stem = path.stem
    module_name = stem if stem.isidentifier() and stem not in sys.modules else f"tether_serve_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"Cannot import {path}: not a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    found = getattr(module, name, None)
    if isinstance(found, FlowFunction):
        return found
    for value in vars(module).values():
        if isinstance(value, FlowFunction) and value.name in (name, flow_name):
            return value
    raise LookupError(f"{entrypoint}: no flow named {name!r} (the deployment's flow {flow_name!r}) in {path}.")


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


def main() -> int:
    job = json.loads(sys.stdin.read())
    owner = ProcessInfo.from_json(job["owner"])
    assert owner is not None
    die_with_parent(owner.pid)
    store = enable()
    table_store = store if store is not None else open_store(job["store_url"])
    table = DeploymentTable(table_store.engine)
    me = ProcessInfo.current()
    run_id = int(job["run_id"])
    if not table.begin_run(run_id, owner, me):
        return 3  # the serve process lost its claim (it was settled as gone): another may run it
    try:
        flow = load_entrypoint(job["entrypoint"], job["flow_name"])
    except BaseException as exc:  # noqa: BLE001 - any failure to import the user's file is reported the same way
        traceback.print_exc()
        table.finish(run_id, "FAILED", "Failed", me.pid, f"importing {job['entrypoint']} failed: {type(exc).__name__}: {exc}")
        return 1
    set_deployment_run(DeploymentRun(job["deployment"], float(job["scheduled_time"]), run_id, dict(job["parameters"]), job.get("version")))
    watcher = _FlowRunId(table, run_id)
    events.subscribe(watcher)
    reason = None
    try:
        with run_tags(*job["tags"]):
            state = flow(**job["parameters"], return_state=True)
        state_type, state_name = state.type.value, state.name
    except BaseException as exc:  # noqa: BLE001 - bad parameters, or the engine itself failed
        traceback.print_exc()
        state_type, state_name, reason = "FAILED", "Failed", f"{type(exc).__name__}: {exc}"
    finally:
        events.unsubscribe(watcher)
    flush(until="written")
    fault_point("after-run")
    table.finish(run_id, state_type, state_name, me.pid, reason)
    return 0 if state_type == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main())
