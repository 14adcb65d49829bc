"""Artifacts in the run store: what a flow or task run published (markdown, a table, a link, progress, an image).

Each artifact is a row linked to the flow run (and task run) that made it; artifacts
that share a key are that key's versions, newest last. ``data`` is the payload as
Prefect formats it (markdown text, a table as JSON text, a link as markdown, progress
as a number), kept as JSON. Secrets are redacted when a row is written and again when
it is read, as for logs: a secret-named column of a table (``password``, ``api_key``),
and secrets inside text (a URL's password, ``token=...``).

For the CLI and the dashboard: `run_artifacts(store, flow_run_id)` lists a run's
artifacts, oldest first (those of its task runs included, each with its
``task_run_id``); `StoredArtifact.table_rows` gives a table as columns and rows.

This module stores and reads; checking keys and formatting payloads is `tether.artifacts`'s.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tether._known_secrets import REDACTED
from tether.store._db import read, write
from tether.store._redact import is_secret_name, redact_text
from tether.store._schema import artifacts
from tether.store._store import Store

ARTIFACT_TYPES = ("markdown", "table", "link", "progress", "image")


@dataclass(frozen=True)
class StoredArtifact:
    id: str
    key: str | None
    type: str
    description: str | None
    #: As Prefect keeps it: markdown text, a table as JSON text, progress as a number, an image's URL.
    data: Any
    flow_run_id: str | None
    task_run_id: str | None
    created: float
    updated: float

    def table_rows(self) -> tuple[list[str], list[list[Any]]]:
        """A table artifact as (column names, rows); a table of plain lists has columns "0", "1"...

        Raises ValueError for an artifact that is not a table."""
        if self.type != "table":
            raise ValueError(f"Artifact {self.key or self.id!r} is a {self.type} artifact, not a table.")
        return table_rows(json.loads(self.data) if isinstance(self.data, str) else self.data)


def table_rows(table: Any) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of a table given as Prefect takes one: a dict of columns, a list of
    dicts (rows), or a list of lists."""
    if isinstance(table, dict):
        columns = [str(c) for c in table]
        cells = [list(v) if isinstance(v, list) else [v] for v in table.values()]
        height = max((len(c) for c in cells), default=0)
        return columns, [[c[i] if i < len(c) else None for c in cells] for i in range(height)]
    rows = list(table or [])
    if rows and all(isinstance(r, dict) for r in rows):
        names: list[str] = []
        for r in rows:
            names.extend(str(k) for k in r if str(k) not in names)
        return names, [[r.get(c) for c in names] for r in rows]
    width = max((len(r) for r in rows if isinstance(r, list)), default=0)
    return [str(i) for i in range(width)], [list(r) if isinstance(r, list) else [r] for r in rows]


