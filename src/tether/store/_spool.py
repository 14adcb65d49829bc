"""The spool: a process's records on their way to the store, in files that outlive the process.

The recorder's writer thread appends each batch of records it takes (`_encode`'s
records laid flat, marshalled) to this process's spool with plain ``os.write`` calls:
once written, the bytes are the kernel's, so a SIGKILL of the process loses none
of them (no fsync is needed for that; a power loss may). Whoever writes the rows
(`Drain`: the recorder's thread, or the writer process) reads the spool from where
it last committed, writes the rows, and then records in the file's header how far
it got. So a flow process that is killed leaves behind what was not written yet,
and the next store open on its host (or `tether reap`) replays it (`replay_orphans`)
once it sees the process gone and nobody writing its spool.

Files: ``$TETHER_HOME/spool/<host>-<pid>-<started>-<seq>.spool``, one segment after
another: a new segment is begun once one is `SEGMENT_BYTES` long, and a segment
read to its end, with a later one begun, is deleted. A segment begins with a header:
``MAGIC``, the committed offset (8 bytes, rewritten in place with ``os.pwrite``), the
length of what follows, then (the store's key, host, pid, started) marshalled; the
store's key is a hash of its URL, so a spool is replayed only into its own store and
no password is written to disk. Frames follow: a 4-byte length, a byte (``m``:
marshalled, ``p``: pickled), the items.

Who writes a spool's rows holds an exclusive ``flock`` on its lock file
(``<stem>.lock``); a replay takes it without waiting, and only when the process
that spooled is gone. Between committing rows and rewriting the header a killed
writer leaves one batch to be written again; task and flow rows and the ledger's are
written idempotently (a row inserted again takes what the insert carries, see `_plan`),
so only that batch's state changes and log lines could repeat.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import marshal
import os
import pickle
import re
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tether.store._encode import split_records
from tether.store._ledger import ProcessInfo, process_alive
from tether.store._location import tether_home

log = logging.getLogger("tether.store")

#: The first byte of a frame that holds marshalled records (the others are pickled).
_MARSHALLED = ord("m")

MAGIC = b"TSPOOL1\n"
_OFFSET = struct.Struct("!Q")
_LENGTH = struct.Struct("!I")
_OFFSET_AT = len(MAGIC)
#: A segment this long is followed by a new one (the old one is deleted once written).
SEGMENT_BYTES = 32 << 20
#: At most this many bytes of records are read (and planned) at once.
READ_BYTES = 1 << 20
_NAME = re.compile(r"^(?P<stem>.+-(?P<pid>\d+)-(?P<started>[^-]*))-(?P<seq>\d{6})\.spool$")

Position = tuple[int, int]  # segment, offset in it


def spool_dir() -> Path:
    return tether_home() / "spool"


def store_key(url: sa.URL | str) -> str:
    """A spool's store, named without its password."""
    text = url.render_as_string(hide_password=False) if isinstance(url, sa.URL) else str(url)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _segment_path(directory: Path, stem: str, seq: int) -> Path:
    return directory / f"{stem}-{seq:06d}.spool"


