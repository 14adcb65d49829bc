"""Tag limits that hold across processes: this process's agent for the store's slot locks.

`SlotBroker` takes slots for the `Limiter` when a tag's limit lives in the store.
A slot is a lock that the operating system or the database server drops when its
holder dies (the store's slot locks), never a lease: a holder that is paused
(SIGSTOP, a frozen container, a long C call holding the GIL) keeps its slots for
as long as it lives, so a limit is never overbooked.

A run that must wait is queued here, in order, holding no thread. Whenever a slot
may have come free the broker tries again for the head of the queue:

- a run of this process releases one: it is handed over at once, in the
  releasing thread, without letting go of the lock;
- another process releases one: it wakes us through a datagram on this machine's
  abstract socket namespace, or through PostgreSQL's NOTIFY from any machine
  (``TETHER_SLOT_WAKEUPS=store`` sends no datagrams, as if every process were on
  another machine);
- a holder dies, or a limit is raised: nobody can tell us, since the kernel or
  the server drops the lock silently. While runs of this process wait, the thread
  that listens for datagrams also tries again every ``TETHER_SLOT_RETRY_SECONDS``
  (1 s): a try is a few non-blocking lock attempts (a flock each, or one query),
  so this costs little, and only while someone waits. The alternative, a thread
  blocked in a lock wait per slot, would hold threads (and on PostgreSQL a
  connection each) for every waiting tag, and still need a wake-up for a raised
  limit.

The waiter row of a tag (`limit_waiters`) says how many runs of this process
wait and where to wake it; it is updated as they start and removed when the last
one stops waiting (granted, withdrawn), and at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from tether._runtime import Part, get_clock
from tether._settings import slot_retry_seconds, slot_wakeups
from tether.store import SlotTable, StoreError

log = logging.getLogger("tether")


class WakeChannel:
    """A datagram socket in Linux's abstract namespace: other processes send a tag to wake us.

    While ``broker`` has runs waiting, the listening thread also wakes every
    ``slot_retry_seconds()`` to try again (for slots whose holder died).
    """

    def __init__(self, broker: SlotBroker) -> None:
        self.address = f"\0tether-{os.getpid()}-{os.urandom(6).hex()}"
        self.name = "uds:" + self.address[1:]
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.address)
        self._broker = broker
        self._closing = False
        threading.Thread(target=self._listen, name="tether-slot-wakeups", daemon=True).start()

    def _listen(self) -> None:
        last_retry = time.monotonic()
        while True:
            if self._broker.has_waiters():
                # Counted from the last retry of every tag, so a stream of wake-ups for one tag
                # cannot hold off the retries of another.
                # (Never 0, which would make the socket non-blocking.)
                self._socket.settimeout(max(0.001, last_retry + slot_retry_seconds() - time.monotonic()))
            else:
                self._socket.settimeout(None)
            try:
                tag = self._socket.recv(1024).decode()
            except TimeoutError:
                tag = None
            except OSError:
                return  # the socket was closed
            if self._closing:
                self._socket.close()
                return
            try:
                if tag is None:
                    last_retry = time.monotonic()
                    self._broker.retry_all()
                elif tag:  # (an empty one is a nudge: look again at whether runs wait)
                    self._broker.retry(tag)
            except Exception:  # this thread must go on waking the others
                log.exception("Trying again for a concurrency slot failed")

    def close(self) -> None:
        """Stop listening: the thread closes the socket and ends once this wakes it."""
        self._closing = True
        self.nudge()

    def nudge(self) -> None:
        """Make the listening thread look again at whether runs wait (so it starts retrying)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            try:
                sender.sendto(b"", self.address)
            except OSError:
                pass

    @staticmethod
    def send(channel: str, tag: str) -> bool:
        """Wake the process listening on ``channel``; False if no process listens there any more."""
        if not channel.startswith("uds:") or slot_wakeups() == "store":
            return True
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            try:
                sender.sendto(tag.encode(), "\0" + channel[4:])
            except (ConnectionRefusedError, FileNotFoundError):
                return False
            except OSError:
                pass  # a full queue: that process has wake-ups to read already
        return True


