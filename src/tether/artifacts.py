"""Prefect 3's artifacts (``prefect.artifacts``): what a run publishes, kept in the run store.

    from tether.artifacts import create_markdown_artifact, create_table_artifact, create_link_artifact

    @flow
    def report():
        create_markdown_artifact("# Sales\\n\\nUp 3 %", key="sales-report", description="Weekly")
        create_table_artifact([{"region": "EU", "sales": 3}], key="sales-table")
        create_link_artifact("https://example.com/dash", link_text="Dashboard")

Each call stores the artifact at once, linked to the flow run and task run it is made in
(from a task on a process pool too: the worker writes it to the flow's store), and
returns its id as a `uuid.UUID`. Artifacts with the same key are that key's versions:
``Artifact.get(key)`` reads the newest. Progress artifacts (``create_progress_artifact``,
``update_progress_artifact``) and image artifacts work as in Prefect; every function has an
``a``-prefixed async form, and in async code the plain one returns an awaitable, as in
Prefect. Keys are lowercase letters, numbers and dashes, as in Prefect.

The CLI and the dashboard read a run's artifacts with ``tether.store.run_artifacts``. With
the run store switched off (``TETHER_STORE=off``) or unreachable, the run is not recorded
and neither are its artifacts: the first one says so in a warning, and the flow goes on.
"""

from __future__ import annotations

import json as _json
import logging as _logging
import math as _math
import re as _re
import uuid as _uuid
from typing import Any as _Any

from tether._async_dispatch import dispatch as _dispatch
from tether._async_dispatch import in_thread as _in_thread
from tether._async_dispatch import wants_sync as _wants_sync
from tether._context import current_run as _current_run
from tether.store import ArtifactTable as _ArtifactTable
from tether.store import StoredArtifact as _StoredArtifact
from tether.store import StoreError as _StoreError
from tether.store import values_engine as _values_engine

__all__ = [
    "Artifact",
    "acreate_image_artifact",
    "acreate_link_artifact",
    "acreate_markdown_artifact",
    "acreate_progress_artifact",
    "acreate_table_artifact",
    "aupdate_progress_artifact",
    "create_image_artifact",
    "create_link_artifact",
    "create_markdown_artifact",
    "create_progress_artifact",
    "create_table_artifact",
    "update_progress_artifact",
]

_log = _logging.getLogger("tether.artifacts")
_KEY = _re.compile(r"[a-z0-9-]*")
_warned: set[str] = set()


class Artifact:
    """Reading artifacts back: ``Artifact.get(key)`` is the newest artifact with that key, or None."""

    @classmethod
    async def aget(cls, key: str | None = None) -> _StoredArtifact | None:
        return await _in_thread(cls.get, key, _sync=True)

    @classmethod
    def get(cls, key: str | None = None, _sync: bool | None = None) -> _Any:
        """The newest artifact with ``key`` (a `tether.store.StoredArtifact`: ``.data``,
        ``.description``, ``.type``, ``.flow_run_id``...), or None if there is none."""
        if not _wants_sync(_sync):
            return cls.aget(key)
        if key is None:
            raise ValueError('Artifact.get needs the artifact\'s key, e.g. Artifact.get("sales-report").')
        _, engine = _values_engine(f"read artifact {key!r}")
        return _ArtifactTable(engine).latest(key)


# -- creating ---------------------------------------------------------------------------------


def _create(kind: str, data: _Any, key: str | None, description: str | None) -> _uuid.UUID:
    _check_key(key)
    if description is not None and not isinstance(description, str):
        raise TypeError(f"Artifact {key or kind!r}: description= takes a str; got {type(description).__name__}.")
    flow_run_id, task_run_id = _run_ids()
    artifact_id = _uuid.uuid4()
    what = f"create {kind} artifact" + (f" {key!r}" if key else "")
    try:
        _, engine = _values_engine(what)
        _ArtifactTable(engine).create(kind, data, key, description, flow_run_id, task_run_id, artifact_id.hex)
    except _StoreError as exc:
        _not_kept(what, exc)
    return artifact_id


def _run_ids() -> tuple[str | None, str | None]:
    """The flow run and task run the calling code is in (a remote worker's stand-ins included)."""
    ctx = _current_run.get()
    if ctx is None:
        return None, None
    task_run = ctx.task_run
    task_run_id = None if task_run is None else task_run.record.id
    flow_run = getattr(ctx, "flow_run", None)
    flow_run_id = None if flow_run is None else flow_run.record.id
    if task_run is not None:  # a task run outside any flow has no flow run of its own
        flow_run_id = getattr(task_run.record, "flow_run_id", flow_run_id)
    return flow_run_id, task_run_id


def _not_kept(what: str, exc: BaseException) -> None:
    reason = str(exc)
    if reason in _warned:
        return
    _warned.add(reason)
    _log.warning(
        "tether: the artifact was not kept (%s) and the flow goes on; later artifacts that fail the same way are not kept either.",
        reason,
    )


def _check_key(key: _Any) -> None:
    if key is None:
        return
    if not isinstance(key, str):
        raise TypeError(f"An artifact's key= is a str; got {type(key).__name__} {key!r}.")
    if not _KEY.fullmatch(key):
        hint = _re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-") or "my-artifact"
        raise ValueError(
            f"Artifact key {key!r} is not allowed: Artifact key must only contain lowercase letters, numbers, "
            f"and dashes (as in Prefect). Use, for example, key={hint!r}."
        )