class ArtifactTable:
    """The artifacts of one store (``Store.engine``, or `tether.store.values_engine`'s)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(
        self,
        type: str,
        data: Any,
        key: str | None = None,
        description: str | None = None,
        flow_run_id: str | None = None,
        task_run_id: str | None = None,
        artifact_id: str | None = None,
    ) -> str:
        """Store an artifact (committed when this returns); its id."""
        if type not in ARTIFACT_TYPES:
            raise ValueError(f"An artifact's type is one of {', '.join(ARTIFACT_TYPES)}; got {type!r}.")
        now = _later_than_the_last()
        new_id = artifact_id or uuid.uuid4().hex
        row = {
            "id": new_id,
            "key": key,
            "type": type,
            "description": _text(description),
            "data": json.dumps(_redacted(type, data)),
            "flow_run_id": flow_run_id,
            "task_run_id": task_run_id,
            "created": now,
            "updated": now,
        }
        write(self.engine, lambda conn: conn.execute(sa.insert(artifacts).values(**row)), changes=True)
        return new_id

    def update(self, artifact_id: str, data: Any, description: str | None = None) -> bool:
        """Replace an artifact's data (and its description, if given); False if there is no such artifact."""
        values: dict[str, Any] = {"updated": time.time()}

        def work(conn: sa.Connection) -> bool:
            found = conn.execute(sa.select(artifacts.c.type).where(artifacts.c.id == artifact_id)).first()
            if found is None:
                return False
            values["data"] = json.dumps(_redacted(found[0], data))
            if description is not None:
                values["description"] = _text(description)
            conn.execute(sa.update(artifacts).where(artifacts.c.id == artifact_id).values(**values))
            return True

        return write(self.engine, work, changes=True)

    def get(self, artifact_id: str) -> StoredArtifact | None:
        row = read(
            self.engine, lambda conn: conn.execute(sa.select(artifacts).where(artifacts.c.id == artifact_id)).first()
        )
        return None if row is None else _artifact(row._mapping)

    def latest(self, key: str) -> StoredArtifact | None:
        """The newest artifact with this key."""
        versions = self.versions(key, limit=1)
        return versions[0] if versions else None

    def versions(self, key: str, limit: int | None = None) -> list[StoredArtifact]:
        """The artifacts with this key, newest first."""
        query = sa.select(artifacts).where(artifacts.c.key == key).order_by(artifacts.c.created.desc(), artifacts.c.id)
        if limit is not None:
            query = query.limit(limit)
        return [_artifact(r._mapping) for r in read(self.engine, lambda conn: conn.execute(query).all())]

    def for_flow_run(self, flow_run_id: str) -> list[StoredArtifact]:
        """A flow run's artifacts (its task runs' included), oldest first."""
        query = (
            sa.select(artifacts)
            .where(artifacts.c.flow_run_id == flow_run_id)
            .order_by(artifacts.c.created, artifacts.c.id)
        )
        return [_artifact(r._mapping) for r in read(self.engine, lambda conn: conn.execute(query).all())]

    def for_task_run(self, task_run_id: str) -> list[StoredArtifact]:
        query = (
            sa.select(artifacts)
            .where(artifacts.c.task_run_id == task_run_id)
            .order_by(artifacts.c.created, artifacts.c.id)
        )
        return [_artifact(r._mapping) for r in read(self.engine, lambda conn: conn.execute(query).all())]


_last_created = 0.0
_clock_lock = threading.Lock()


def _later_than_the_last() -> float:
    """Now, but after every artifact this process made before: a key's versions made in a row stay
    in order even where the clock is coarse or steps back."""
    global _last_created
    with _clock_lock:
        _last_created = max(time.time(), _last_created + 1e-6)
        return _last_created


def run_artifacts(store: Store, flow_run_id: str) -> list[StoredArtifact]:
    """What ``tether runs show`` and the dashboard's run page list: the artifacts of one flow run
    (give its full id, as `Store.flow_run` returns it), oldest first, secrets redacted."""
    return ArtifactTable(store.engine).for_flow_run(flow_run_id)


def _artifact(row: Any) -> StoredArtifact:
    data = None if row["data"] is None else _redacted(row["type"], json.loads(row["data"]))
    return StoredArtifact(
        id=row["id"],
        key=row["key"],
        type=row["type"],
        description=_text(row["description"]),
        data=data,
        flow_run_id=row["flow_run_id"],
        task_run_id=row["task_run_id"],
        created=row["created"],
        updated=row["updated"],
    )


def _text(text: str | None) -> str | None:
    return None if text is None else redact_text(text)


def _redacted(type: str, data: Any) -> Any:
    if type == "table" and isinstance(data, str):
        try:
            table = json.loads(data)
        except ValueError:
            return redact_text(data)
        return json.dumps(_redact_cells(table))
    return _redact_cells(data)


def _redact_cells(value: Any) -> Any:
    """``value`` with secrets hidden, every item kept (a table is not shortened, unlike parameters)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _hidden(v) if is_secret_name(str(k)) else _redact_cells(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_cells(v) for v in value]
    return value


def _hidden(value: Any) -> Any:
    """A secret-named cell (or column of a dict-of-columns table), hidden; empty cells stay empty."""
    if isinstance(value, list):
        return [None if v is None else REDACTED for v in value]
    return None if value is None else REDACTED
