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

import json
from typing import Any, Generic, TypeVar, Union

from pydantic import Field, SecretStr, field_validator
from pydantic import Secret as _PydanticSecret

from tether.blocks.core import Block

__all__ = ["Secret"]

_T = TypeVar("_T")


class Secret(Block, Generic[_T]):
    """A value that should be kept secret: saved encrypted, shown as ``**********``."""

    value: Union[SecretStr, _PydanticSecret[Any]] = Field(description="A value that should be kept secret.")  # noqa: UP007 - pydantic's union of secrets

    @field_validator("value", mode="before")
    @classmethod
    def _as_secret(cls, value: Any) -> Any:
        if isinstance(value, (SecretStr, _PydanticSecret)):
            return value
        return _PydanticSecret[type(value)](value)  # type: ignore[misc,operator]

    def get(self) -> Any:
        """The secret's value (a str holding JSON is returned parsed, as in Prefect)."""
        value = self.value.get_secret_value()
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value
