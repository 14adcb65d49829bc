"""Where the run store is: `TETHER_DATABASE_URL`, else SQLite at ``$TETHER_HOME/tether.db``.

`StoreLocation` carries the URL, the SQLite file (if any) and a form of the URL
that is safe to print (no password). `prepare_sqlite_file` creates the file with
mode 0600 in a directory only its owner can read. Nothing here connects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from tether import _settings as settings
from tether.store._errors import StoreError
from tether.store._redact import redact_text


def tether_home() -> Path:
    """``$TETHER_HOME``, or ``~/.tether``."""
    return settings.home()


def configured_url() -> str:
    """The store URL the environment asks for (not checked)."""
    return settings.database_url() or f"sqlite:///{tether_home() / 'tether.db'}"


@dataclass(frozen=True)
class StoreLocation:
    url: sa.URL
    #: The SQLite file, or None for a server database.
    path: Path | None

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def shown(self) -> str:
        """The URL without its password, or the file path: what messages name."""
        if self.path is not None:
            return str(self.path)
        return self.url.render_as_string(hide_password=True)

    @classmethod
    def resolve(cls, url: str | sa.URL | None = None) -> StoreLocation:
        raw = configured_url() if url is None else url
        try:
            parsed = sa.make_url(raw)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad setting
            shown = raw if isinstance(raw, str) else repr(raw)
            raise StoreError(
                f"The run store URL {_without_password(shown)!r} is not a database URL ({exc}). Set "
                "TETHER_DATABASE_URL to a SQLAlchemy URL such as postgresql+psycopg://user@host/db, "
                "or unset it to use SQLite under $TETHER_HOME."
            ) from None
        path = None
        if parsed.get_backend_name() == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise StoreError(
                    f"The run store cannot be an in-memory SQLite database ({parsed}): other processes "
                    "and the CLI could not read it. Give a file: sqlite:////path/to/tether.db."
                )
            path = Path(parsed.database).expanduser().absolute()
            parsed = parsed.set(database=str(path))
        return cls(parsed, path)


def prepare_sqlite_file(path: Path) -> None:
    """Create the store's directory (0700) and file (0600) if they are missing."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
    except OSError as exc:
        raise StoreError(
            f"Cannot create the run store at {path}: {exc.strerror or exc}. Make its directory "
            "writable, or set TETHER_HOME to a directory you can write to."
        ) from None


def _without_password(text: str) -> str:
    return redact_text(text)