def _table_json(table: _Any, key: str | None) -> str:
    """A table as Prefect sends it: JSON text, NaN as null."""
    shape_ok = isinstance(table, dict) or (
        isinstance(table, (list, tuple)) and all(isinstance(r, (dict, list, tuple)) for r in table)
    )
    if not shape_ok:
        kind = f"{type(table).__module__}.{type(table).__qualname__}"
        raise TypeError(
            f"create_table_artifact{'(key=' + repr(key) + ')' if key else ''}: a table is a dict of columns "
            f'({{"name": [...], ...}}), a list of row dicts or a list of row lists; got a {kind}. For a pandas '
            'DataFrame pass df.to_dict(orient="records").'
        )
    return _json.dumps(_no_nan(table), default=str)


def _no_nan(value: _Any) -> _Any:
    if isinstance(value, float) and _math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def _progress(value: _Any, key: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or _math.isnan(value):
        raise TypeError(f"Progress artifact {key or ''!r}: progress is a number from 0 to 100; got {value!r}.")
    if not 0.0 <= value <= 100.0:
        _log.warning("ProgressArtifact received an invalid value, Progress: %s%%", value)
        value = max(0.0, min(float(value), 100.0))
        _log.warning("Interpreting as %s%% progress", value)
    return float(value)


async def acreate_markdown_artifact(
    markdown: str, key: str | None = None, description: str | None = None
) -> _uuid.UUID:
    return await _in_thread(create_markdown_artifact, markdown, key, description, _sync=True)


@_dispatch(acreate_markdown_artifact)
def create_markdown_artifact(markdown: str, key: str | None = None, description: str | None = None) -> _uuid.UUID:
    """Publish ``markdown`` (a str) as an artifact of the current run; its id."""
    if not isinstance(markdown, str):
        raise TypeError(f"create_markdown_artifact takes the markdown as a str; got {type(markdown).__name__}.")
    return _create("markdown", markdown, key, description)


async def acreate_table_artifact(table: _Any, key: str | None = None, description: str | None = None) -> _uuid.UUID:
    return await _in_thread(create_table_artifact, table, key, description, _sync=True)


@_dispatch(acreate_table_artifact)
def create_table_artifact(table: _Any, key: str | None = None, description: str | None = None) -> _uuid.UUID:
    """Publish a table (a dict of columns, a list of row dicts or of row lists); its id."""
    return _create("table", _table_json(table, key), key, description)


async def acreate_link_artifact(
    link: str, link_text: str | None = None, key: str | None = None, description: str | None = None
) -> _uuid.UUID:
    return await _in_thread(create_link_artifact, link, link_text, key, description, _sync=True)


@_dispatch(acreate_link_artifact)
def create_link_artifact(
    link: str, link_text: str | None = None, key: str | None = None, description: str | None = None
) -> _uuid.UUID:
    """Publish a link, kept as markdown (``[link_text](link)``) as Prefect does; its id."""
    if not isinstance(link, str):
        raise TypeError(f"create_link_artifact takes the link as a str; got {type(link).__name__}.")
    return _create("link", f"[{link_text or link}]({link})", key, description)


async def acreate_progress_artifact(
    progress: float, key: str | None = None, description: str | None = None
) -> _uuid.UUID:
    return await _in_thread(create_progress_artifact, progress, key, description, _sync=True)


@_dispatch(acreate_progress_artifact)
def create_progress_artifact(progress: float, key: str | None = None, description: str | None = None) -> _uuid.UUID:
    """Publish a progress (a percentage from 0 to 100); its id, for `update_progress_artifact`."""
    return _create("progress", _progress(progress, key), key, description)


async def aupdate_progress_artifact(
    artifact_id: _uuid.UUID | str, progress: float, description: str | None = None
) -> _uuid.UUID:
    return await _in_thread(update_progress_artifact, artifact_id, progress, description, _sync=True)


@_dispatch(aupdate_progress_artifact)
def update_progress_artifact(
    artifact_id: _uuid.UUID | str, progress: float, description: str | None = None
) -> _uuid.UUID:
    """Set a progress artifact's progress (and description, if given); ``artifact_id`` as returned."""
    try:
        wanted = artifact_id if isinstance(artifact_id, _uuid.UUID) else _uuid.UUID(str(artifact_id))
    except ValueError:
        raise ValueError(
            f"update_progress_artifact: {artifact_id!r} is not an artifact id; pass what create_progress_artifact returned."
        ) from None
    value = _progress(progress, None)
    what = f"update progress artifact {wanted}"
    try:
        _, engine = _values_engine(what)
        table = _ArtifactTable(engine)
        found = table.get(wanted.hex)
    except _StoreError as exc:
        _not_kept(what, exc)
        return wanted
    if found is None or found.type != "progress":
        problem = "no artifact" if found is None else f"a {found.type} artifact, not a progress one,"
        raise ValueError(
            f"update_progress_artifact: there is {problem} with id {wanted} in the run store. Pass the id "
            "create_progress_artifact returned (in the same run store)."
        )
    table.update(wanted.hex, value, description)
    return wanted


async def acreate_image_artifact(image_url: str, key: str | None = None, description: str | None = None) -> _uuid.UUID:
    return await _in_thread(create_image_artifact, image_url, key, description, _sync=True)


@_dispatch(acreate_image_artifact)
def create_image_artifact(image_url: str, key: str | None = None, description: str | None = None) -> _uuid.UUID:
    """Publish an image by its URL; its id."""
    if not isinstance(image_url, str):
        raise TypeError(f"create_image_artifact takes the image's URL as a str; got {type(image_url).__name__}.")
    return _create("image", image_url, key, description)
