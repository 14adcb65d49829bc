"""The values of the secrets this process loaded, hidden wherever this process writes text.

A secret's value (`tether.blocks.system.Secret.get`, `Block.load`) matches no redaction
rule when it stands alone ("calling with tok-4f8a..."), so the secrets code remembers each
value it hands out here, and whoever writes text (the store's encoder, the console's log
formatter) replaces them with `redact_known`. It costs nothing in a process that loads
no secret: `known_secrets` stays None. The rules that find secrets by their shape
(``password=...``, a URL's password) are the store's `_redact`; this module knows no store.
"""

from __future__ import annotations

import json
import threading
from typing import Any

REDACTED = "********"
_MAX_DEPTH = 6  # how deep a secret's value (a dict, a list) is looked into
#: A secret value shorter than this is not looked for in text: it would hide ordinary words and numbers.
MIN_SECRET_CHARS = 4

#: The values of secrets loaded in this process (`remember_secret`), longest first, so a secret
#: that holds another is hidden whole; None until one is, so that redaction costs nothing more
#: in a process that loads none. Replaced as a whole tuple, never changed in place.
known_secrets: tuple[str, ...] | None = None
_known_lock = threading.Lock()


def remember_secret(value: Any) -> None:
    """Hide ``value`` wherever it appears in text from now on, in this process (`redact_text`).

    For a value a secret was loaded with: its str (and, for a str that holds JSON, each of its
    items), the items of a dict or list, numbers as written; a pydantic secret's own value.
    Values shorter than `MIN_SECRET_CHARS` are not looked for.
    """
    global known_secrets
    found: set[str] = set()
    _secret_leaves(value, found, 0)
    found = {text for text in found if len(text) >= MIN_SECRET_CHARS}
    if not found or (known_secrets is not None and found.issubset(known_secrets)):
        return
    with _known_lock:
        merged = found.union(known_secrets or ())
        known_secrets = tuple(sorted(merged, key=lambda text: (-len(text), text)))


def remember_secret_fields(obj: Any) -> None:
    """`remember_secret` the value of each attribute of ``obj`` that is a secret (has
    ``get_secret_value``, as pydantic's ``SecretStr`` and ``Secret`` have): a loaded block's."""
    for value in getattr(obj, "__dict__", {}).values():
        if callable(getattr(value, "get_secret_value", None)):
            remember_secret(value)


def _secret_leaves(value: Any, found: set[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    reveal = getattr(value, "get_secret_value", None)
    if callable(reveal):
        value = reveal()
    if isinstance(value, str):
        found.add(value)
        if value[:1] in ("{", "["):  # Secret.get() returns a str that holds JSON parsed
            try:
                _secret_leaves(json.loads(value), found, depth + 1)
            except ValueError:
                pass
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        found.add(repr(value))
    elif isinstance(value, dict):
        for item in value.values():
            _secret_leaves(item, found, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _secret_leaves(item, found, depth + 1)


def forget_secrets() -> None:
    """Look for no loaded secret's value any more (for tests)."""
    global known_secrets
    with _known_lock:
        known_secrets = None


def redact_known(text: str) -> str:
    """``text`` with the values of the secrets this process loaded replaced (only those)."""
    known = known_secrets
    if known is None:
        return text
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    return text
