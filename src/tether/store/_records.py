"""What the store's queries return: plain, immutable records, each with `as_dict()` for ``--json``.

The store redacts secrets as it reads, except a ledger row's handle, which its
reaper needs as setup remembered it: `LedgerEntry.as_dict` (what is shown) hides
the secrets in it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tether.store._ledger import ProcessInfo
from tether.store._redact import redact_value


class _AsDict:
    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload,no-any-return]


@dataclass(frozen=True)
class StoredFlowRun(_AsDict):
    id: str
    name: str
    parent_id: str | None
    state_type: str | None
    state_name: str | None
    state_message: str | None
    error: str | None
    run_count: int
    created: float
    start_time: float | None
    end_time: float | None
    parameters: dict[str, Any] | None
    tags: list[str] | None
    pid: int | None
    host: str | None
    heartbeat: float | None
    #: Task runs of this flow run by state type (``{"COMPLETED": 10, "FAILED": 1}``).
    task_counts: dict[str, int] = field(default_factory=dict)
    #: The run's own name (``flow_run_name=``); ``name`` (the flow's) when it has none. Empty: not given.
    run_name: str = ""

    def __post_init__(self) -> None:
        if not self.run_name:
            object.__setattr__(self, "run_name", self.name)

    @property
    def duration(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time


@dataclass(frozen=True)
class StoredTaskRun(_AsDict):
    id: str
    flow_run_id: str | None
    name: str
    state_type: str | None
    state_name: str | None
    state_message: str | None
    error: str | None
    run_count: int
    created: float
    start_time: float | None
    end_time: float | None
    parameters: dict[str, Any] | None
    tags: list[str] | None
    #: The run's own name (``task_run_name=``); ``name`` (the task's) when it has none. Empty: not given.
    run_name: str = ""

    def __post_init__(self) -> None:
        if not self.run_name:
            object.__setattr__(self, "run_name", self.name)


@dataclass(frozen=True)
class StoredStateChange(_AsDict):
    run_id: str
    kind: str
    type: str
    name: str
    message: str | None
    timestamp: float
    run_count: int


@dataclass(frozen=True)
class StoredLog(_AsDict):
    run_id: str
    level: int
    message: str
    timestamp: float


@dataclass(frozen=True)
class LedgerEntry(_AsDict):
    """One row of the resource ledger: one resource scope as set up by one process."""

    id: int
    scope_id: str
    name: str
    flow_run_id: str | None
    host: str
    pid: int
    pid_started: str | None
    created: float
    setup_outcome: str | None
    setup_error: str | None
    setup_at: float | None
    handle: Any
    reaper: str | None
    reaper_file: str | None
    scope_outcome: str | None
    cleanup_outcome: str | None
    cleanup_error: str | None
    cleanup_seconds: float | None
    cleaned_at: float | None
    heartbeat: float | None
    #: The task runs that used the resource, in order.
    used_by: list[str] = field(default_factory=list)
    #: Why it is an orphan ("process 123 on this host is gone"), or None if it is not one.
    orphan: str | None = None

    @property
    def status(self) -> str:
        """``setting-up``, ``open``, ``setup-failed``, ``closed``, ``cleanup-failed``, ``reaping``,
        ``reaped``, ``reap-failed`` or ``closed-by-hand``."""
        cleanup = self.cleanup_outcome
        if cleanup == "succeeded":
            return "closed"
        if cleanup == "failed":
            return "cleanup-failed"
        if cleanup is not None:
            return cleanup
        if self.setup_outcome == "failed":
            return "setup-failed"
        return "setting-up" if self.setup_outcome is None else "open"

    @property
    def raw_claim(self) -> str | None:
        """While the row is ``reaping``: the claim of the process reaping it, as stored."""
        return self.cleanup_error if self.cleanup_outcome == "reaping" else None

    @property
    def reaping_by(self) -> ProcessInfo | None:
        """While the row is ``reaping``: the process reaping it (None if it did not say)."""
        return ProcessInfo.from_json(self.raw_claim) if self.cleanup_outcome == "reaping" else None

    def as_dict(self) -> dict[str, Any]:
        by = self.reaping_by
        shown = {
            **dataclasses.asdict(self),
            "status": self.status,
            "handle": redact_value(self.handle),
            "reaping_by": None if by is None else {"host": by.host, "pid": by.pid, "started": by.started},
        }
        if self.cleanup_outcome == "reaping":
            shown["cleanup_error"] = None  # it holds the claim, shown as reaping_by
        return shown


@dataclass(frozen=True)
class RunDetail(_AsDict):
    """Everything the store knows about one flow run."""

    flow_run: StoredFlowRun
    task_runs: list[StoredTaskRun]
    state_changes: list[StoredStateChange]
    logs: list[StoredLog]
    resources: list[LedgerEntry]
    subflows: list[StoredFlowRun]

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow_run": self.flow_run.as_dict(),
            "task_runs": [t.as_dict() for t in self.task_runs],
            "state_changes": [s.as_dict() for s in self.state_changes],
            "logs": [entry.as_dict() for entry in self.logs],
            "resources": [r.as_dict() for r in self.resources],
            "subflows": [f.as_dict() for f in self.subflows],
        }
