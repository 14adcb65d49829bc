"""Tag limits that hold across processes: this process's agent for the store's slot leases.

`SlotBroker` takes slots for the `Limiter` when a tag's limit lives in the store.
A run that must wait is queued here, in order, holding no thread. Whenever a slot
may have come free the broker tries again for the head of the queue: when a run
of this process releases one (it is handed over at once, in the releasing
thread), when another process releases one (it wakes us through a datagram on
this machine's abstract socket namespace, or through PostgreSQL's NOTIFY from
any machine), or when the earliest lease of a dead holder expires (a timer at
that moment). ``TETHER_SLOT_WAKEUPS=store`` sends no local datagrams, as if
every process were on another machine. Held leases are renewed by one thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import deque
from typing import Any

from tether._clock import get_clock
from tether._interrupt import watchdog
from tether.store._slots import SlotTable

log = logging.getLogger("tether")


def lease_seconds() -> float:
    return float(os.environ.get("TETHER_SLOT_LEASE_SECONDS", "30"))


class WakeChannel:
    """A datagram socket in Linux's abstract namespace: other processes send a tag to wake us."""

    def __init__(self, on_wake: Any) -> None:
        self.address = f"\0tether-{os.getpid()}-{os.urandom(6).hex()}"
        self.name = "uds:" + self.address[1:]
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.address)
        self._on_wake = on_wake
        threading.Thread(target=self._listen, name="tether-slot-wakeups", daemon=True).start()

    def _listen(self) -> None:
        while True:
            try:
                tag = self._socket.recv(1024).decode()
            except OSError:
                return
            self._on_wake(tag)

    @staticmethod
    def send(channel: str, tag: str) -> None:
        if not channel.startswith("uds:") or os.environ.get("TETHER_SLOT_WAKEUPS") == "store":
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            try:
                sender.sendto(tag.encode(), "\0" + channel[4:])
            except OSError:
                pass  # that process is gone; its waiter row will be ignored


