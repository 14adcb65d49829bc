"""``Block`` (Prefect's ``prefect.blocks.core.Block``): a pydantic model saved by name in the run store.

    class Warehouse(Block):
        host: str
        password: SecretStr

    Warehouse(host="db", password="hunter2").save("prod")          # ValueError if "prod" exists
    Warehouse(host="db2", password="...").save("prod", overwrite=True)
    Warehouse.load("prod").password.get_secret_value()
    Block.load("warehouse/prod")                                     # by "block-type-slug/name"

A block is stored under its type's slug (the class name lowercased, or ``_block_type_slug``)
and a name of lowercase letters, numbers and dashes, as in Prefect. Its fields travel as
JSON with their secrets (``SecretStr``, ``pydantic.Secret``) revealed, and the store
encrypts that JSON with the key under ``$TETHER_HOME`` before it keeps it: no row, log or
``tether`` command shows it, and a block's repr shows ``SecretStr('**********')``. In async
code ``save``, ``load`` and ``delete`` return awaitables (``asave``, ``aload``, ``adelete``).

There is no block server: no block types to register, no documents listed in a UI.
"""

from __future__ import annotations

import json as _json
import re as _re
import uuid as _uuid
from typing import Any as _Any
from typing import ClassVar as _ClassVar

from pydantic import BaseModel as _BaseModel
from pydantic import PrivateAttr as _PrivateAttr
from pydantic import Secret as _PydanticSecret
from pydantic import SecretBytes as _SecretBytes
from pydantic import SecretStr as _SecretStr
from pydantic_core import to_jsonable_python as _to_jsonable_python

from tether._async_dispatch import in_thread as _in_thread
from tether._async_dispatch import wants_sync as _wants_sync
from tether.store import BlockTable as _BlockTable
from tether.store import remember_secret_fields as _remember_secret_fields
from tether.store import secrets_key as _secrets_key
from tether.store import values_engine as _values_engine

__all__ = ["Block"]

_NAME = _re.compile(r"[a-z0-9-]+")
#: Every block class by its type's slug, for ``Block.load("slug/name")``.
_block_types: dict[str, type[Block]] = {}