class Spool:
    """This process's end: appends records. Used by the recorder's writer thread only."""

    def __init__(self, key: str, process: ProcessInfo, directory: Path | None = None) -> None:
        self.directory = directory or spool_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        host = re.sub(r"[^A-Za-z0-9_.]", "_", process.host)
        self.stem = f"{host}-{process.pid}-{process.started or ''}"
        self.key = key
        self.process = process
        self.lock_path = self.directory / f"{self.stem}.lock"
        self._head = marshal.dumps((key, process.host, process.pid, process.started))
        self.seq = 0
        self.offset = 0
        self._fd = -1
        self._begin(0)

    @property
    def end(self) -> Position:
        """Where the next record goes: all before it is spooled."""
        return self.seq, self.offset

    def append(self, items: list[Any]) -> None:
        """Spool ``items`` (records laid flat); raises OSError if the disk refuses."""
        try:
            how, data = b"m", marshal.dumps(items)
        except ValueError:
            how, data = b"p", pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
        if self.offset >= SEGMENT_BYTES:
            self._begin(self.seq + 1)
        _write_all(self._fd, [_LENGTH.pack(len(data) + 1) + how, data])
        self.offset += _LENGTH.size + 1 + len(data)

    def abandon(self) -> None:
        """In a forked child: let go of the parent's file."""
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        """Delete the spool: every record in it is written."""
        self.close()
        for path in self.directory.glob(f"{glob_escape(self.stem)}-*.spool"):
            path.unlink(missing_ok=True)

    def _begin(self, seq: int) -> None:
        path = _segment_path(self.directory, self.stem, seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        header = MAGIC + _OFFSET.pack(0) + _LENGTH.pack(len(self._head)) + self._head
        start = len(header)
        header = MAGIC + _OFFSET.pack(start) + _LENGTH.pack(len(self._head)) + self._head
        _write_all(fd, [header])
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self.seq, self.offset = fd, seq, start


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


class Drain:
    """Reads a spool from where it was last committed and writes its rows.

    ``write(records, everything)`` writes the records' rows (a `RowWriter.send`); the
    drain commits what it read once that returned. Hold `lock` first (see `take_lock`).
    """

    def __init__(self, directory: Path, stem: str, write: Callable[[list[Any]], None]) -> None:
        self.directory = directory
        self.stem = stem
        self._write = write
        self._lock_fd = -1
        self.position: Position = (0, 0)
        self._fd = -1
        self._seq = -1
        self._finished: list[int] = []

    def take_lock(self, wait: bool = True) -> bool:
        """Become the spool's writer; then start from what its header says was committed."""
        fd = os.open(self.directory / f"{self.stem}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        seqs = self._segments()
        if not seqs:
            self.position = (0, 0)
            return True
        self._open(seqs[0])
        self.position = (seqs[0], self._committed())
        return True

    def release(self) -> None:
        """Stop being the writer (after `write_all`), so another may take over."""
        self._close_segment()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def abandon(self) -> None:
        """In a forked child: let go of the parent's files (closing our copy of the lock's file
        leaves the parent's lock held)."""
        self.release()

    def pending(self, end: Position | None = None) -> bool:
        """Whether records are spooled past what was written (up to ``end``, if known)."""
        if end is not None:
            return end > self.position
        seq, offset = self.position
        path = _segment_path(self.directory, self.stem, seq)
        try:
            size = path.stat().st_size
        except OSError:
            return False
        return size > offset or _segment_path(self.directory, self.stem, seq + 1).exists()

    def write_some(self, end: Position | None = None, limit: int = READ_BYTES) -> bool:
        """Write up to ``limit`` bytes of records (up to ``end``); True if more are pending."""
        before = self.position
        items, position = self._read(end, limit)
        if items:
            self._write(split_records(items))
        self._commit(position)
        return position != before and self.pending(end)  # no progress: the rest is a frame being written

    def write_all(self, end: Position | None = None) -> None:
        while self.write_some(end):
            pass

    def remove(self) -> None:
        """Everything is written and nobody will spool more: delete the files."""
        self._close_segment()
        for path in self.directory.glob(f"{glob_escape(self.stem)}-*.spool"):
            path.unlink(missing_ok=True)
        (self.directory / f"{self.stem}.lock").unlink(missing_ok=True)
        self.release()

    # -- reading -----------------------------------------------------------------------

    def _segments(self) -> list[int]:
        found = []
        for path in self.directory.glob(f"{glob_escape(self.stem)}-*.spool"):
            match = _NAME.match(path.name)
            if match and match["stem"] == self.stem:
                found.append(int(match["seq"]))
        return sorted(found)

    def _open(self, seq: int) -> None:
        self._close_segment()
        self._fd = os.open(_segment_path(self.directory, self.stem, seq), os.O_RDWR)
        self._seq = seq

    def _close_segment(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd, self._seq = -1, -1

    def _committed(self) -> int:
        head = os.pread(self._fd, len(MAGIC) + _OFFSET.size, 0)
        if head[: len(MAGIC)] != MAGIC:
            raise ValueError("not a tether spool file")
        (offset,) = _OFFSET.unpack_from(head, len(MAGIC))
        return int(offset)

    def _read(self, end: Position | None, limit: int) -> tuple[list[Any], Position]:
        """Whole frames from the position on, up to about ``limit`` bytes; and the position after them."""
        items: list[Any] = []
        seq, offset = self.position
        while limit > 0:
            if self._seq != seq:
                try:
                    self._open(seq)
                except FileNotFoundError:
                    break
                offset = max(offset, self._committed())
            # A later segment is begun only after the last append to this one: if it is
            # there (looked at before the size), this one's size is final.
            later = _segment_path(self.directory, self.stem, seq + 1).exists()
            size = os.fstat(self._fd).st_size
            upto = min(size, end[1]) if end is not None and end[0] == seq else size
            taken = self._frames(offset, upto, limit, items)
            offset += taken
            limit -= taken
            if later and offset >= size and (end is None or end[0] > seq):
                self._finished.append(seq)  # deleted once its rows are written
                seq, offset = seq + 1, 0
                continue
            break
        return items, (seq, offset)

    def _frames(self, offset: int, upto: int, limit: int, items: list[Any]) -> int:
        """Append the items of the whole frames between ``offset`` and ``upto``; the bytes taken
        (at least one frame's, whatever the limit)."""
        if upto <= offset:
            return 0
        data = os.pread(self._fd, min(upto - offset, max(limit, _LENGTH.size)), offset)
        at = 0
        while at + _LENGTH.size <= len(data):
            (length,) = _LENGTH.unpack_from(data, at)
            if at + _LENGTH.size + length > len(data):
                if at == 0 and offset + _LENGTH.size + length <= upto:  # one frame longer than the limit
                    data = os.pread(self._fd, _LENGTH.size + length, offset)
                    continue
                break
            frame = memoryview(data)[at + _LENGTH.size : at + _LENGTH.size + length]
            items.extend(marshal.loads(frame[1:]) if frame[0] == _MARSHALLED else pickle.loads(frame[1:]))
            at += _LENGTH.size + length
        return at

    def _commit(self, position: Position) -> None:
        """What was read up to ``position`` is written: say so in the header; delete finished segments."""
        self.position = position
        if self._seq == position[0] and position[1]:
            os.pwrite(self._fd, _OFFSET.pack(position[1]), _OFFSET_AT)
        for seq in self._finished:
            _segment_path(self.directory, self.stem, seq).unlink(missing_ok=True)
        self._finished.clear()


def _write_all(fd: int, parts: list[bytes | memoryview]) -> None:
    while parts:
        sent = os.writev(fd, parts)
        while parts and sent >= len(parts[0]):
            sent -= len(parts.pop(0))
        if sent:
            parts[0] = memoryview(parts[0])[sent:]


def read_header(path: Path) -> tuple[str, str, int, str | None] | None:
    """(store key, host, pid, started) of a spool segment; None if it is not one."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + _OFFSET.size + _LENGTH.size)
            if len(head) < len(MAGIC) + _OFFSET.size + _LENGTH.size or head[: len(MAGIC)] != MAGIC:
                return None
            (length,) = _LENGTH.unpack_from(head, len(MAGIC) + _OFFSET.size)
            key, host, pid, started = marshal.loads(f.read(length))
            return key, host, int(pid), started
    except (OSError, ValueError, EOFError, TypeError):
        return None


def orphan_stems(key: str, directory: Path | None = None) -> list[str]:
    """Spools of this store whose process on this host is gone."""
    directory = directory or spool_dir()
    if not directory.is_dir():
        return []
    here = socket.gethostname()
    stems: dict[str, tuple[int, str | None]] = {}
    for path in directory.glob("*.spool"):
        match = _NAME.match(path.name)
        if not match or match["stem"] in stems:
            continue
        header = read_header(path)
        if header is None or header[0] != key or header[1] != here:
            continue
        stems[match["stem"]] = (header[2], header[3])
    return [stem for stem, (pid, started) in stems.items() if not process_alive(pid, started)]


def replay_orphans(
    key: str, make_writer: Callable[[ProcessInfo], Callable[[list[Any]], None]], directory: Path | None = None
) -> int:
    """Write the rows of every spool of this store left by a process of this host that is gone,
    unless someone is writing it already; delete them. Returns how many spools were replayed."""
    directory = directory or spool_dir()
    replayed = 0
    for stem in orphan_stems(key, directory):
        segments = sorted(directory.glob(f"{glob_escape(stem)}-*.spool"))
        header = read_header(segments[0]) if segments else None
        if header is None:
            continue
        _, host, pid, started = header
        drain = Drain(directory, stem, make_writer(ProcessInfo(pid, host, started)))
        if not drain.take_lock(wait=False):
            continue  # its writer process still writes it
        try:
            drain.write_all()
            drain.remove()
            replayed += 1
        finally:
            drain.release()
    return replayed