class SlotBroker:
    def __init__(self, store: Any) -> None:
        self._store = store
        self._table: SlotTable | None = None
        self._making_table = threading.Lock()
        self._lock = threading.Lock()
        #: The store's limits (tag -> capacity) as last read; None: to be read when a run with a tag asks.
        self._capacities: dict[str, int] | None = None
        self._held: dict[tuple[str, int], tuple[int, Any]] = {}  # (key, id(owner)) -> (slot, request)
        self._waiting: dict[str, deque[Any]] = {}
        self._rows: dict[str, _WaiterRow] = {}
        self._retrying: dict[str, bool | str] = {}
        self._failing: set[str] = set()  # tags whose last try failed on the store
        self._channel: WakeChannel | None = None
        self.limiter: Any = None

    @property
    def table(self) -> SlotTable:
        """The store's slots and limits (the first use opens the store)."""
        table = self._table
        if table is None:
            with self._making_table:  # one table: it holds this process's slot locks
                table = self._table
                if table is None:
                    table = self._table = SlotTable(self._store.engine)
        return table

    # -- what the limiter asks ---------------------------------------------------------

    def refresh(self) -> None:
        """Read the limits again, when a run with a tag next asks (a flow's start: limits set
        since apply; a flow of runs without tags never reads them, nor waits for the store)."""
        self._capacities = None

    def _known(self) -> dict[str, int]:
        capacities = self._capacities
        if capacities is None:
            try:
                capacities = self.table.capacities()
            except Exception as exc:  # noqa: BLE001 - a store that cannot be read limits nothing
                log.warning("Could not read the concurrency limits from %s: %s", self._store, exc)
                capacities = {}
            self._capacities = capacities
        return capacities

    def manages(self, key: str) -> bool:
        return key.startswith("tag:") and key[4:] in self._known()

    def capacity(self, key: str) -> int | None:
        return self._known().get(key[4:]) if key.startswith("tag:") else None

    def acquire(self, key: str, request: Any) -> bool:
        """Take a slot for ``request`` now (True), or queue it and grant it later."""
        tag = key[4:]
        if self.table.unsupported:
            raise StoreError(f"Task run {_task(request)!r} needs a slot of tag {tag!r}, whose limit is in the run "
                             f"store, but {self.table.unsupported} Or remove the limit: tether limit rm {tag}")
        with self._lock:
            queue = self._waiting.get(tag)
            if queue:
                queue.append(request)  # first come, first served within this process
        if queue:
            self._update_waiting(tag)
            return False
        if self._try(key, request):
            return True
        with self._lock:
            self._waiting.setdefault(tag, deque()).append(request)
        self._update_waiting(tag)
        self.retry(tag)  # a slot may have come free before we were listed as a waiter
        return False

    def release(self, key: str, owner: Any) -> None:
        tag = key[4:]
        with self._lock:
            held = self._held.pop((key, id(owner)), None)
            if held is None:
                return
            queue = self._waiting.get(tag)
            successor = queue.popleft() if queue else None
            if successor is not None:
                self._held[(key, id(successor.owner))] = (held[0], successor)
        slot = held[0]
        if successor is not None:
            def hand_over(waiting: tuple[str, int] | None) -> bool:
                self.table.hand_over(tag, slot, _run_id(successor), _task(successor), get_clock().time(), waiting)
                return True

            try:
                self._update_waiting(tag, hand_over)
            except Exception as exc:  # noqa: BLE001 - the lock is still ours; only the rows are stale
                log.warning("Could not record the hand-over of a slot of tag %r in the store: %s", tag, exc)
            self._grant(successor, key)
            return
        try:
            waiters = self.table.release(tag, slot)
        except Exception as exc:  # noqa: BLE001 - the lock was let go; waiters will find it
            log.warning("Could not record the release of a slot of tag %r in the store: %s", tag, exc)
            waiters = []
        gone = [w for w in waiters if not WakeChannel.send(w.channel, tag)]
        if gone:
            try:
                self.table.live(gone)  # drops the rows of those that died
            except Exception as exc:  # noqa: BLE001 - readers drop them too
                log.warning("Could not drop the waiter rows of ended processes: %s", exc)
        # Also when nobody was queued: a retry under way may have tried just before this release.
        self.retry(tag)

    def withdraw(self, request: Any) -> None:
        changed = []
        with self._lock:
            for tag, queue in self._waiting.items():
                if request in queue:
                    queue.remove(request)
                    changed.append(tag)
        for tag in changed:
            self._update_waiting(tag)

    def has_waiters(self) -> bool:
        with self._lock:
            return any(self._waiting.values())

    # -- trying and waking ---------------------------------------------------------------

    def _try(self, key: str, request: Any) -> bool:
        """Take a slot for ``request`` if one is free (it is not in the queue meanwhile)."""
        tag = key[4:]
        taken: list[int] = []

        def take(capacity: int, waiting: tuple[str, int] | None) -> bool:
            slot = self.table.take(tag, capacity, _run_id(request), _task(request), get_clock().time(), waiting)
            if slot is not None:
                taken.append(slot)
            return slot is not None

        try:
            capacity = self.table.capacity(tag)
            if capacity is None:
                if self._capacities is not None:  # the limit was removed: the tag is free
                    self._capacities.pop(tag, None)
                return True
            done = self._update_waiting(tag, lambda waiting: take(capacity, waiting))
        except Exception as exc:  # noqa: BLE001 - the next retry tries again
            if tag not in self._failing:  # once, not at every retry while the store is down
                self._failing.add(tag)
                log.warning("Could not take a slot of tag %r in the store (trying again every %s s): %s",
                            tag, slot_retry_seconds(), exc)
            return False
        self._failing.discard(tag)
        if not done:
            return False
        with self._lock:
            self._held[(key, id(request.owner))] = (taken[0], request)
        return True

    def retry(self, tag: str) -> None:
        """Try again for the head of ``tag``'s queue until a try fails or the queue is empty."""
        with self._lock:
            if self._retrying.get(tag):
                self._retrying[tag] = "again"
                return
            self._retrying[tag] = True
        key = f"tag:{tag}"
        try:
            while True:
                with self._lock:
                    queue = self._waiting.get(tag)
                    # Taken out of the queue while we try, so a release cannot grant it too.
                    head = queue.popleft() if queue else None
                if head is None:
                    break
                if head.cancelled:
                    continue
                if self._try(key, head):
                    self._grant(head, key)
                    continue
                with self._lock:
                    self._waiting.setdefault(tag, deque()).appendleft(head)
                    if self._retrying.get(tag) == "again":
                        self._retrying[tag] = True
                        continue
                break
        finally:
            with self._lock:
                self._retrying[tag] = False

    def retry_all(self) -> None:
        with self._lock:
            tags = [tag for tag, queue in self._waiting.items() if queue]
        for tag in tags:
            self.retry(tag)

    def _listen_to_store(self, listening: threading.Event) -> None:
        """Releases on other machines arrive as PostgreSQL notices."""
        try:
            for tag in self.table.listen(listening.set):
                self.retry(tag)
        except Exception as exc:  # noqa: BLE001 - the periodic retry still finds free slots, later
            log.warning("Stopped listening for released slots in the store: %s", exc)
        finally:
            listening.set()

    def _grant(self, request: Any, key: str) -> None:
        with self.limiter._lock:
            withdrawn = request.cancelled
            if not withdrawn:
                request.taken.append(key)
        if withdrawn:  # while the slot was on its way: it goes on to the next
            self.release(key, request.owner)
            return
        request.advance(self.limiter)

    # -- this process's waiter rows ---------------------------------------------------------

    def _update_waiting(self, tag: str, write: Callable[[tuple[str, int] | None], bool] | None = None) -> bool:
        """Bring this process's waiter row of ``tag`` to the length of its queue.

        With ``write`` (a store write that takes an optional (channel, count) to set in the same
        transaction, and returns whether it wrote), the row is updated by it. Serialised per tag,
        and the count read inside, so the last update always writes the latest count.
        """
        with self._lock:
            row = self._rows.setdefault(tag, _WaiterRow())
        with row.lock:
            with self._lock:
                count = len(self._waiting.get(tag) or ())
            pending = (self._wake_channel().name, count) if count != row.written else None
            if pending is not None and count and not row.written:
                self._wake_channel().nudge()  # the listener starts retrying while we wait
            if write is not None:
                if not write(pending):
                    return False
            elif pending is not None:
                try:
                    self.table.set_waiting(tag, pending[0], count, get_clock().time())
                except Exception as exc:  # noqa: BLE001 - a lost wake-up only delays us to the next retry
                    log.warning("Could not list this process as waiting for tag %r: %s", tag, exc)
                    return True
            if pending is not None:
                row.written = count
            return True

    def _wake_channel(self) -> WakeChannel:
        if self._channel is not None:
            return self._channel
        listening = None
        with self._lock:
            if self._channel is None:
                self._channel = WakeChannel(self)
                atexit.register(self._unlist_all)
                if self.table.notifies:
                    listening = threading.Event()
                    threading.Thread(target=self._listen_to_store, args=(listening,),
                                     name="tether-slot-notices", daemon=True).start()
            channel = self._channel
        if listening is not None:
            # Before we first wait: a release that nobody here noticed would leave us to the retry.
            listening.wait(10)
        return channel

    def close(self) -> None:
        """This process waits for nothing through this broker any more: its waiter rows go,
        and its wake-up channel closes."""
        self._unlist_all()
        if self._channel is not None:
            self._channel.close()

    def _unlist_all(self) -> None:
        """At exit: this process waits for nothing any more."""
        for tag, row in list(self._rows.items()):
            if row.written:
                try:
                    self.table.set_waiting(tag, "", 0, 0.0)
                except Exception:  # noqa: BLE001 - readers drop the rows of dead processes anyway
                    return


class _WaiterRow:
    """What this process last wrote as its count of waiting runs for one tag (0: no row)."""

    __slots__ = ("lock", "written")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.written = 0


def _run_id(request: Any) -> str | None:
    record = getattr(request.owner, "record", None)
    return record.id if record is not None else None


def _task(request: Any) -> str | None:
    record = getattr(request.owner, "record", None)
    return record.name if record is not None else None


def _close_brokers(brokers: weakref.WeakKeyDictionary[Any, SlotBroker]) -> None:
    for broker in list(brokers.values()):
        broker.close()


#: One broker per store object (not per id(): a closed store's id may be reused by another),
#: the runtime's.
_brokers: Part[weakref.WeakKeyDictionary[Any, SlotBroker]] = Part(
    "slot brokers", lambda runtime: weakref.WeakKeyDictionary(), close=_close_brokers
)


def use_store(store: Any, limiter: Any) -> SlotBroker:
    """Let ``limiter`` take tag slots through ``store``; the limits are read again when next asked."""
    brokers = _brokers()
    broker = brokers.get(store)
    if broker is None:
        broker = brokers[store] = SlotBroker(store)
        broker.limiter = limiter
    limiter.backend = broker
    broker.refresh()
    return broker
