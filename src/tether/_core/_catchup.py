"""What a serve process does with a deployment's due times: catch-up and overlap, as pure rules.

`decide` is given the deployment's due rows (scheduled, not yet claimed), the
time now (the database's clock), the policies and whether a run of the
deployment is still going; it answers which row to start and which to record
skipped or cancelled, with the reason. The store applies the verdict inside the
transaction that claims (`tether.store._deployments`); this module does no I/O.

Catch-up (``catchup``): a due time more than ``late_seconds`` late was missed
(no serve process ran, or all were busy). ``latest`` runs only the newest due time
and skips the missed ones before it; ``none`` skips every missed time; ``all`` runs
them all, oldest first. A run asked for by hand (``tether deployments run``) is
never skipped for being late.

Overlap (``overlap``), when a run of the deployment is still going: ``queue`` leaves
the due times waiting; ``skip`` records them skipped; ``cancel-new`` records them
cancelled.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

CATCHUP = ("latest", "all", "none")
OVERLAP = ("queue", "skip", "cancel-new")


@dataclass(frozen=True)
class DueTime:
    """A scheduled time whose moment has come, not yet claimed."""

    id: int
    scheduled_time: float
    manual: bool = False


@dataclass(frozen=True)
class Verdict:
    start: DueTime | None = None
    skipped: list[tuple[DueTime, str]] = field(default_factory=list)
    cancelled: list[tuple[DueTime, str]] = field(default_factory=list)


def when(timestamp: float) -> str:
    """A scheduled time as reasons show it (UTC, to the second)."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def decide(
    due: Sequence[DueTime],
    now: float,
    catchup: str,
    overlap: str,
    running_since: float | None,
    late_seconds: float,
) -> Verdict:
    """The verdict on ``due`` (oldest first); ``running_since`` is the scheduled time of the
    deployment's run still going, or None."""
    if catchup not in CATCHUP or overlap not in OVERLAP:
        raise ValueError(f"catchup={catchup!r} / overlap={overlap!r}: expected one of {CATCHUP} / {OVERLAP}")
    ordered = sorted(due, key=lambda d: d.scheduled_time)
    skipped: list[tuple[DueTime, str]] = []
    scheduled = [d for d in ordered if not d.manual]
    newest = scheduled[-1] if scheduled else None
    for d in scheduled:
        late = now - d.scheduled_time
        if late <= late_seconds or catchup == "all":
            continue
        if catchup == "none":
            skipped.append((d, f"missed: due {late:.0f} s before a serve process could start it (catchup=none)"))
        elif d is not newest:
            assert newest is not None
            skipped.append(
                (d, f"missed: a later scheduled time, {when(newest.scheduled_time)}, was due too (catchup=latest)")
            )
    gone = {d.id for d, _ in skipped}
    waiting = [d for d in ordered if d.id not in gone]
    if not waiting:
        return Verdict(skipped=skipped)
    if running_since is None:
        return Verdict(start=waiting[0], skipped=skipped)
    because = f"the run scheduled at {when(running_since)} was still going"
    if overlap == "skip":
        return Verdict(skipped=skipped + [(d, f"{because} (overlap=skip)") for d in waiting])
    if overlap == "cancel-new":
        return Verdict(skipped=skipped, cancelled=[(d, f"{because} (overlap=cancel-new)") for d in waiting])
    return Verdict(skipped=skipped)  # queue: they wait for it to end
