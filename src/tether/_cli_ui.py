"""``tether ui``: serve the dashboard over the run store (`tether.ui`), on loopback unless told otherwise.

    tether ui [--host 127.0.0.1] [--port 8787] [--allow-actions]

The first line printed is the dashboard's URL (``--port 0`` picks a free port).
The dashboard needs the ``ui`` extra; without it the command says which pip
command installs it. This module parses and starts; the pages are `tether.ui`'s.
"""

from __future__ import annotations

import importlib.util
import sys

import click
from sqlalchemy.exc import SQLAlchemyError

from tether.store import StoreError, StoreLocation, open_store

UI_PACKAGES = ("starlette", "uvicorn", "jinja2")


def missing_ui_packages() -> list[str]:
    return [name for name in UI_PACKAGES if importlib.util.find_spec(name) is None]


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--allow-actions", is_flag=True,
    help="Allow actions: reap orphans, mark a resource closed, cancel a run, pause or resume a deployment "
    "(POSTs with a CSRF token).",
)
def ui(host: str, port: int, allow_actions: bool) -> None:
    """Serve a web dashboard of the runs, resources and limits in the run store."""
    missing = missing_ui_packages()
    if missing:
        raise click.ClickException(
            f"tether ui needs the ui extra, and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            'not installed. Install it from the tether checkout with: pip install -e ".[ui]"'
        )
    # The dashboard's modules import starlette, uvicorn and jinja2 (the optional extra), so they are
    # loaded only by this command: every other tether command starts without them.
    from tether.ui import bind, is_loopback, serve, url_of

    try:
        location = StoreLocation.resolve()
        store = open_store(location.url)
    except (StoreError, SQLAlchemyError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        try:
            sock = bind(host, port)
        except OSError as exc:
            raise click.ClickException(
                f"tether ui cannot listen on {host}:{port}: {exc.strerror or exc}. "
                "Choose another port with --port (0 picks a free one)."
            ) from None
        click.echo(url_of(sock, host))
        if not is_loopback(host):
            click.echo(
                f"Warning: the dashboard listens on {host}, beyond this machine, and has no authentication: "
                "anyone who can reach this address sees every run, parameter (secrets redacted) and log in the store."
                + (" With --allow-actions they can also reap resources and cancel runs." if allow_actions else ""),
                err=True,
            )
        click.echo(f"Serving the run store {location.shown}{'' if allow_actions else ', read-only'}. Ctrl-C stops.",
                   err=True)
        sys.stdout.flush()
        serve(store, sock, allow_actions=allow_actions)
    finally:
        store.close()
