"""The dashboard, ``tether ui``: runs, a run's timeline of task runs and resource copies, the ledger, the limits.

A Starlette application (`build_app`) over an opened run store, served by uvicorn
(`serve`); its templates, script and styles ship inside this package, and its
pages load nothing from another origin. It reads the store only through
`tether.store`'s public functions, and nothing else in tether imports it.
Needs the ``ui`` extra (starlette, uvicorn, jinja2).
"""

from tether.ui._app import build_app
from tether.ui._server import bind, is_loopback, serve, url_of

__all__ = ["bind", "build_app", "is_loopback", "serve", "url_of"]