class Block(_BaseModel):
    """Base of saved configuration: subclass it with pydantic fields."""

    _block_type_name: _ClassVar[str | None] = None
    _block_type_slug: _ClassVar[str | None] = None
    _block_document_id: _uuid.UUID | None = _PrivateAttr(default=None)
    _block_document_name: str | None = _PrivateAttr(default=None)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: _Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _block_types.setdefault(cls.get_block_type_slug(), cls)

    @classmethod
    def get_block_type_name(cls) -> str:
        return cls._block_type_name or cls.__name__

    @classmethod
    def get_block_type_slug(cls) -> str:
        """The type's name in the store, as Prefect slugs it: ``Secret`` -> ``secret``."""
        return _re.sub(r"[^a-z0-9]+", "-", (cls._block_type_slug or cls.get_block_type_name()).lower()).strip("-")

    # -- save -----------------------------------------------------------------------------

    async def asave(self, name: str | None = None, overwrite: bool = False) -> _uuid.UUID:
        """`save`, awaitable."""
        return await _in_thread(self.save, name, overwrite, _sync=True)

    def save(self, name: str | None = None, overwrite: bool = False, _sync: bool | None = None) -> _Any:
        """Save the block as ``name`` (encrypted); its id. ValueError (`tether.store.BlockExists`) if a
        block of this type is saved under ``name`` already and ``overwrite`` is False."""
        if not _wants_sync(_sync):
            return self.asave(name, overwrite)
        slug = self.get_block_type_slug()
        if name is None:
            if self._block_document_name is None:
                raise ValueError(
                    f"You're attempting to save a {type(self).__name__} block without a name: it was not loaded by "
                    "name, so save() cannot tell which one to write. Call save with a name, e.g. "
                    f'.save("my-{slug}").'
                )
            name = self._block_document_name
        _check_name(type(self), name)
        _, engine = _values_engine(f"save {slug} block {name!r}")
        block_id = _BlockTable(engine, _secrets_key()).save(slug, name, _to_json(self), overwrite=overwrite)
        self._block_document_id, self._block_document_name = _uuid.UUID(block_id), name
        return self._block_document_id

    # -- load -----------------------------------------------------------------------------

    @classmethod
    async def aload(cls, name: str, validate: bool = True) -> _Any:
        """`load`, awaitable."""
        return await _in_thread(cls.load, name, validate, _sync=True)

    @classmethod
    def load(cls, name: str, validate: bool = True, _sync: bool | None = None) -> _Any:
        """The block saved as ``name`` (``"slug/name"`` on `Block` itself); ValueError
        (`tether.store.BlockNotFound`) if there is none."""
        if not _wants_sync(_sync):
            return cls.aload(name, validate)
        block_cls, name = _class_and_name(cls, name)
        slug = block_cls.get_block_type_slug()
        _, engine = _values_engine(f"load {slug} block {name!r}")
        saved = _BlockTable(engine, _secrets_key()).load(slug, name)
        data = _json.loads(saved.data)
        block = block_cls.model_validate(data) if validate else block_cls.model_construct(**data)
        block._block_document_id, block._block_document_name = _uuid.UUID(saved.id), name
        _remember_secret_fields(block)  # its secrets are hidden in this process's logs and records from now on
        return block

    # -- delete ---------------------------------------------------------------------------

    @classmethod
    async def adelete(cls, name: str) -> None:
        """`delete`, awaitable."""
        await _in_thread(cls.delete, name, _sync=True)

    @classmethod
    def delete(cls, name: str, _sync: bool | None = None) -> _Any:
        """Remove the block saved as ``name``; ValueError (`tether.store.BlockNotFound`) if there is none."""
        if not _wants_sync(_sync):
            return cls.adelete(name)
        block_cls, name = _class_and_name(cls, name)
        slug = block_cls.get_block_type_slug()
        _, engine = _values_engine(f"delete {slug} block {name!r}")
        table = _BlockTable(engine, _secrets_key())
        if not table.delete(slug, name):
            table.load(slug, name)  # raises BlockNotFound, worded as load's
        return None


def _class_and_name(cls: type[Block], name: str) -> tuple[type[Block], str]:
    if not isinstance(name, str):
        raise TypeError(f"{cls.__name__}.load takes the block's name as a str; got {type(name).__name__} {name!r}.")
    if cls is not Block:
        return cls, name
    slug, sep, rest = name.partition("/")
    if not sep:
        raise ValueError(
            f'Block.load({name!r}) needs the block\'s type too, as "block-type-slug/name" (e.g. '
            f'"secret/{name}"), or call load on the block\'s class: Secret.load({name!r}).'
        )
    block_cls = _block_types.get(slug)
    if block_cls is None:
        known = ", ".join(sorted(_block_types)) or "none"
        raise ValueError(
            f"Block.load({name!r}): no block class with the slug {slug!r} is imported in this process (known: {known}). "
            "Import the module that defines it first, or call load on its class."
        )
    return block_cls, rest


def _check_name(cls: type[Block], name: _Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"A {cls.__name__} block's name is a str; got {type(name).__name__} {name!r}.")
    if not _NAME.fullmatch(name):
        hint = _re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or f"my-{cls.get_block_type_slug()}"
        raise ValueError(
            f"{cls.__name__} block name {name!r} is not allowed: Block document name must only contain lowercase "
            f"letters, numbers, and dashes (as in Prefect). Use, for example, {hint!r}."
        )


def _to_json(block: Block) -> str:
    """The block's fields as JSON, secrets revealed (the store encrypts it)."""
    return _json.dumps(_revealed(block.model_dump(mode="python")), default=_to_jsonable_python)


def _revealed(value: _Any) -> _Any:
    if isinstance(value, (_SecretStr, _SecretBytes, _PydanticSecret)):
        return _revealed(value.get_secret_value())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_revealed(v) for v in value]
    return value
