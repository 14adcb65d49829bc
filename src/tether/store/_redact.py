"""Secrets out, JSON in: what the store keeps of parameters, messages and errors.

`to_json` turns a run's parameters into JSON-able values, hiding secrets:
values of parameters named like a password, secret, token or key (`is_secret_name`),
values that hold a secret (pydantic's ``SecretStr``: anything with
``get_secret_value``), and secrets inside text. `redact_text` hides secrets in free
text (log lines, error messages, DSNs): the password of a URL
(``postgresql://app:PASSWORD@db``), the value of a secret-named key in
``key=value`` and ``key: value`` pairs (a libpq DSN ``host=db password=PASSWORD``, an
ODBC string ``PWD=PASSWORD;``, a query string, a repr, JSON), and a bearer token; and,
whatever text holds them, the values of secrets this process loaded (`remember_secret`:
``Secret.get()``, a block's secret fields), which match no rule.
Values that are not JSON types are stored as a short repr; the store never pickles
anything. The store redacts when it writes and again when it shows, so rows written
before a rule existed are shown redacted too.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from tether import _known_secrets as _known
from tether._known_secrets import REDACTED, redact_known

#: The last word of a name that says its value is a secret (``db_pass``, ``dbPassword``, ``PWD``).
_SECRET_WORDS = frozenset(
    {
        "pass", "password", "passwd", "passphrase", "passcode", "pwd", "pw", "secret", "secrets", "token",
        "credential", "credentials", "creds", "authorization", "apikey", "privatekey", "secretkey", "accesskey",
    }
)  # fmt: skip
#: ... or the end of that word (``dbpassword``, ``githubtoken``); ``pass`` alone is not (``bypass``).
_SECRET_ENDINGS = ("password", "passwd", "passphrase", "secret", "token", "apikey")
#: ``key`` is a secret only after one of these (``api_key``, ``AWS_SECRET_KEY``), not as ``cache_key``.
_KEY_QUALIFIERS = frozenset(
    {
        "api", "private", "access", "secret", "signing", "encryption", "master", "auth", "ssh", "client",
        "app", "service", "account", "license", "gpg", "pgp", "aws", "hmac", "jwt", "session", "crypto",
        "sas", "subscription", "storage", "deploy",
    }
)  # fmt: skip
#: Words after the secret one that do not change what the value is (``password_b64``, ``token_value``).
_SAME_VALUE_WORDS = frozenset({"value", "val", "str", "string", "raw", "b64", "base64", "hex", "bytes", "plain"})
_WORD = re.compile(r"[A-Z]+[0-9]*(?![a-z])|[A-Z]?[a-z]+[0-9]*|[0-9]+")

# scheme://user:password@host -> the password part (which may itself hold an unencoded "@")
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s'\"]*:)(?P<password>[^/\s'\"]+)(?=@[^@/\s'\"]*)"
)
# key=value, key = 'value', "key": "value", key: value (not scheme://, whose ":" has no space after it)
_PAIR = re.compile(
    r"""(?P<key>(?P<q>["']?)(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)(?P=q))(?P<sep>[ \t]*=[ \t]*|[ \t]*:[ \t]+|:(?=["']))"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s;&'"(){}\[\]<>]+)"""
)
_BEARER = re.compile(r"\b(?P<head>(?:Bearer|Basic|Token)[ \t]+)(?P<value>[A-Za-z0-9._~+/\-]{8,}=*)")
# Text without any of these holds no secret the rules above can find: it is returned as is, quickly.
# (Searched for in the lowered text: a case-blind regex is several times slower.)
_HINT = re.compile(r"pass|pw|secret|token|key|cred|auth|bearer|basic|://")

MAX_TEXT = 4000
MAX_ITEMS = 100
MAX_DEPTH = 6
MAX_REPR = 200


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a parameter or key of this name holds a secret: its last word says so."""
    words = [w.lower() for w in _WORD.findall(name)]
    while len(words) > 1 and (words[-1].isdigit() or words[-1] in _SAME_VALUE_WORDS):
        words.pop()
    if not words:
        return False
    last = words[-1].rstrip("0123456789")  # db_pass2
    if last in _SECRET_WORDS or last.endswith(_SECRET_ENDINGS):
        return True
    if last in ("key", "keys"):
        return len(words) > 1 and words[-2].rstrip("0123456789") in _KEY_QUALIFIERS
    return last.endswith("key") and last[:-3] in _KEY_QUALIFIERS  # apikey, accesskey


def redact_text(text: str) -> str:
    """``text`` with every secret the rules find replaced (URL passwords, secret-named pairs, bearer
    tokens) and the values of the secrets this process loaded (`remember_secret`)."""
    if _known.known_secrets is not None:
        text = redact_known(text)
    if not _HINT.search(text.lower()):
        return text
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group("head") + REDACTED, text)
    return _PAIR.sub(_redact_pair, text)


def redact_value(value: Any) -> Any:
    """A JSON-able value (a handle, parameters as stored) with its secrets replaced."""
    return to_json(value, redact=True)


def _redact_pair(match: re.Match[str]) -> str:
    value = match.group("value")
    if not is_secret_name(match.group("name")) or REDACTED in value:
        return match.group(0)
    quote = value[0] if value[0] in "'\"" else ""
    return match.group("key") + match.group("sep") + quote + REDACTED + quote


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
