"""`serve`: run deployments on their schedules, each scheduled time exactly once, until told to stop.

A serve process registers its deployments in the run store, then loops: renew
the lease of the runs it holds, settle the runs of serve processes that are gone,
create the rows of the coming scheduled times (`DeploymentTable.plan`), claim the
due ones (`DeploymentTable.claim`, which applies catch-up and overlap) and start
each claimed run in a child process of its own, forked from serve (the flow is
imported already: `tether._serve_child`), so a flow that crashes its process does
not take ``serve`` down. Any number of serve
processes may serve the same deployments: the claim decides who runs what.

SIGTERM or Ctrl-C stops taking new runs; the running ones get ``grace_seconds`` to
finish, then are sent SIGTERM (their flows cancel and clean up their resources),
and ``serve`` exits 143 (130 for Ctrl-C). The deployments stay active: stopping
never pauses a schedule. A run's child process dies with its serve process, so a
killed serve leaves no run going that nobody watches.

`serve(*deployments)` and `serve_flow` (``flow.serve(...)``) are the entry points from a
script: bad input exits 2 with its message, as ``tether serve``'s does, before anything
is written. The times between steps go through `tether._clock`; the times that decide
what is due are the database's.
"""

from __future__ import annotations

import datetime
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from tether._deployment import Deployment, DeploymentError, ServableFlow
from tether._errors import UsageError
from tether._runtime import get_clock
from tether._serve_child import run_claimed
from tether._serve_display import ServeDisplay
from tether._settings import seconds
from tether.schedules import from_dict
from tether.store import (
    Claimed,
    DeploymentNameTaken,
    DeploymentTable,
    ProcessInfo,
    Store,
    StoreError,
    open_store,
)

log = logging.getLogger("tether.serve")
#: The shortest time between two looks at the store (0 would spin on it).
MIN_POLL_SECONDS = 0.01


@dataclass(frozen=True)
class ServeSettings:
    #: Seconds between two looks at the store.
    poll_seconds: float = 0.25
    #: Scheduled times are given their row this far ahead.
    lookahead_seconds: float = 10.0
    #: A time due longer than this ago was missed (catch-up applies).
    late_seconds: float = 30.0
    #: A serve process on another host that renewed no lease for this long is gone.
    lease_seconds: float = 30.0
    #: How long running runs may go on after SIGTERM/Ctrl-C before they are cancelled.
    grace_seconds: float = 30.0
    #: After cancelling, how long a run's cleanup may take before its process is killed.
    cancel_seconds: float = 30.0
    #: At most this many runs at once in this process (None: no limit).
    limit: int | None = None

    @classmethod
    def from_env(cls, **given: Any) -> ServeSettings:
        """The settings: ``given`` (None: not given) over ``TETHER_SERVE_<NAME>_SECONDS`` over the defaults.

        Raises `UsageError` naming the setting for an unknown name or a value that cannot be used."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise UsageError(
                f"serve() got an unknown setting {unknown[0]!r}: its settings are {', '.join(known)}. "
                "Example: serve(my_flow.to_deployment(name='nightly', cron='0 2 * * *'), grace_seconds=60)."
            )
        values: dict[str, Any] = {}
        for name in (n for n in known if n.endswith("_seconds")):
            variable = f"TETHER_SERVE_{name.removesuffix('_seconds').upper()}_SECONDS"
            values[name] = seconds(variable, getattr(cls, name), MIN_POLL_SECONDS if name == "poll_seconds" else 0.0)
        for name, value in given.items():
            if value is None:
                continue
            if name == "limit":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise UsageError(
                        f"serve() got limit={value!r}: the most runs at once in this process is a whole number of "
                        "at least 1, or None for no limit. Example: limit=4."
                    )
                values[name] = value
            else:
                values[name] = _seconds(value, f"{name}={value!r}", f"{name}={getattr(cls, name):g}", name)
        return cls(**values)


def _seconds(value: Any, shown: str, example: str, name: str) -> float:
    """``value`` as a number of seconds, or `UsageError` saying which setting and what would do."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    least = MIN_POLL_SECONDS if name == "poll_seconds" else 0.0
    if not math.isfinite(number) or number < least:
        raise UsageError(f"tether serve: {shown} is not a number of seconds of at least {least:g}. Example: {example}.")
    return number


@dataclass
class ChildRun:
    claimed: Claimed
    process: multiprocessing.process.BaseProcess

    @property
    def pid(self) -> int | None:
        return self.process.pid


