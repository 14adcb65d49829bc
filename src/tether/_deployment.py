"""`Deployment`: a flow with a name, parameters and schedules, ready for ``serve``.

``flow.to_deployment(name=..., cron=...)`` makes one and checks everything it can
before anything is written: the schedules (`tether.schedules`), the catch-up and
overlap policies, the name, and that the parameters fit the flow's signature (and
its type hints, when the flow validates parameters). It also finds where the flow
is defined (its entry point, ``/path/file.py:name``), since each scheduled run
imports it again in a process of its own.

This module describes deployments; serving them is `tether._serve`.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from tether._core._catchup import CATCHUP, OVERLAP
from tether._errors import DeploymentError, ParameterError
from tether.schedules import Cron, Interval, RRule, Schedule, ScheduleError
from tether.store import DeploymentSpec


class ServableFlow(Protocol):
    """What a deployment needs of a flow (`tether._flow.FlowFunction` is one)."""

    name: str
    fn: Callable[..., Any]
    description: str | None
    version: str | None

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]: ...

    def check_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """``parameters`` bound, and validated from the type hints if the flow validates (raises ParameterError)."""
        ...


__all__ = ["Deployment", "DeploymentError", "RunnerDeployment"]

#: The options of a deployment, as the error for an unknown one lists them.
DEPLOYMENT_OPTIONS = (
    "cron", "interval", "rrule", "schedule", "schedules", "timezone", "parameters", "tags", "description",
    "version", "catchup", "overlap", "entrypoint",
)  # fmt: skip




class Deployment:
    """A flow to run on schedules (or on request) under a name, by ``tether serve``."""

    def __init__(
        self,
        flow: ServableFlow,
        name: str,
        *,
        cron: str | Iterable[str] | None = None,
        interval: float | dt.timedelta | Iterable[float | dt.timedelta] | None = None,
        rrule: str | Iterable[str] | None = None,
        schedule: Schedule | None = None,
        schedules: Iterable[Schedule] | None = None,
        timezone: str | None = None,
        parameters: dict[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        description: str | None = None,
        version: str | None = None,
        catchup: str = "latest",
        overlap: str = "queue",
        entrypoint: str | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            first = min(unknown)
            raise DeploymentError(
                f"Flow {flow.name!r}: to_deployment()/serve() got an unknown option {first}={unknown[first]!r}. "
                f"The options are {', '.join(DEPLOYMENT_OPTIONS)}. Example: name='nightly', cron='0 2 * * *', "
                "timezone='Europe/Berlin', parameters={'n': 5}."
            )
        if not isinstance(name, str) or not name.strip() or len(name) > 255 or "/" in name:
            raise DeploymentError(
                f"Flow {flow.name!r}: name={name!r} is not a deployment name (a non-empty text of at most 255 "
                "characters, without '/'). Example: name='nightly'."
            )
        self.flow = flow
        self.name = name
        owner = f"Deployment {name!r}"
        self.schedules: list[Schedule] = _schedules(owner, cron, interval, rrule, schedule, schedules, timezone)
        if catchup not in CATCHUP:
            raise DeploymentError(
                f"{owner}: catchup={catchup!r} is not a catch-up policy: use one of {', '.join(CATCHUP)}. Example: catchup='latest'."
            )
        if overlap not in OVERLAP:
            raise DeploymentError(
                f"{owner}: overlap={overlap!r} is not an overlap policy: use one of {', '.join(OVERLAP)}. Example: overlap='skip'."
            )
        self.catchup = catchup
        self.overlap = overlap
        self.parameters = check_parameters(flow, owner, dict(parameters or {}))
        self.tags = sorted(set(tags or ()))
        self.description = description if description is not None else flow.description
        self.version = version if version is not None else flow.version
        self.entrypoint = entrypoint or entrypoint_of(flow)

    def __repr__(self) -> str:
        return f"Deployment(name={self.name!r}, flow={self.flow.name!r}, schedules=[{', '.join(s.describe() for s in self.schedules)}])"

    def times(self, after: float, until: float) -> list[float]:
        """Every schedule's times in ``(after, until]``, oldest first, each once."""
        found: set[float] = set()
        for schedule in self.schedules:
            found.update(schedule.times(after, until))
        return sorted(found)

    def next_time(self, after: float) -> float | None:
        upcoming = [t for t in (s.next_time(after) for s in self.schedules) if t is not None]
        return min(upcoming) if upcoming else None

    def spec(self) -> DeploymentSpec:
        described = [s.to_dict() for s in self.schedules]
        key = ",".join(sorted(s.key() for s in self.schedules)) or "none"
        return DeploymentSpec(
            self.name, self.flow.name, self.entrypoint, json.dumps(self.parameters, sort_keys=True), json.dumps(self.tags),
            self.description, self.version, json.dumps(described), key[:64], self.catchup, self.overlap,
        )  # fmt: skip


