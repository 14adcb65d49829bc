"""Engine events to plain records: the only recording work done in the flow's process.

An event holds live objects (a run's return value, its exception, a resource
handle); a record is a tuple of plain data (strings, numbers, a dict of them) that
is marshalled into this process's spool (`_spool`) and planned into rows by whoever
writes it: this process, the writer process (`_writer_process_main`), or a later
store open. Encoding takes what only this process can take: parameters that are not
plain values as JSON (secrets redacted), a failure's traceback as it was when the
run failed, the file a reaper was defined in; and, once this process loaded a secret,
its value out of messages, errors and parameters (`_redact.remember_secret`: the
process that writes the rows does not know it). All the rest (turning plain parameters
into JSON, folding into rows, redacting by the rules, writing) happens after.

The store's recorder encodes each event as it is recorded, on the engine's thread,
so the event object dies at once, and queues the record's items flat (`_recorder`).

The four records' layouts (`RUN`, `STATE`, `LOG`, `RESOURCE`; and `RUN_1`, the old `RUN`, which
old spools hold) are declared here, once, with a name for each item; `RECORD_LENGTHS` and the
planner's indices (`_plan`) are derived from them. This module does not decide what a record becomes in the store.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from tether import _known_secrets as _known
from tether._core import FINAL_TYPES, LogEmitted, ResourceEvent, RunCreated, State, StateChanged, StateType
from tether._known_secrets import REDACTED, redact_known
from tether.store._redact import MAX_TEXT, is_secret_name, redact_parameters, to_json

Record = tuple[Any, ...]

#: Parameter values that travel as they are (marshal takes them, and they cannot change).
_PLAIN = frozenset({int, float, str, bool, type(None)})


class Layout:
    """One kind of record: the names of its items, in order; the first item is the kind."""

    def __init__(self, kind: str, *names: str) -> None:
        self.kind = kind
        self.names = ("record", *names)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"{kind!r} records name an item twice: {self.names}")

    def __len__(self) -> int:
        return len(self.names)

    def at(self, name: str) -> int:
        """Where the item ``name`` is in a record of this kind (a `ValueError` names a mistyped one)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"{self.kind!r} records have no item {name!r}; they have {', '.join(self.names)}") from None

    def named(self, record: Record) -> dict[str, Any]:
        """The record's items by name (for tests and messages; the planner reads by index)."""
        if len(record) != len(self.names) or record[0] != self.kind:
            raise ValueError(f"not a {self.kind!r} record of {len(self.names)} items: {record!r}")
        return dict(zip(self.names, record))


#: A run was created. parameters: JSON, or a dict of plain values to turn into JSON later (`parameters_json`);
#: name: the flow's or task's; run_name: the run's own (a ``task_run_name`` template's), None when it is ``name``.
RUN = Layout(
    "run2", "run_id", "kind", "name", "flow_run_id", "parent_id", "parameters", "tags", "timestamp", "run_name"
)
#: The first layout of a created run, without run_name: spools written before it replay as such records
#: (the planner reads them as `RUN` records whose run_name is None). Records are positional, and a spool
#: does not say which version wrote it, so a layout that changes takes a new kind and keeps the old one.
RUN_1 = Layout("run", "run_id", "kind", "name", "flow_run_id", "parent_id", "parameters", "tags", "timestamp")
#: A run changed state; error: the traceback (or message) of a failure.
STATE = Layout(
    "state", "run_id", "kind", "flow_run_id", "type", "name", "message", "timestamp", "run_count", "error"
)
#: A log line of a run.
LOG = Layout("log", "run_id", "flow_run_id", "level", "message", "timestamp")
#: A step of a resource copy's life (see `_core.ResourceEvent`).
RESOURCE = Layout(
    "resource", "step", "scope_id", "name", "flow_run_id", "timestamp", "task_run_id", "error", "outcome",
    "host", "pid", "handle", "reaper", "reaper_file", "seconds",
)  # fmt: skip
LAYOUTS = {layout.kind: layout for layout in (RUN, RUN_1, STATE, LOG, RESOURCE)}

#: How many items a record of each kind has, its kind included. The recorder queues records
#: flat, item after item (see `_recorder`), and `split_records` cuts them apart again.
RECORD_LENGTHS = {kind: len(layout) for kind, layout in LAYOUTS.items()}

_FAILURES = frozenset(t.value for t in (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED))


