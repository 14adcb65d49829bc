"""`StoreRecorder`: the engine's events, recorded in the store without slowing the flow down.

On the engine's hot path `record` encodes the event (`_encode`: the little work that
needs the live objects) and extends a flat queue with the record's items: strings and
numbers, which the garbage collector does not track, where queued tuples would make
it collect more often while a busy flow runs. A writer thread takes the whole queue in
one slice and appends it to this process's spool (`_spool`): from then on the records
outlive a SIGKILL of this process. It does so a few milliseconds after a burst began,
then every `SPOOL_SECONDS` while records keep coming; and the thread whose record fills
a batch (`BATCH_RECORDS`: more than a busy flow records between two of those turns,
unless the writer thread cannot get the GIL) spools it itself. A flow run's end waits
for no more than the spool (it spools what is queued on its own thread, without waiting
for the writer thread to take a turn; and while that thread writes rows, the recording
threads spool what they queue). The rows are written from the spool later, while the
flow does not need the CPU: once the stream pauses (`QUIET_SECONDS`), at the latest
`DEFER_SECONDS` after the oldest was spooled, at once when someone waits for them
(`flush`), a few thousand records at a time. A one-shot flow's records are so written after it ended. A stream that stays
heavy for a second is handed to the writer process (`_writer_process`), which takes
the spool over, so that planning and writing rows stop competing with the flow for
the GIL. Resource steps (``setup-started``, ``handle``, cleanup) are committed to the
store before `record` returns: the ledger holds the intent before setup acts.

If the store fails (disk full, server gone), the recorder says so once, loudly,
naming what is not recorded, and drops events from then on: a flow never fails
or waits because of its record.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal, Protocol

from tether._clock import Clock, SystemClock
from tether._core import Event, ResourceEvent
from tether._runtime import get_clock
from tether._settings import store_writer_process
from tether.store._encode import Encoder
from tether.store._failure import ITEMS_PER_RECORD, count_records, failure_message
from tether.store._ledger import ProcessInfo
from tether.store._location import StoreLocation
from tether.store._rows import EngineSource, RowWriter
from tether.store._spool import READ_BYTES, Drain, Position, Spool, store_key
from tether.store._writer_process import WriterProcess, WriterProcessFailed
from tether.store._writer_process_main import DEFER_SECONDS, QUIET_SECONDS

log = logging.getLogger("tether.store")

#: Resource steps committed before `record` returns: the ledger must not lag behind the act.
DURABLE_STEPS = frozenset({"setup-started", "handle", "cleanup", "cleanup-failed"})
DURABLE_TIMEOUT = 10.0
#: This many events within a second means the stream is heavy: hand the writing to the writer process.
WRITER_PROCESS_THRESHOLD = 2000
#: With the writer process, the flow process tells it how far the spool goes at most this often
#: (each message costs the flow's threads the GIL and the writer process a wake-up on a core they
#: would use); records are spooled as often as without it.
WRITER_PROCESS_TELL_SECONDS = 0.1
#: Rows written in this process are read from the spool this many bytes at a time (a few
#: thousand records), so the records that keep coming are spooled in between.
IN_PROCESS_READ_BYTES = 256 << 10
#: How often an idle writer looks for a failure the writer process reported (it writes after a pause).
WRITER_PROCESS_CHECK_SECONDS = 1.0
#: A record waits at most about this long to be spooled while records keep coming: the writer
#: thread spools what is queued this often (and the recording threads each batch they fill).
#: And while the writer thread writes rows (or waits for the writer process to), which on a
#: loaded machine or a slow server can last longer, the recording threads spool what is
#: queued themselves at least this often.
SPOOL_SECONDS = 0.05
#: A recording thread that fills a batch of this many records spools it. Not much fewer: each
#: spooling on a flow's thread holds it up until it gets the GIL back after the write (a
#: switch interval on a busy process), where the writer thread's turns hold up no run.
#: Measured with benchmarks/recording.py: 1,000 cost a one-shot flow of 5,000 no-ops 8 ms more.
BATCH_RECORDS = 2500


class RecordedStore(EngineSource, Protocol):
    """What a recorder records to: a `Store` (whose first use of `engine` opens it)."""

    location: StoreLocation


class _Beat:
    """A request to write the heartbeats now."""


Until = Literal["written", "safe"]


class StoreRecorder:
    """A `Recorder` that spools every event and writes it to the store, away from the engine's threads."""

    def __init__(self, store: RecordedStore, batch_size: int = BATCH_RECORDS, window_seconds: float = 0.005,
                 clock: Clock | None = None) -> None:
        clock = clock or get_clock()  # its timers read it often: the real clock's function itself, then
        self._now = time.monotonic if type(clock) is SystemClock else clock.monotonic
        self.location = store.location
        self.dropped = 0
        #: The warning given when the store failed, or None while it works.
        self.failure: str | None = None
        self._batch_items = batch_size * ITEMS_PER_RECORD
        #: A recording thread spools the queue once it is this long: a batch, or, while another thread
        #: spools (a write may wait long for the GIL on a busy machine), a batch more than it left.
        self._spool_at = self._batch_items
        self._window = window_seconds
        self._process = ProcessInfo.current()
        self._encoder = Encoder(self._process.host, self._process.pid)
        self._encode = self._encoder.encode_one  # bound once: `record` is the engine's hot path
        self._rows = RowWriter(store, self._process, clock=clock)  # the store opens when rows are first written
        self._mode = store_writer_process()  # TETHER_STORE_HELPER: auto, always or never
        self._writer_process: WriterProcess | None = None
        self._using_writer_process = False
        self._spool: Spool | None = None
        self._drain: Drain | None = None
        #: Spooled and not yet written: since when, and when the last of it was spooled.
        self._unwritten_since: float | None = None
        self._last_spooled = 0.0
        self._told = 0.0
        #: Flush markers waiting for the rows up to their spool position to be written.
        self._waiting: list[tuple[Position, threading.Event]] = []
        self._lost_in_write = 0
        #: Held while records are taken from the queue and appended to the spool, by the writer
        #: thread or by a thread that waits for its records to be safe (`flush(until="safe")`):
        #: so they are spooled in the order recorded. Never held while rows are written.
        self._spool_lock = threading.Lock()
        self._failure_lock = threading.Lock()
        #: Records spooled by other threads since the writer thread last looked (it counts them for the writer process).
        self._spooled_elsewhere = 0
        #: Since when the writer thread writes rows or waits for the writer process (None: it does not).
        self._busy_since: float | None = None
        #: About how many records were spooled and not yet confirmed written (for a failure's count).
        self._unconfirmed = 0
        #: The records, item after item (see `split_records`). Only `record` appends (one
        #: record in one atomic ``extend``), only the writer takes, from the front.
        self._queue: list[Any] = []
        #: Flush markers and heartbeat requests, in the order made. A marker stands for the
        #: records queued before it was made, which are all in `_queue` by then.
        self._markers: deque[threading.Event | _Beat] = deque()
        self._rate_since = 0.0
        self._rate_count = 0
        self._wake = threading.Event()
        self._idle = False
        self._accepting = True
        self._stopping = False
        try:  # now, before the flow's threads compete for the GIL, which each file call then waits for
            self._open_spool()
        except Exception as exc:  # noqa: BLE001 - whatever the failure, the flow goes on
            self._give_up(exc, 0)
        self._thread = threading.Thread(target=self._run, name="tether-store-writer", daemon=True)
        self._thread.start()

    # -- the engine's side ---------------------------------------------------------------

    #: `record` cannot raise, so the event stream calls it directly.
    never_raises = True

    def record(self, event: Event) -> None:
        if type(event) is ResourceEvent:
            self._record_step(event)
            return
        if not self._accepting:
            self.dropped += 1
            return
        try:
            # Encoded here: the event dies at once, and a failure's traceback is as it was.
            record = self._encode(event)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the flow goes on
            self._give_up(exc, 1)
            return
        queue = self._queue
        queue.extend(record)
        if len(queue) >= self._spool_at or self._busy_since is not None:
            self._spool_on_this_thread()
        elif self._idle and not self._wake.is_set():
            # Once: until the writer takes the GIL, records keep coming, and Event.set is not cheap.
            self._wake.set()

    def _record_step(self, event: ResourceEvent) -> None:
        """A resource step: rare, and the ledger's steps are written before the flow goes on."""
        if not self._accepting:
            self.dropped += 1
            return
        if event.details.get("stored_in") == self.location.url:
            return  # a worker wrote this step of its copy to this store itself (see `_worker_ledger`)
        try:
            record = self._encode(event)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the flow goes on
            self._give_up(exc, 1)
            return
        self._queue.extend(record)
        if event.step in DURABLE_STEPS:
            self.flush(DURABLE_TIMEOUT)
        elif self._idle and not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout: float | None = None, until: Until = "written") -> bool:
        """Wait until every event recorded so far is written (or dropped); False on timeout.

        ``until="safe"`` returns once the events are safe from this process's death:
        spooled (see `_spool`), from where the writer process or the next store open
        writes them if this process is killed. A flow run's end waits for that much.
        """
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return not self._queue
        if until == "safe":
            return self._spool_here(timeout)
        marker = threading.Event()
        self._markers.append(marker)
        self._wake.set()
        return marker.wait(timeout)

    def _spool_here(self, timeout: float | None) -> bool:
        """Spool what is queued on the caller's thread: a flow run's end waits for no hand-over to
        the writer thread and back (two thread switches, each a wait for the GIL on a busy machine)."""
        if not self._spool_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            if not self._accepting:  # closed (the spool with it), or a forked child's copy of the parent's recorder
                return not self._queue
            if self.failure is None:
                self._spooled_elsewhere += self._spool_items(self._take())
            else:
                self.dropped += count_records(self._take())
        finally:
            self._spool_lock.release()
        if not self._wake.is_set():
            self._wake.set()  # the writer thread decides when the rows are written (at once if no flow runs)
        return True

    def _spool_on_this_thread(self) -> None:
        """On a recording thread: spool the queue if a batch is queued, or, while the writer
        thread is busy, if `SPOOL_SECONDS` passed since the last spooling. Never waits for the
        lock (whoever holds it is spooling).

        A full batch is spooled by the thread that filled it, not handed to the writer thread:
        waking it for each batch would cost the recording threads two waits for the GIL (the
        writer's turn, then theirs back)."""
        if len(self._queue) < self._spool_at and self._now() - self._last_spooled < SPOOL_SECONDS:
            return
        if not self._spool_lock.acquire(blocking=False):
            self._spool_at = len(self._queue) + self._batch_items  # not at every record until it is done
            return
        try:
            if self._accepting and self.failure is None:
                self._spooled_elsewhere += self._spool_items(self._take())
        finally:
            self._spool_lock.release()

    def _take(self) -> list[Any]:
        """The queued records, taken from the front (records queued meanwhile stay, after them).
        Hold `_spool_lock`."""
        queue = self._queue
        taken = len(queue)
        items = queue[:taken]
        del queue[:taken]
        self._spool_at = self._batch_items
        return items

    def heartbeat_now(self, timeout: float | None = None) -> bool:
        """Write the heartbeats of this process's open flow runs and resources now."""
        self._markers.append(_Beat())
        return self.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then stop the writer (and the writer process). Later events are dropped."""
        self._stopping = True
        self.flush(timeout)
        self._accepting = False
        self._wake.set()
        self._thread.join(timeout)

    def abandon(self) -> None:
        """In a forked child: stop using what the parent process owns."""
        self._accepting = False
        self._spool_lock = threading.Lock()  # the parent's writer thread may have held it at the fork
        if self._writer_process is not None:
            self._writer_process.abandon()
        if self._drain is not None:
            self._drain.abandon()
        if self._spool is not None:
            self._spool.abandon()

    @property
    def writer_process_pid(self) -> int | None:
        """The writer process writing for this one, if any."""
        return self._writer_process.pid if self._writer_process is not None and self._using_writer_process else None

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a bug in the writer: stop recording, but never leave a flush waiting
            self._give_up(exc, count_records(self._queue))
            self._release_waiters()
        finally:
            if self._writer_process is not None:
                # A writer process never switched to holds nothing of ours: do not wait for it to start.
                self._writer_process.close(30.0 if self._using_writer_process else 0.0)
            with self._spool_lock:
                self._accepting = False  # no thread spools any more
            self._finish_spool()

    def _loop(self) -> None:
        queue, markers = self._queue, self._markers
        while True:
            if (
                self._stopping
                and self._mode == "always"
                and self._writer_process is not None
                and not self._using_writer_process
            ):
                self._await_writer_process()
            if not queue and not markers and not self._drain_due():
                if self._stopping:
                    return
                self._idle = True
                if not queue and not markers:  # checked after announcing idleness, so a record() in between wakes us
                    self._wake.wait(self._due_in())
                self._idle = False
                self._wake.clear()
                if not queue and not markers:
                    self._tick()
                continue
            if queue and not markers and len(queue) < self._batch_items and not self._stopping:
                # Let the burst gather. While records keep coming, this thread spools what is
                # queued every SPOOL_SECONDS, so that no record waits long unspooled (and the
                # threads that fill a batch meanwhile spool it themselves).
                streaming = self._now() - self._last_spooled < SPOOL_SECONDS
                self._wake.wait(SPOOL_SECONDS if streaming else self._window)
                self._wake.clear()
            # The markers made so far, then the queue: what they stand for is all in it (or was
            # spooled by a thread waiting for its records to be safe, before we took the lock).
            due = [markers.popleft() for _ in range(len(markers))]
            beat = any(type(marker) is _Beat for marker in due)
            spooled = 0
            with self._spool_lock:
                items = self._take()
                spooled, self._spooled_elsewhere = self._spooled_elsewhere, 0
                if self.failure is None:
                    spooled += self._spool_items(items)
                else:
                    self.dropped += count_records(items)
                del items
                end = self._spool.end if self._spool is not None else (0, 0)
            if spooled:
                self._consider_writer_process(spooled)
            for marker in due:
                if self.failure is not None and type(marker) is not _Beat:
                    marker.set()  # type: ignore[union-attr]
                elif type(marker) is not _Beat:
                    self._waiting.append((end, marker))  # type: ignore[arg-type]
            if self.failure is None:
                self._write_rows(beat)
            self._release_written()

    def _spool_items(self, items: list[Any]) -> int:
        """Append the records to this process's spool: from then on they outlive it. Hold
        `_spool_lock`. Returns about how many records were spooled."""
        if not items:
            return 0
        try:
            assert self._spool is not None  # opened with the recorder (or the store failed: nothing is spooled)
            self._spool.append(items)
        except Exception as exc:  # noqa: BLE001 - whatever the failure, the flow goes on
            self._give_up(exc, count_records(items))
            return 0
        count = max(len(items) // ITEMS_PER_RECORD, 1)
        self._unconfirmed += count
        now = self._now()
        if self._unwritten_since is None:
            self._unwritten_since = now
        self._last_spooled = now
        return count

    def _open_spool(self) -> None:
        key = store_key(self.location.url)
        try:
            self._spool = Spool(key, self._process)
        except OSError:  # TETHER_HOME is not writable (the store is a server's): spool where we can
            self._spool = Spool(key, self._process, Path(tempfile.gettempdir()) / f"tether-spool-{os.getuid()}")
        self._drain = Drain(self._spool.directory, self._spool.stem, self._write_records)
        self._drain.take_lock()

    def _write_records(self, records: list[Any]) -> None:
        try:
            self._rows.send(records, everything=True)
        except Exception:
            self._lost_in_write = len(records)  # for the count of those not recorded
            raise

    def _drain_due(self) -> bool:
        """Whether rows spooled in this process are to be written now (with the writer process: told to it)."""
        if self.failure is not None:
            return False
        if self._mode == "always" and self._writer_process is not None and not self._using_writer_process:
            return False  # the writer process is starting (records go on to the spool meanwhile): it writes them
        if self._waiting:
            return True
        if self._unwritten_since is None:
            return False
        if self._stopping or not self._encoder.open_flows:
            return True  # no flow runs in this process now: nothing to keep the CPU for
        now = self._now()
        if self._using_writer_process:  # the writer process decides when it writes
            return now - self._told >= WRITER_PROCESS_TELL_SECONDS
        return now - self._last_spooled >= QUIET_SECONDS or now - self._unwritten_since >= DEFER_SECONDS

    def _await_writer_process(self) -> None:
        """At the end, with ``TETHER_STORE_HELPER=always``: the writer process writes; wait until it is ready."""
        assert self._writer_process is not None
        try:
            self._writer_process.wait_ready()
        except WriterProcessFailed:
            pass  # said and handled by the look that follows
        self._consider_writer_process(0)

    def _write_rows(self, beat: bool) -> None:
        """Write (or, with the writer process, hand on) what is spooled, if it is due; a chunk at a time,
        so records keep going to the spool while rows are written."""
        due = self._drain_due()
        if not due and not beat:
            return  # (before taking the spool's lock: a recording thread may hold it, spooling)
        waiting: list[threading.Event] = []
        self._busy_since = self._now()
        try:
            end = self._spool_end()  # another thread may be appending: read where the spool ends under the lock
            if due and end is not None and self._drain is not None:
                if self._using_writer_process:
                    assert self._writer_process is not None
                    waiting = [marker for at, marker in self._waiting if at <= end]
                    self._writer_process.upto(end, written=bool(waiting))
                    self._told = self._now()
                    self._all_written(end, confirmed=bool(waiting))
                    self._waiting = [(at, m) for at, m in self._waiting if at > end]
                elif self._drain.write_some(end, READ_BYTES if self._stopping else IN_PROCESS_READ_BYTES):
                    self._wake.set()  # more to write: come back at once, after spooling what came meanwhile
                else:
                    self._all_written(end, confirmed=True)
            if beat:
                if self._using_writer_process:
                    assert self._writer_process is not None
                    self._writer_process.beat()
                else:
                    self._rows.next_heartbeat = 0.0
                    self._rows.tick()
        except Exception as exc:  # noqa: BLE001 - whatever the store's failure, the flow goes on
            self._give_up(exc, self._lost_in_write or self._unconfirmed)
        finally:
            self._busy_since = None
        for marker in waiting:  # written by the writer process, and the heartbeats too
            marker.set()

    def _all_written(self, end: Position, confirmed: bool) -> None:
        """The records up to ``end`` are written (``confirmed``), or handed to the writer process:
        nothing is left to write, unless a thread spooled more meanwhile."""
        with self._spool_lock:
            if self._spool is not None and self._spool.end != end:
                return  # spooled since: still to write (since about now)
            self._unwritten_since = None
            if confirmed:
                self._encoder.unconfirmed_flows.clear()
                self._unconfirmed = 0

    def _release_written(self) -> None:
        if not self._waiting:
            return
        if self.failure is not None or self._drain is None:  # not to be written, or nothing was ever spooled
            for _, marker in self._waiting:
                marker.set()
            self._waiting = []
            return
        if self._using_writer_process:
            return
        done = self._drain.position
        still = []
        for at, marker in self._waiting:
            if at <= done:
                marker.set()
            else:
                still.append((at, marker))
        self._waiting = still

    def _finish_spool(self) -> None:
        """At the end: the spool is written (by this process or the writer process): delete it."""
        if self._drain is None:
            return
        if self.failure is not None or self._using_writer_process or not self._drain.pending(self._spool_end()):
            # Written (by this process, or the writer process, which deleted it), or declared not recorded by the warning.
            self._drain.remove()
        else:  # not written (the writer stopped on a timeout): the next store open writes it
            self._drain.release()
        if self._spool is not None:
            self._spool.close()

    def _spool_end(self) -> Position | None:
        with self._spool_lock:
            return self._spool.end if self._spool is not None else None

    def _tick(self) -> None:
        if self.failure is not None:
            return
        self._busy_since = self._now()
        try:
            if self._using_writer_process:
                assert self._writer_process is not None
                self._writer_process.check()
            else:
                self._rows.tick()
                if self._writer_process is not None:
                    self._consider_writer_process(0)
        except Exception as exc:  # noqa: BLE001
            self._give_up(exc, self._unconfirmed)
        finally:
            self._busy_since = None

    def _due_in(self) -> float | None:
        if self.failure is not None:
            return None
        waits = []
        if self._unwritten_since is not None and not self._using_writer_process:
            now = self._now()
            waits.append(max(min(self._last_spooled + QUIET_SECONDS, self._unwritten_since + DEFER_SECONDS) - now, 0))
        if self._writer_process is not None and not self._using_writer_process:
            waits.append(0.05)  # waiting for the writer process to be ready
        if self._using_writer_process:
            # The writer process writes later what it was told of: look now and then for a failure it reported.
            waits.append(WRITER_PROCESS_CHECK_SECONDS)
            if self._unwritten_since is not None:
                waits.append(max(self._told + WRITER_PROCESS_TELL_SECONDS - self._now(), 0.0))
        else:
            due = self._rows.due_in()
            if due is not None:
                waits.append(due)
        return min(waits) if waits else None

    def _consider_writer_process(self, burst: int) -> None:
        """Start the writer process once the stream has been heavy for a second; switch to it once it is
        ready (this process writes meanwhile)."""
        if self._using_writer_process or self._mode == "never":
            return
        if self._writer_process is None:
            # Heavy means WRITER_PROCESS_THRESHOLD events within a second, a second long: a short
            # burst (a one-shot flow) is spooled, and written after it, in this process.
            now = self._now()
            if self._mode == "auto":
                if now - self._rate_since <= 1.0:
                    self._rate_count += burst
                    return
                # A second has passed: heavy if it held that many records and they still come.
                heavy = self._rate_count >= WRITER_PROCESS_THRESHOLD and now - self._rate_since < 1.25
                self._rate_since, self._rate_count = now, burst
                if not heavy:
                    return
            try:
                url = self.location.url.render_as_string(hide_password=False)
                assert self._spool is not None
                self._writer_process = WriterProcess(
                    url, self._process, self._rows.heartbeat_every, self._spool.directory, self._spool.stem
                )
            except OSError as exc:
                log.debug("tether: cannot start the store's writer process (%s); writing in-process.", exc)
                self._mode = "never"
                return
        try:
            ready = self._writer_process.poll_ready()
        except WriterProcessFailed as exc:
            log.debug("tether: the store's writer process did not start (%s); writing in-process.", exc)
            self._writer_process.close(5.0)
            self._writer_process, self._mode = None, "never"
            return
        if ready and self._drain is not None and self._spool is not None:
            # The writer process takes the spool over from what this thread last committed (it holds no rows back).
            self._drain.release()
            self._writer_process.adopt(dict(self._rows.open_flows), set(self._rows.open_scopes))
            self._using_writer_process = True

    def _release_waiters(self) -> None:
        self._stopping = True
        while self._markers:
            marker = self._markers.popleft()
            if isinstance(marker, threading.Event):
                marker.set()

    def _give_up(self, exc: BaseException, lost: int) -> None:
        """Stop recording, and say once, loudly, what is not recorded and how to fix it."""
        with self._failure_lock:  # the writer thread and a thread spooling its records may both fail
            if self.failure is not None:
                return
            flows = {**self._encoder.unconfirmed_flows, **self._encoder.open_flows}
            self.failure = failure_message(self.location, flows, exc)
        self._accepting = False
        self.dropped += lost
        log.error(self.failure)