class Server:
    """One serve process: its deployments, its store, and the runs it started."""

    def __init__(
        self,
        deployments: list[Deployment],
        settings: ServeSettings,
        store: Store | None = None,
        on_tick: Callable[[Server], None] | None = None,
    ) -> None:
        names = [d.name for d in deployments]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DeploymentError(
                f"serve() got two deployments named {twice[0]!r}; each deployment needs a name of its own. "
                f"Example: serve(a.to_deployment(name={twice[0]!r}), b.to_deployment(name={twice[0] + '-2'!r}))."
            )
        self.deployments = {d.name: d for d in deployments}
        self.settings = settings
        self.store = store if store is not None else open_store()
        self.table = DeploymentTable(self.store.engine)
        self.me = ProcessInfo.current()
        self.children: dict[int, ChildRun] = {}
        self.stop_event = threading.Event()
        self.stop_signal: int | None = None
        self.on_tick = on_tick
        self.seen_by = f"tether serve (process {self.me.pid})"
        self.registered = False
        #: When this process registered its deployments, by the database's clock.
        self.started_at = 0.0
        #: Deployments whose schedule in the store is another process's (warned once).
        self._stale: set[str] = set()

    def register(self) -> None:
        """Write the deployments to the store (`DeploymentNameTaken` if a name is another flow's)."""
        self.registered = True
        self.started_at = self.table.now()
        for deployment in self.deployments.values():
            if self.table.register(deployment.spec(), deployment.times):
                log.warning(
                    "Deployment %r: its schedule changed; times count from now (nothing is back-filled).",
                    deployment.name,
                )

    # -- the loop ----------------------------------------------------------------------

    def serve(self) -> int:
        """Serve until SIGTERM/Ctrl-C (or `stop`); the exit code (143, 130, or 0)."""
        if not self.registered:
            self.register()
        previous = self._install_signals()
        try:
            while not self.stop_event.is_set():
                try:
                    self.tick()
                except SQLAlchemyError as exc:  # the database is away for a moment: look again next time
                    log.warning(
                        "tether serve: the run store did not answer (%s); trying again.", str(exc).splitlines()[0]
                    )
                get_clock().wait(self.stop_event, self.settings.poll_seconds)
            self.drain()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.store.close()
        return {int(signal.SIGTERM): 143, int(signal.SIGINT): 130}.get(self.stop_signal or 0, 0)

    def stop(self, signum: int | None = None) -> None:
        self.stop_signal = self.stop_signal or signum
        self.stop_event.set()

    def tick(self) -> None:
        """One look at the store: leases, gone processes, ended children, new times, due runs."""
        self.table.renew(self.me)
        for row in self.table.recover(self.settings.lease_seconds, self.seen_by):
            log.warning(
                "Deployment %r: the run scheduled at %s was settled as %s: %s",
                row.deployment,
                _when(row.scheduled_time),
                row.status,
                row.reason,
            )
        self.collect_children()
        for name, deployment in self.deployments.items():
            if deployment.schedules and self._schedule_is_current(name, deployment):
                self.table.plan(name, deployment.times, self.settings.lookahead_seconds)
        for name in self.deployments:
            while not self.stop_event.is_set() and self._has_room():
                claimed = self.table.claim(name, self.me, self.settings.late_seconds)
                if claimed is None:
                    break
                self.start_child(claimed)
        if self.on_tick is not None:
            try:
                self.on_tick(self)
            except Exception:
                log.exception("tether serve: the display failed")

    def _schedule_is_current(self, name: str, deployment: Deployment) -> bool:
        """Whether the store still holds this process's schedule for ``name``. A serve process started
        later with another schedule has changed it: this one plans no more times of its old one
        (its due runs it still claims), so changing a schedule never leaves two running."""
        stored = self.table.get(name).schedules
        if stored == [s.to_dict() for s in deployment.schedules]:
            self._stale.discard(name)
            return True
        if name not in self._stale:
            self._stale.add(name)
            log.warning(
                "Deployment %r: another serve process registered another schedule for it (%s); this one (%s) "
                "plans no times of its own. Restart it with the schedule now in the store, or serve another name.",
                name,
                ", ".join(from_dict(d).describe() for d in stored) or "none",
                ", ".join(sch.describe() for sch in deployment.schedules),
            )
        return False

    def _has_room(self) -> bool:
        return self.settings.limit is None or len(self.children) < self.settings.limit

    # -- child processes ---------------------------------------------------------------

    def start_child(self, claimed: Claimed) -> None:
        deployment = self.deployments[claimed.deployment]
        job = {
            "run_id": claimed.id,
            "deployment": claimed.deployment,
            "scheduled_time": claimed.scheduled_time,
            "parameters": claimed.parameters,
            "tags": claimed.tags,
            "version": deployment.version,
            "owner": self.me.as_json(),
            "store_url": self.store.location.url.render_as_string(hide_password=False),
        }
        # Forked: the flow is already imported here, so a run starts at once (no new interpreter).
        process = _FORK.Process(
            target=run_claimed, args=(job, deployment.flow, self.store.engine), name=f"tether-run-{claimed.id}"
        )
        process.start()
        self.children[claimed.id] = ChildRun(claimed, process)
        log.info(
            "Deployment %r: started the run scheduled at %s (process %s).",
            claimed.deployment,
            _when(claimed.scheduled_time),
            process.pid,
        )

    def collect_children(self) -> None:
        for run_id, child in list(self.children.items()):
            if child.process.is_alive():
                continue
            child.process.join()
            # Settled before it is forgotten: if the store fails now, the next tick settles it again.
            settled = self.table.settle_ended_child(run_id, self.seen_by)
            del self.children[run_id]
            if settled is not None:
                log.warning(
                    "Deployment %r: the run's process ended (exit %s) before recording it: recorded %s.",
                    settled.deployment,
                    child.process.exitcode,
                    settled.status,
                )

    def drain(self) -> None:
        """After a stop: let the running runs finish within the grace period, then cancel them."""
        if self.children:
            log.warning(
                "tether serve: stopping; %d run(s) still going get %.0f s to finish.",
                len(self.children),
                self.settings.grace_seconds,
            )
        self._wait_children(self.settings.grace_seconds)
        if self.children:
            for child in self.children.values():
                _signal(child.process, signal.SIGTERM)  # the flow cancels and cleans up
            self._wait_children(self.settings.cancel_seconds)
        for child in self.children.values():
            _signal(child.process, signal.SIGKILL)
            child.process.join()
        self.collect_children()

    def _wait_children(self, seconds: float) -> None:
        clock = get_clock()
        deadline = clock.monotonic() + seconds
        idle = threading.Event()
        while self.children and clock.monotonic() < deadline:
            self.table.renew(self.me)
            self.collect_children()
            if self.children:
                clock.wait(idle, min(self.settings.poll_seconds, max(0.0, deadline - clock.monotonic())))

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: Any) -> None:
            if self.stop_event.is_set():
                log.warning("tether serve: already stopping; waiting for %d run(s).", len(self.children))
            self.stop(signum)

        return {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}