RunnerDeployment = Deployment  # Prefect's name for what flow.to_deployment returns


def _schedules(
    owner: str,
    cron: str | Iterable[str] | None,
    interval: float | dt.timedelta | Iterable[float | dt.timedelta] | None,
    rrule: str | Iterable[str] | None,
    schedule: Schedule | None,
    schedules: Iterable[Schedule] | None,
    timezone: str | None,
) -> list[Schedule]:
    given = [
        k
        for k, v in (
            ("cron", cron),
            ("interval", interval),
            ("rrule", rrule),
            ("schedule", schedule),
            ("schedules", schedules),
        )
        if v is not None
    ]
    if len(given) > 1:
        raise DeploymentError(
            f"{owner}: {' and '.join(given)} were both given; give one way of scheduling. Example: cron='0 2 * * *', "
            "or schedules=[Cron('0 2 * * *'), Interval(3600)]."
        )
    found: list[Schedule] = []
    if cron is not None:
        found = [Cron(c, timezone=timezone) for c in ([cron] if isinstance(cron, str) else cron)]
    elif interval is not None:
        items = [interval] if isinstance(interval, (int, float, dt.timedelta)) else list(interval)
        found = [Interval(i, timezone=timezone) for i in items]
    elif rrule is not None:
        found = [RRule(r, timezone=timezone) for r in ([rrule] if isinstance(rrule, str) else rrule)]
    elif schedule is not None or schedules is not None:
        found = [schedule] if schedule is not None else list(schedules or ())
        for s in found:
            if not isinstance(s, (Cron, Interval, RRule)):
                raise ScheduleError(
                    f"{owner}: {s!r} is not a schedule. Example: schedule=Cron('0 2 * * *', timezone='Europe/Berlin')."
                )
    if timezone is not None and (schedule is not None or schedules is not None or not given):
        # Dropped silently, it would move every run by the zone's offset: say where it goes instead.
        where = "each schedule object carries its own" if given else "there is no schedule to apply it to"
        raise ScheduleError(
            f"{owner}: timezone={timezone!r} is for cron=, interval= or rrule=, and {where}. Example: "
            f"cron='0 2 * * *', timezone={timezone!r}, or schedule=Cron('0 2 * * *', timezone={timezone!r})."
        )
    return found


def check_parameters(flow: ServableFlow, owner: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """``parameters`` if they fit the flow's signature (and type hints) and can be stored as JSON."""
    try:
        flow.check_parameters(parameters)
    except ParameterError as exc:
        raise DeploymentError(f"{owner}: parameters={parameters!r} do not fit flow {flow.name!r}: {exc}") from None
    try:
        json.dumps(parameters)
    except (TypeError, ValueError) as exc:
        raise DeploymentError(
            f"{owner}: parameters={parameters!r} cannot be stored ({exc}): a deployment's parameters are kept as JSON "
            "(numbers, strings, lists, dicts). Example: parameters={'n': 5, 'table': 'sales'}."
        ) from None
    return parameters


def entrypoint_of(flow: ServableFlow) -> str:
    """Where a run's process finds the flow: ``/abs/path/file.py:name``."""
    try:
        source = inspect.getsourcefile(flow.fn)
    except TypeError:
        source = None
    if source is None or not Path(source).is_file():
        raise DeploymentError(
            f"Flow {flow.name!r} cannot be served: tether cannot find the file it is defined in (it was defined "
            "interactively?), and each scheduled run imports it in a new process. Define it in a .py file."
        )
    module = sys.modules.get(getattr(flow.fn, "__module__", ""), None)
    attribute = next((k for k, v in vars(module).items() if v is flow), None) if module is not None else None
    return f"{Path(source).resolve()}:{attribute or flow.name}"
