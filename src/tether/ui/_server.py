"""`serve`: bind the dashboard's socket, say its URL, and serve until Ctrl-C or SIGTERM.

The socket is bound here, before uvicorn starts, so ``port=0`` picks a free port
and the URL printed first is the one that answers. Bound to anything but loopback,
it warns that the dashboard has no authentication. This module starts the
server; the pages are `_app`'s.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import TextIO

import uvicorn

from tether.store import Store
from tether.ui._app import build_app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(store: Store, sock: socket.socket, allow_actions: bool = False, out: TextIO = sys.stdout,
          poll_seconds: float = 0.5) -> None:
    """Serve the dashboard of ``store`` on the bound ``sock`` until stopped (Ctrl-C, SIGTERM)."""
    host = sock.getsockname()[0]
    app = build_app(store, allow_actions=allow_actions, loopback_only=is_loopback(host), poll_seconds=poll_seconds)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        app.state.dashboard.watcher.close()