_FORK = multiprocessing.get_context("fork")


def _signal(process: multiprocessing.process.BaseProcess, signum: int) -> None:
    if process.is_alive() and process.pid is not None:
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass


def serve(
    *deployments: Deployment,
    limit: int | None = None,
    print_starting_message: bool = True,
    pause_on_shutdown: bool = False,
    **settings: Any,
) -> int:
    """Serve ``deployments`` until SIGTERM or Ctrl-C (blocks); the exit code: 143 after SIGTERM, 130 after Ctrl-C.

    Bad input is a usage error, as on the command line: something that is not a
    deployment, two deployments of one name, a name another flow's deployment has, an
    unknown or bad setting. Its message goes to stderr and the process exits 2 (a
    `SystemExit`), with nothing written to the store. A store that cannot be used exits 1.
    ``settings`` are `ServeSettings`' fields (``grace_seconds=60``...). Prefect's
    ``print_starting_message`` is kept; its ``pause_on_shutdown`` is accepted and changes
    nothing: stopping never pauses a schedule here."""
    with _exit_on_bad_input():
        if not deployments:
            raise DeploymentError(
                "serve() got no deployments: it would serve nothing until stopped. "
                "Example: serve(my_flow.to_deployment(name='nightly', cron='0 2 * * *'))."
            )
        for d in deployments:
            if not isinstance(d, Deployment):
                raise DeploymentError(
                    f"serve() takes deployments, got {d!r}. Example: "
                    "serve(my_flow.to_deployment(name='nightly', cron='0 2 * * *'))."
                )
        chosen = ServeSettings.from_env(limit=limit, **settings)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    display = ServeDisplay(console)
    try:
        with _exit_on_bad_input():
            server = Server(list(deployments), chosen, on_tick=display.update)
            try:
                server.register()
            except BaseException:
                server.store.close()
                raise
        if print_starting_message:
            console.print(serving_line(server))
        return server.serve()
    finally:
        display.close()


def serve_flow(
    flow: ServableFlow,
    name: str | None = None,
    *,
    limit: int | None = None,
    print_starting_message: bool = True,
    pause_on_shutdown: bool = False,
    **options: Any,
) -> int:
    """``flow.serve(...)``: serve one deployment of ``flow`` (see `serve`); bad options exit 2 the same way."""
    with _exit_on_bad_input():
        deployment = Deployment(flow, name or flow.name, **options)
    return serve(
        deployment, limit=limit, print_starting_message=print_starting_message, pause_on_shutdown=pause_on_shutdown
    )


def serving_line(server: Server) -> str:
    """What serve says once its deployments are registered: what it serves and when the next run is."""
    now = server.table.now()
    parts = []
    for d in server.deployments.values():
        schedules = ", ".join(s.describe() for s in d.schedules) or "no schedule: runs on request"
        parts.append(f"{d.name!r} ({schedules}; next run {_when(d.next_time(now))})")
    return f"Serving deployment {'; '.join(parts)}. Ctrl-C or SIGTERM stops."


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def _exit_on_bad_input() -> Iterator[None]:
    """Bad input to serve exits 2 with its message, as the command line's does; an unusable store exits 1."""
    try:
        yield
    except (UsageError, DeploymentNameTaken) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    except StoreError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
