"""The deployment run this process executes, if any: set once by ``tether serve``'s child process.

`tether.runtime.deployment` and ``flow_run.scheduled_start_time`` read it. A process
that is not running a scheduled run has none. This module holds a value; it does nothing.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass


@dataclass(frozen=True)
class DeploymentRun:
    #: The deployment's name.
    name: str
    #: The time the run was scheduled for (seconds since the epoch).
    scheduled_time: float
    #: The row of ``deployment_runs`` (its id, as a string, is ``deployment.flow_run_id``'s key).
    run_id: int
    parameters: dict[str, object]
    version: str | None = None

    @property
    def scheduled_start(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.scheduled_time, datetime.timezone.utc)


_current: DeploymentRun | None = None


def current_deployment_run() -> DeploymentRun | None:
    return _current


def set_deployment_run(run: DeploymentRun | None) -> None:
    global _current
    _current = run
