"""Secrets out, JSON in: what the store keeps of parameters, messages and errors.

`to_json` turns a run's parameters into JSON-able values, hiding secrets:
values of parameters named like a password, secret, token or key, values that
hold a secret (pydantic's ``SecretStr``: anything with ``get_secret_value``), and
passwords inside URLs. `redact_text` hides URL passwords in free text (log lines,
error messages). Values that are not JSON types are stored as a short repr; the
store never pickles anything.
"""

from __future__ import annotations

import math
import re
from typing import Any

REDACTED = "********"

_SECRET_NAME = re.compile(
    r"passw(or)?d|passphrase|secret|token|api[-_]?key|credential|private[-_]?key|^pwd$", re.IGNORECASE
)
# scheme://user:password@host -> the password part
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*:)(?P<password>[^@/\s]+)(?=@)")

MAX_TEXT = 4000
MAX_ITEMS = 100
MAX_DEPTH = 6
MAX_REPR = 200


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced."""
    if "://" not in text:
        return text
    return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)


def redact_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """A run's parameters as stored: JSON-able, secrets replaced by ``********``."""
    return {str(k): (REDACTED if is_secret_name(str(k)) else to_json(v)) for k, v in parameters.items()}


def to_json(value: Any, redact: bool = True, depth: int = 0) -> Any:
    """A JSON-able rendering of ``value``: containers kept (shortened), other objects as a repr."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        text = redact_text(value) if redact else value
        return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "...(truncated)"
    if redact and callable(getattr(value, "get_secret_value", None)):
        return REDACTED
    if depth >= MAX_DEPTH:
        return _short_repr(value, redact)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i == MAX_ITEMS:
                out["..."] = f"{len(value) - MAX_ITEMS} more"
                break
            key = str(k)
            out[key] = REDACTED if redact and is_secret_name(key) else to_json(v, redact, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value) if not isinstance(value, (set, frozenset)) else sorted(value, key=repr)
        rendered = [to_json(v, redact, depth + 1) for v in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            rendered.append(f"... {len(items) - MAX_ITEMS} more")
        return rendered
    return _short_repr(value, redact)


def _short_repr(value: Any, redact: bool) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not stop recording
        text = f"<{type(value).__name__}>"
    if redact:
        text = redact_text(text)
    return text if len(text) <= MAX_REPR else text[:MAX_REPR] + "...>"