class Encoder:
    """Turns events into records; remembers which parameter names are secret."""

    def __init__(self, host: str, pid: int) -> None:
        self.host = host
        self.pid = pid
        #: Flow runs begun and not ended, and flow runs in records not yet confirmed written (id -> name):
        #: what a failing store would not record.
        self.open_flows: dict[str, str] = {}
        self.unconfirmed_flows: dict[str, str] = {}

    def encode(self, events: Iterable[Any]) -> list[Record]:
        """The records of ``events``."""
        return [self.encode_one(event) for event in events]

    def encode_one(self, event: Any, tb: TracebackType | None = None) -> Record:
        """The record of one event. A failure's traceback is taken as it is now, or ``tb`` if given
        (an exception's traceback grows as it propagates: the recorder encodes at once)."""
        kind = type(event)
        if kind is StateChanged:
            state = event.new
            value = state.type._value_  # a plain str (Enum.value is a property: slower)
            error = error_text(state, tb) if value in _FAILURES else None
            message = state.message
            if _known.known_secrets is not None:
                message = redact_known(message) if message else message
                error = redact_known(error) if error else error
            if event.kind == "flow":
                self.unconfirmed_flows[event.run_id] = event.name
                if state.type in FINAL_TYPES:
                    self.open_flows.pop(event.run_id, None)
            # Plain tuples in the layouts' order, not NamedTuples: marshal takes only plain ones,
            # and making one costs several times as much on the engine's thread.
            return ("state", event.run_id, event.kind, event.flow_run_id, value, state.name,
                    message, state.time, event.run_count, error)  # fmt: skip
        if kind is RunCreated:
            if event.kind == "flow":
                self.open_flows[event.run_id] = self.unconfirmed_flows[event.run_id] = event.name
            tags = json.dumps(sorted(event.tags)) if event.tags else "[]"
            name = event.name
            run_name = event.run_name
            return ("run2", event.run_id, event.kind, name, event.flow_run_id, event.parent_id,
                    self.parameters(event.parameters), tags, event.timestamp,
                    None if run_name == name else run_name)  # fmt: skip
        if kind is LogEmitted:
            message = event.message if type(event.message) is str else str(event.message)
            if _known.known_secrets is not None:
                message = redact_known(message)
            return ("log", event.run_id, event.flow_run_id, event.level, message, event.timestamp)
        if kind is ResourceEvent:
            return self._resource(event)
        raise TypeError(f"not an engine event: {event!r}")

    def parameters(self, parameters: dict[str, Any]) -> dict[str, Any] | str:
        """Parameters as they travel: the run's own dict when it holds only plain values
        (numbers, short strings, None), for the writer to turn into JSON (`parameters_json`);
        else JSON now, while the values are as they were passed (and while this process
        knows the secrets it loaded)."""
        if _known.known_secrets is not None:
            return parameters_json(parameters)
        for value in parameters.values():
            kind = type(value)
            if kind not in _PLAIN or (kind is str and len(value) > MAX_TEXT):
                return parameters_json(parameters)
        return parameters

    def _resource(self, event: ResourceEvent) -> Record:
        seconds = event.details.get("seconds") if event.details else None
        handle = None if event.handle is None else json.dumps(to_json(event.handle, redact=False))
        return (
            "resource", event.step, event.scope_id, event.name, event.flow_run_id, event.timestamp,
            event.task_run_id, redact_known(event.error) if event.error else event.error, event.outcome,
            event.worker or self.host,
            event.pid if event.pid is not None else self.pid, handle, event.reaper, reaper_file(event.reaper),
            float(seconds) if isinstance(seconds, (int, float)) else None,
        )  # fmt: skip


#: JSON for a str, quoted and escaped: the C function `json.dumps` uses itself.
_QUOTED: Any = getattr(json.encoder, "c_encode_basestring_ascii", None) or json.encoder.encode_basestring_ascii
_QUOTED_REDACTED = _QUOTED(REDACTED)


def parameters_json(parameters: dict[str, Any] | str) -> str:
    """A run's parameters as stored: JSON, secrets redacted.

    A dict of plain values (the common case: numbers, short strings) is written here
    item by item, as ``json.dumps(redact_parameters(parameters))`` would write it, in
    a fifth of the time; this runs once per task run, where the rows are written.
    """
    if isinstance(parameters, str):
        return parameters
    if not parameters:
        return "{}"
    parts = []
    for key, value in parameters.items():
        kind = type(value)
        if type(key) is not str or kind not in _PLAIN:
            return json.dumps(redact_parameters(parameters))
        if is_secret_name(key):
            text = _QUOTED_REDACTED
        elif kind is int:
            text = int.__repr__(value)
        elif kind is str:
            text = _QUOTED(to_json(value))  # redacted and clipped
        elif kind is bool:
            text = "true" if value else "false"
        elif kind is float:
            text = float.__repr__(value) if math.isfinite(value) else _QUOTED(repr(value))
        else:
            text = "null"
        parts.append(_QUOTED(key) + ": " + text)
    return "{" + ", ".join(parts) + "}"


def split_records(flat: Sequence[Any]) -> list[Record]:
    """The records laid end to end in ``flat``, as tuples again."""
    records = []
    lengths = RECORD_LENGTHS
    start, end = 0, len(flat)
    while start < end:
        stop = start + lengths[flat[start]]
        records.append(tuple(flat[start:stop]))
        start = stop
    return records


def error_text(state: State, tb: TracebackType | None) -> str | None:
    """The traceback (or message) of a run that failed; ``tb`` is the error's traceback when it failed."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        return state.message
    try:
        return "".join(traceback.format_exception(type(error), error, tb if tb is not None else error.__traceback__))
    except Exception:  # noqa: BLE001 - a broken exception must not stop recording
        return f"{type(error).__name__}: {state.message or ''}"


def reaper_file(reaper: str | None) -> str | None:
    """The file of the reaper's module, so `tether reap` can load a reaper defined in a script."""
    if not reaper or ":" not in reaper:
        return None
    module = sys.modules.get(reaper.split(":", 1)[0])
    path = getattr(module, "__file__", None)
    return os.path.abspath(path) if path else None