class SlotBroker:
    def __init__(self, table: SlotTable) -> None:
        self.table = table
        self.lease = lease_seconds()
        self._lock = threading.Lock()
        self._capacities: dict[str, int] = {}
        self._held: dict[tuple[str, int], tuple[str, Any]] = {}  # (key, id(owner)) -> (slot id, request)
        self._waiting: dict[str, deque[Any]] = {}
        self._retrying: dict[str, bool] = {}
        self._channel: WakeChannel | None = None
        self._renewer: threading.Thread | None = None
        self.limiter: Any = None

    # -- what the limiter asks ---------------------------------------------------------

    def refresh(self) -> None:
        self._capacities = self.table.capacities()

    def manages(self, key: str) -> bool:
        return key.startswith("tag:") and key[4:] in self._capacities

    def capacity(self, key: str) -> int | None:
        return self._capacities.get(key[4:]) if key.startswith("tag:") else None

    def acquire(self, key: str, request: Any) -> bool:
        """Take a slot for ``request`` now (True), or queue it and grant it later."""
        tag = key[4:]
        with self._lock:
            queue = self._waiting.get(tag)
            if queue:
                queue.append(request)  # first come, first served within this process
                return False
        if self._try(key, request):
            return True
        with self._lock:
            queue = self._waiting.setdefault(tag, deque())
            queue.append(request)
            waiting = len(queue)
        self._announce(tag, waiting)
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
        slot_id = held[0]
        now = get_clock().time()
        if successor is not None:
            if self.table.hand_over(slot_id, _run_id(successor), _task(successor), now, self.lease):
                with self._lock:
                    self._held[(key, id(successor.owner))] = (slot_id, successor)
                self._grant(successor, key)
                return
            with self._lock:
                self._waiting.setdefault(tag, deque()).appendleft(successor)
        channels = self.table.release(slot_id, tag)
        mine = self._channel.name if self._channel else None
        for channel in channels:
            if channel != mine:
                WakeChannel.send(channel, tag)
        # Also when nobody was queued: a retry under way may have tried just before this release.
        self.retry(tag)

    def withdraw(self, request: Any) -> None:
        with self._lock:
            for queue in self._waiting.values():
                if request in queue:
                    queue.remove(request)

    # -- trying and waking ---------------------------------------------------------------

    def _try(self, key: str, request: Any) -> bool:
        now = get_clock().time()
        attempt = self.table.try_acquire(key[4:], _run_id(request), _task(request), now, self.lease)
        if attempt.capacity is None:
            self._capacities.pop(key[4:], None)  # the limit was removed: the tag is free
            return True
        if attempt.slot_id is None:
            if attempt.next_expiry is not None:
                tag = key[4:]
                watchdog.schedule(max(0.0, attempt.next_expiry - now) + 0.01, lambda: self.retry(tag))
            return False
        with self._lock:
            self._held[(key, id(request.owner))] = (attempt.slot_id, request)
        self._ensure_renewer()
        return True

    def retry(self, tag: str) -> None:
        """Try again for the head of ``tag``'s queue until a try fails or the queue is empty."""
        with self._lock:
            if self._retrying.get(tag):
                self._retrying[tag] = "again"  # type: ignore[assignment]
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
                    with self._lock:
                        waiting = len(queue) if queue else 0
                    self._announce(tag, waiting)
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

    def _woken(self, tag: str) -> None:
        self.retry(tag)

    def _listen_to_store(self) -> None:
        """Releases on other machines arrive as PostgreSQL notices."""
        try:
            for tag in self.table.listen():
                self.retry(tag)
        except Exception as exc:  # noqa: BLE001 - lease expiry still wakes us, later
            log.warning("Stopped listening for released slots in the store: %s", exc)

    def _grant(self, request: Any, key: str) -> None:
        with self.limiter._lock:
            request.taken.append(key)
        request.advance(self.limiter)

    def _announce(self, tag: str, waiting: int) -> None:
        if self._channel is None:
            with self._lock:
                if self._channel is None:
                    self._channel = WakeChannel(self._woken)
                    if self.table.notifies:
                        threading.Thread(target=self._listen_to_store, name="tether-slot-notices", daemon=True).start()
        try:
            self.table.set_waiting(tag, self._channel.name, waiting, get_clock().time())
        except Exception as exc:  # noqa: BLE001 - a lost wake-up only delays us to the next expiry
            log.warning("Could not list this process as waiting for tag %r: %s", tag, exc)

    def _ensure_renewer(self) -> None:
        if self._renewer is None:
            with self._lock:
                if self._renewer is None:
                    self._renewer = threading.Thread(target=self._renew_forever, name="tether-slot-leases", daemon=True)
                    self._renewer.start()

    def _renew_forever(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.lease / 3):
            with self._lock:
                ids = [slot_id for slot_id, _ in self._held.values()]
            try:
                self.table.renew(ids, get_clock().time() + self.lease)
            except Exception as exc:  # noqa: BLE001 - try again at the next beat
                log.warning("Could not renew %d concurrency slot lease(s): %s", len(ids), exc)


def _run_id(request: Any) -> str | None:
    record = getattr(request.owner, "record", None)
    return record.id if record is not None else None


def _task(request: Any) -> str | None:
    record = getattr(request.owner, "record", None)
    return record.name if record is not None else None


_brokers: dict[int, SlotBroker] = {}


def use_store(store: Any, limiter: Any) -> SlotBroker:
    """Let ``limiter`` take tag slots through ``store``; refreshes the known limits."""
    broker = _brokers.get(id(store))
    if broker is None:
        broker = _brokers[id(store)] = SlotBroker(SlotTable(store.engine))
        broker.limiter = limiter
    limiter.backend = broker
    try:
        broker.refresh()
    except Exception as exc:  # noqa: BLE001 - a store that cannot be read limits nothing
        log.warning("Could not read the concurrency limits from %s: %s", store, exc)
    return broker
