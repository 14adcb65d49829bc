"""Saved blocks (``Secret`` and user blocks) in the run store, encrypted with a key under ``$TETHER_HOME``.

A block's data is JSON that may hold secrets, so the store never keeps it in the clear:
`BlockTable` encrypts it with a `SecretsKey` before the row is written and decrypts it
only for `BlockTable.load`. The key is 32 random bytes in ``$TETHER_HOME/secrets.key``,
created on first use with mode 0600 (two processes creating it at once agree on one:
the file appears whole, by a hard link, or not at all) and refused when other users can
read it. Whoever can read the database but not the key file learns a block's type and
name, never its data; a row copied to another name does not decrypt (the name is bound
to the ciphertext).

The cipher uses only the standard library, so the store needs no compiled extension:
HMAC-SHA256 in counter mode as the keystream, then HMAC-SHA256 over the version, the
block's type and name, the nonce and the ciphertext (encrypt-then-MAC), with separate
keys derived from the file's key. A wrong key or a changed row fails the check and
raises `SecretKeyError`, which says which key file was used and what to do.

This module does not know what a block is; `tether.blocks` turns blocks into JSON.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from tether._errors import BlockExists, BlockNotFound, SecretKeyError
from tether.store._db import read, write
from tether.store._location import tether_home
from tether.store._schema import blocks

KEY_FILE = "secrets.key"
_VERSION = b"v1"
_NONCE = 16
_TAG = 32








class SecretsKey:
    """The key that encrypts saved blocks, read from (or created in) one file."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        #: Names the key in rows and messages without giving it away.
        self.key_id = hashlib.sha256(b"tether key id" + key).hexdigest()[:16]
        self._encrypting = hmac.new(key, b"tether secrets v1 encrypt", hashlib.sha256).digest()
        self._signing = hmac.new(key, b"tether secrets v1 sign", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"<SecretsKey {self.path} id {self.key_id}>"

    def encrypt(self, plaintext: bytes, bound_to: str) -> str:
        nonce = os.urandom(_NONCE)
        body = _xor(plaintext, self._keystream(nonce, len(plaintext)))
        tag = self._tag(bound_to, nonce, body)
        return _VERSION.decode() + "." + base64.urlsafe_b64encode(nonce + body + tag).decode("ascii")

    def decrypt(self, token: str, bound_to: str) -> bytes | None:
        """The plaintext, or None when this key did not make ``token`` for ``bound_to`` (or it was changed)."""
        version, _, packed = token.partition(".")
        try:
            raw = base64.urlsafe_b64decode(packed.encode("ascii"))
        except ValueError:
            return None
        if version.encode() != _VERSION or len(raw) < _NONCE + _TAG:
            return None
        nonce, body, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
        if not hmac.compare_digest(tag, self._tag(bound_to, nonce, body)):
            return None
        return _xor(body, self._keystream(nonce, len(body)))

    def _keystream(self, nonce: bytes, length: int) -> bytes:
        blocks_needed = (length + 31) // 32
        return b"".join(
            hmac.new(self._encrypting, nonce + i.to_bytes(8, "big"), hashlib.sha256).digest()
            for i in range(blocks_needed)
        )[:length]

    def _tag(self, bound_to: str, nonce: bytes, body: bytes) -> bytes:
        bound = bound_to.encode()
        message = _VERSION + len(bound).to_bytes(4, "big") + bound + nonce + body
        return hmac.new(self._signing, message, hashlib.sha256).digest()


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big") if data else b""


_keys: dict[Path, SecretsKey] = {}
_keys_lock = threading.Lock()


def secrets_key(home: Path | None = None) -> SecretsKey:
    """This machine's secrets key: ``$TETHER_HOME/secrets.key``, created on first use."""
    path = (home or tether_home()) / KEY_FILE
    found = _keys.get(path)
    if found is not None:
        return found
    with _keys_lock:
        if path not in _keys:
            _keys[path] = SecretsKey(path, _read_or_create(path))
        return _keys[path]


def _read_or_create(path: Path) -> bytes:
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        draft = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(draft, path)  # all at once, and never over a key another process made first
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    except OSError as exc:
        raise SecretKeyError(
            f"Cannot create the secrets key {path}: {exc.strerror or exc}. Make {path.parent} writable, "
            "or set TETHER_HOME to a directory you can write to."
        ) from None
    return _read(path)


def _read(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretKeyError(
            f"The secrets key {path} can be read by other users (mode {stat.filemode(mode)}), so tether will not "
            f"use it: whoever reads it can read every saved secret. Make it private with: chmod 600 {path}"
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise SecretKeyError(
            f"The secrets key {path} is not a tether key (64 hexadecimal digits). Restore the file it replaced, "
            f"or move it aside (mv {path} {path}.bad) and save the secrets again: tether then makes a new key."
        )
    return key


# -- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedBlock:
    """A saved block, decrypted: its JSON data as text."""

    id: str
    block_type: str
    name: str
    data: str
    created: float
    updated: float


class BlockTable:
    """The saved blocks of one store, encrypted with ``key``."""

    def __init__(self, engine: sa.Engine, key: SecretsKey) -> None:
        self.engine = engine
        self.key = key

    def save(self, block_type: str, name: str, data: str, overwrite: bool = False) -> str:
        """Save ``data`` (JSON text) as block ``name`` of ``block_type``; its id. `BlockExists` if it is
        saved already and ``overwrite`` is False."""
        token = self.key.encrypt(data.encode(), _bound(block_type, name))
        where = sa.and_(blocks.c.block_type == block_type, blocks.c.name == name)

        def work(conn: sa.Connection) -> str:
            now = time.time()
            row = conn.execute(sa.select(blocks.c.id).where(where)).first()
            if row is None:
                block_id = uuid.uuid4().hex
                conn.execute(
                    sa.insert(blocks).values(
                        block_type=block_type,
                        name=name,
                        id=block_id,
                        data=token,
                        key_id=self.key.key_id,
                        created=now,
                        updated=now,
                    )
                )
                return block_id
            if not overwrite:
                raise BlockExists(_exists_message(block_type, name))
            conn.execute(sa.update(blocks).where(where).values(data=token, key_id=self.key.key_id, updated=now))
            return str(row[0])

        try:
            return write(self.engine, work)
        except IntegrityError:
            if not overwrite:  # another process saved it between our read and our insert
                raise BlockExists(_exists_message(block_type, name)) from None
            return write(self.engine, work)

    def load(self, block_type: str, name: str) -> SavedBlock:
        """The block, decrypted; `BlockNotFound`, or `SecretKeyError` when this key did not save it."""
        query = sa.select(blocks).where(blocks.c.block_type == block_type, blocks.c.name == name)
        row = read(self.engine, lambda conn: conn.execute(query).first())
        if row is None:
            raise BlockNotFound(
                f"Unable to find block document named {name} for block type {block_type}: no {block_type} block "
                f"named {name!r} is saved in this run store. Save it first, e.g. "
                f"{_class_hint(block_type)}(value=...).save({name!r}), or check the name (tether block names are "
                "lowercase letters, numbers and dashes)."
            )
        r = row._mapping
        plain = self.key.decrypt(r["data"], _bound(block_type, name))
        if plain is None:
            if r["key_id"] != self.key.key_id:
                why = (
                    f"it was saved with another key (id {r['key_id']}) than {self.key.path} (id {self.key.key_id}): "
                    "by another machine or another TETHER_HOME. Copy that secrets.key here (mode 0600), or save "
                    "the block again from here with overwrite=True."
                )
            else:
                why = "its row in the store was changed since it was saved. Save the block again with overwrite=True."
            raise SecretKeyError(f"The {block_type} block {name!r} cannot be decrypted: {why}")
        return SavedBlock(r["id"], block_type, name, plain.decode(), r["created"], r["updated"])

    def delete(self, block_type: str, name: str) -> bool:
        """Remove the block; False if there was none."""
        return write(
            self.engine,
            lambda conn: (
                conn.execute(sa.delete(blocks).where(blocks.c.block_type == block_type, blocks.c.name == name)).rowcount
                == 1
            ),
        )

    def names(self, block_type: str | None = None) -> list[tuple[str, str]]:
        """(block type, name) of every saved block, sorted; never their data."""
        query = sa.select(blocks.c.block_type, blocks.c.name).order_by(blocks.c.block_type, blocks.c.name)
        if block_type is not None:
            query = query.where(blocks.c.block_type == block_type)
        return [(t, n) for t, n in read(self.engine, lambda conn: conn.execute(query).all())]


def _bound(block_type: str, name: str) -> str:
    return f"{block_type}/{name}"


def _class_hint(block_type: str) -> str:
    return "".join(part.capitalize() for part in block_type.split("-")) or "Block"


def _exists_message(block_type: str, name: str) -> str:
    return (
        f"You are attempting to save values with a name that is already in use for this block type: a "
        f"{block_type} block named {name!r} is saved already, and it was not changed. If you would like to "
        f"overwrite the values that are saved, then save with `overwrite=True` (.save({name!r}, overwrite=True))."
    )


def _forget_in_child() -> None:
    global _keys_lock
    _keys_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
