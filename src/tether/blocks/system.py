"""Prefect's system blocks (``prefect.blocks.system``): ``Secret``.

    from tether.blocks.system import Secret

    Secret(value="sk-1234567890").save("openai-key", overwrite=True)
    Secret.load("openai-key").get()          # "sk-1234567890"

A secret's value is a str or any JSON value (``Secret(value={"user": "u", "password": "p"})``);
``get()`` returns it as Prefect does (a str that holds JSON comes back parsed). The value
is kept as a pydantic secret, so its repr, a run's recorded parameters and the dashboard
show ``**********``; in the store it is encrypted with the key under ``$TETHER_HOME``
(`tether.blocks.core`). What the code does with ``get()``'s result is its own: a
value logged in the clear is logged in the clear, unless tether's redaction of log
lines recognises it (``password=...``, a URL's password).
"""

from __future__ import annotations

import json as _json
from typing import Any as _Any
from typing import Generic as _Generic
from typing import TypeVar as _TypeVar
from typing import Union as _Union

from pydantic import Field as _Field
from pydantic import Secret as _PydanticSecret
from pydantic import SecretStr as _SecretStr
from pydantic import field_validator as _field_validator

from tether.blocks.core import Block as _Block
from tether.store import remember_secret as _remember_secret

__all__ = ["Secret"]

_T = _TypeVar("_T")


class Secret(_Block, _Generic[_T]):
    """A value that should be kept secret: saved encrypted, shown as ``**********``."""

    value: _Union[_SecretStr, _PydanticSecret[_Any]] = _Field(description="A value that should be kept secret.")  # noqa: UP007 - pydantic's union of secrets

    @_field_validator("value", mode="before")
    @classmethod
    def _as_secret(cls, value: _Any) -> _Any:
        if isinstance(value, (_SecretStr, _PydanticSecret)):
            return value
        return _PydanticSecret[type(value)](value)  # type: ignore[misc,operator]

    def get(self) -> _Any:
        """The secret's value (a str holding JSON is returned parsed, as in Prefect); from
        now on it is hidden wherever it appears in this process's logs and records."""
        value = self.value.get_secret_value()
        _remember_secret(value)
        if isinstance(value, str):
            try:
                return _json.loads(value)
            except ValueError:
                return value
        return value
