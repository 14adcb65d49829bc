"""The dashboard's web application: one Starlette route per page, each a thin call to a store query and a template.

Pages: ``/`` (runs), ``/runs/<id>`` (a run: timeline, artifacts (`_artifacts`), errors, parameters, logs),
``/runs/<id>/log.txt`` (the whole log), ``/tasks/<id>`` (a task run, its artifacts too), ``/resources``
(the ledger, orphans marked), ``/limits`` and ``/deployments`` (from ``tether serve``); ``/events`` streams the store's
changes (`_live`: pushed by PostgreSQL's NOTIFY, polled on SQLite). A page asked with ``X-Tether-Partial: 1`` sends only its
``<main>``, which the page's script swaps in when the store changes.

It is read-only unless built with ``allow_actions``: then reaping orphans,
marking a resource closed, cancelling a run (`tether.store.cancel_flow_run`: SIGTERM to its
process, on this host) and pausing or resuming a deployment are POSTs carrying the CSRF token of this server's
pages. Every response forbids loading anything from another origin (CSP), and a
dashboard bound to loopback answers only requests addressed to loopback names, so
a web page elsewhere cannot reach it through DNS rebinding. This module reads the
store only through `tether.store`'s public functions.
"""

from __future__ import annotations

import hmac
import re
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tether.store import (
    ArtifactTable,
    CannotCancel,
    RunNotFound,
    Store,
    StoredFlowRun,
    cancel_flow_run,
    change_token,
    deployment_views,
    find_flow_run,
    flow_process_gone,
    heartbeat_seconds,
    limit_views,
    reap_orphans,
    run_artifacts,
    run_log_lines,
    run_view,
    runs_page,
    set_deployment_paused,
    task_run_view,
)
from tether.ui import _format, _timeline
from tether.ui._artifacts import ARTIFACT_LIMIT, artifact_views
from tether.ui._live import ChangeWatcher, event_stream

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
#: The runs page's time filter: runs created within the last ...
WITHIN = {"hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0}
STATES = ["COMPLETED", "RUNNING", "PENDING", "FAILED", "CRASHED", "CANCELLED"]
#: The states after which a run has nothing left to cancel.
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Dashboard:
    """The pages over one opened store."""

    def __init__(self, store: Store, allow_actions: bool = False, poll_seconds: float = 0.5) -> None:
        self.store = store
        self.allow_actions = allow_actions
        self.csrf_token = secrets.token_urlsafe(32)
        # PostgreSQL pushes its changes (NOTIFY); SQLite has nothing to push them, so its token is polled.
        pushed = None if store.location.is_sqlite else store.wait_for_change
        self.watcher = ChangeWatcher(lambda: change_token(store), poll_seconds, wait_for_change=pushed)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("tether.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.globals.update(
            when=_format.when, clock=_format.clock, iso=_format.iso, seconds=_format.seconds,
            short_id=_format.short_id, state_class=_format.state_class, outcome=_timeline.outcome,
            worker=_timeline.worker, zone=_format.zone, states=STATES, process_gone=process_gone,
            this_host=socket.gethostname(),
        )

    # -- pages -------------------------------------------------------------------------

    def runs(self, request: Request) -> Response:
        q = request.query_params
        state, flow, deployment = q.get("state") or None, q.get("flow") or None, q.get("deployment") or None
        before, within = _float(q.get("before")), q.get("within") or None
        now = time.time()
        since = None if within not in WITHIN else now - WITHIN[within]
        page = runs_page(self.store, state=state, flow=flow, before=before, deployment=deployment, since=since)
        older = None
        if page.more and page.runs:
            kept = {k: v for k, v in (("state", state), ("flow", flow), ("deployment", deployment),
                                      ("within", within)) if v}
            older = "/?" + urlencode(kept | {"before": repr(page.runs[-1].run.created)})
        return self.page(request, "runs.html", page=page, state=state, flow=flow, deployment=deployment,
                         within=within, windows=WITHIN, older=older, now=now)

    def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        number = _page_number(request.query_params.get("page"))
        now = time.time()
        try:
            view = run_view(self.store, run_id, page=number, now=now)
        except RunNotFound:
            found = find_flow_run(self.store, run_id).id  # a part of an id; RunNotFound if none or many
            return RedirectResponse(f"/runs/{found}", status_code=303)
        svg = _timeline.render(view, now=now, task_href="/tasks/")
        pages = max((view.task_total + view.page_size - 1) // view.page_size, 1)
        cancel_sent = request.query_params.get("cancel") == "sent"
        stored = run_artifacts(self.store, view.flow_run.id)
        names = {t.id: t.run_name for t in view.task_page} | {lane.task.id: lane.task.run_name for lane in view.lanes or []}
        artifacts = artifact_views(stored, names | view.task_names)
        return self.page(request, "run.html", view=view, run=view.flow_run, timeline=svg, pages=pages, now=now,
                         final=FINAL, cancel_sent=cancel_sent, artifacts=artifacts, artifact_total=len(stored),
                         artifact_limit=ARTIFACT_LIMIT)

    def run_log(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = find_flow_run(self.store, run_id)  # 404 if there is no such run
        run_id = run.id

        def lines() -> Iterator[str]:
            yield f"# log of flow run {run.run_name!r} ({run.id}, flow {run.name!r}); times in {_format.zone()}\n"
            for entry, name in run_log_lines(self.store, run_id):
                who = name or run.run_name
                yield f"{_format.when(entry.timestamp)} {_level(entry.level):8} {who}: {entry.message}\n"

        filename = re.sub(r"[^A-Za-z0-9._-]+", "_", f"tether-{run.run_name}-{run.id[:8]}.log")  # a safe header
        return StreamingResponse(
            lines(), media_type="text/plain; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"', **SECURITY_HEADERS},
        )

    def task(self, request: Request) -> Response:
        view = task_run_view(self.store, request.path_params["task_run_id"])
        made = ArtifactTable(self.store.engine).for_task_run(view.task.id)
        artifacts = artifact_views(made, {view.task.id: view.task.run_name})
        return self.page(request, "task.html", view=view, task=view.task, run=view.flow_run, now=time.time(),
                         artifacts=artifacts)

    def resources(self, request: Request) -> Response:
        entries = self.store.resources(limit=500)
        orphans = [e for e in entries if e.orphan is not None]
        return self.page(request, "resources.html", entries=entries, orphans=orphans, reaped=None, crashed=[],
                         now=time.time())

    def deployments(self, request: Request) -> Response:
        return self.page(request, "deployments.html", deployments=deployment_views(self.store), now=time.time())

    def limits(self, request: Request) -> Response:
        return self.page(request, "limits.html", limits=limit_views(self.store), now=time.time())

    async def events(self, request: Request) -> Response:
        stream = event_stream(self.watcher, request.query_params.get("token", ""), request.is_disconnected)
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"Cache-Control": "no-store", **SECURITY_HEADERS}
        )

    # -- actions (only with allow_actions) ---------------------------------------------

    async def reap(self, request: Request) -> Response:
        refused = await self._refused(request, "tether reap")
        if refused is not None:
            return refused
        # As `tether reap` does: the runs whose process is gone are recorded Crashed first, then orphans reaped.
        crashed = await run_in_threadpool(lambda: self.store.record_crashed_runs("tether ui", other_hosts=True))
        reaped = await run_in_threadpool(reap_orphans, self.store)  # reapers are the user's code: off the loop
        entries = await run_in_threadpool(self.store.resources, 500)
        orphans = [e for e in entries if e.orphan is not None]
        return self.page(request, "resources.html", entries=entries, orphans=orphans, reaped=reaped, crashed=crashed,
                         now=time.time())

    async def mark_closed(self, request: Request) -> Response:
        refused = await self._refused(request, f"tether reap --mark-closed {request.path_params['entry_id']}")
        if refused is not None:
            return refused
        await run_in_threadpool(self.store.mark_reaped, int(request.path_params["entry_id"]))
        return RedirectResponse("/resources", status_code=303)

    async def cancel(self, request: Request) -> Response:
        refused = await self._refused(request, f"tether runs cancel {request.path_params['run_id']}")
        if refused is not None:
            return refused
        try:
            sent = await run_in_threadpool(cancel_flow_run, self.store, request.path_params["run_id"])
        except CannotCancel as exc:
            return self.error(request, 409, str(exc), back=f"/runs/{exc.run_id}")
        return RedirectResponse(f"/runs/{sent.id}?cancel=sent", status_code=303)

    async def pause(self, request: Request) -> Response:
        return await self._set_paused(request, True)

    async def resume(self, request: Request) -> Response:
        return await self._set_paused(request, False)

    async def _set_paused(self, request: Request, paused: bool) -> Response:
        command = f"tether deployments {'pause' if paused else 'resume'} {request.path_params['name']}"
        refused = await self._refused(request, command)
        if refused is not None:
            return refused
        await run_in_threadpool(set_deployment_paused, self.store, request.path_params["name"], paused)
        return RedirectResponse("/deployments", status_code=303)

    async def _refused(self, request: Request, command: str) -> Response | None:
        """A 403 page unless actions are allowed and the form carries this server's CSRF token;
        ``command`` is the shell command that does the same."""
        if not self.allow_actions:
            return self.error(
                request, 403, "This dashboard is read-only: it was started without --allow-actions. "
                f"Run the action from the shell ({command}), or restart with: tether ui --allow-actions",
            )
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("csrf") or [""])[0]
        if not hmac.compare_digest(token.encode(), self.csrf_token.encode()):
            return self.error(
                request, 403, "The form's CSRF token is missing or belongs to another start of the dashboard. "
                "Reload the page and try again.",
            )
        return None

    # -- rendering ---------------------------------------------------------------------

    def page(self, request: Request, template: str, **context: Any) -> Response:
        partial = request.headers.get("x-tether-partial") == "1"
        token = self.watcher.token()
        html = self.templates.get_template(template).render(
            partial=partial, token=token, path=request.url.path, allow_actions=self.allow_actions,
            csrf=self.csrf_token, store=self.store.location.shown, **context,
        )
        return HTMLResponse(html, headers={"X-Tether-Token": token, "Cache-Control": "no-store", **SECURITY_HEADERS})

    def error(self, request: Request, status: int, message: str, back: str | None = None) -> Response:
        html = self.templates.get_template("error.html").render(
            partial=False, token="", path=request.url.path, allow_actions=self.allow_actions, csrf="",
            store=self.store.location.shown, status=status, message=message, back=back,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def build_app(store: Store, allow_actions: bool = False, loopback_only: bool = True,
              poll_seconds: float = 0.5) -> Starlette:
    """The dashboard over ``store``; ``loopback_only`` answers only requests addressed to a loopback name."""
    board = Dashboard(store, allow_actions, poll_seconds)

    async def not_found(request: Request, exc: Exception) -> Response:
        return board.error(request, 404, str(exc))

    async def unusable(request: Request, exc: Exception) -> Response:
        return board.error(request, 503, f"The run store {store.location.shown} cannot be read now: {exc}")

    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES)] if loopback_only else []
    routes = [
        Route("/", board.runs),
        Route("/runs/{run_id}", board.run),
        Route("/runs/{run_id}/log.txt", board.run_log),
        Route("/tasks/{task_run_id}", board.task),
        Route("/resources", board.resources),
        Route("/limits", board.limits),
        Route("/deployments", board.deployments),
        Route("/events", board.events),
        Route("/actions/reap", board.reap, methods=["POST"]),
        Route("/actions/resources/{entry_id:int}/mark-closed", board.mark_closed, methods=["POST"]),
        Route("/actions/runs/{run_id}/cancel", board.cancel, methods=["POST"]),
        Route("/actions/deployments/{name}/pause", board.pause, methods=["POST"]),
        Route("/actions/deployments/{name}/resume", board.resume, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("tether.ui", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes, middleware=middleware,
        exception_handlers={LookupError: not_found, SQLAlchemyError: unusable},  # RunNotFound, DeploymentNotFound
    )
    app.state.dashboard = board
    return app


def process_gone(run: StoredFlowRun, now: float) -> str | None:
    """Why an unfinished run's process can no longer end it (not recorded Crashed yet), or None.

    On this host its pid is looked at; a run of another host is judged by its stale heartbeat."""
    if run.end_time is not None or run.state_type not in (None, "PENDING", "RUNNING"):
        return None
    stale = 6 * heartbeat_seconds()
    return flow_process_gone(run.host, run.pid, run.created, run.heartbeat, now, stale, other_hosts=True)


def _float(text: str | None) -> float | None:
    try:
        return None if text is None or text == "" else float(text)
    except ValueError:
        return None


def _page_number(text: str | None) -> int:
    return int(text) if text is not None and text.isdigit() and len(text) < 10 else 0


def _level(level: int) -> str:
    return {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}.get(level, str(level))
