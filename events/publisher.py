"""Validate events and put them on the queue in batches, after the event log has them."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from events.schemas import Event, EventError, parse_event, parse_json_line, without_bom
from events.wire import record_of

log = logging.getLogger(__name__)

APPLY_RECORDS = "worker.jobs.apply_records"
"""Import path of the job workers run for a batch of wire records (what this publisher queues)."""

APPLY_BATCH = "worker.jobs.apply_batch"
"""Import path of the job workers run for a batch of events as JSON objects, which the
worker validates in full: for producers that queue events without this publisher."""

JOB_RETRY = Retry(max=3, interval=[2, 10, 30])
"""A batch that fails for a passing reason is tried again after 2, 10 and 30 seconds."""

JOB_TIMEOUT = 120
"""Seconds one batch may take before the worker gives it up (it is then retried)."""

MARK_DELAY_SECONDS = 1.0
"""Longest a queued batch waits for a later batch's log write to be marked queued in it."""

FLUSH_DELAY_SECONDS = 1.0
"""Longest an event waits in a part-filled batch for more: a stream that trickles (a
``tail -f`` into ``statsworker publish -``) is logged and queued within about this."""

IDLE_TICK_SECONDS = 0.25
"""How often a followed stream that sends nothing lets the publisher look at the clock."""


class Idle:
    """Stands in a followed stream for "nothing came for a while" (see :func:`follow`)."""


IDLE = Idle()


class _ReadFailed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def follow(items: Iterable[Any], every: float = IDLE_TICK_SECONDS) -> Iterator[Any]:
    """``items`` as they come, read by a thread of their own, with :data:`IDLE` in between
    whenever none came for ``every`` seconds: a publisher reading a stream that blocks
    (standard input from a pipe) can then flush and mark batches while it waits. At most
    10,000 items are read ahead; an error of the stream is raised here."""
    box: queue.Queue[Any] = queue.Queue(maxsize=10_000)
    end = object()

    def read() -> None:
        try:
            for item in items:
                box.put(item)
        except BaseException as exc:  # handed over to the reading side
            box.put(_ReadFailed(exc))
        else:
            box.put(end)

    threading.Thread(target=read, name="statsworker-follow", daemon=True).start()
    while True:
        try:
            item = box.get(timeout=every)
        except queue.Empty:
            yield IDLE
            continue
        if item is end:
            return
        if isinstance(item, _ReadFailed):
            raise item.error
        yield item


JOB_COMPRESSION = 1
"""zlib level of a queued job's data. RQ compresses at zlib's default, 6: for a job of
1,000 wire records 1.6 ms against 0.4 ms at level 1, which stores 19 KB instead of 15
while the job waits (one-off timing, 2026-12-02)."""


class CompactJob(Job):
    """An RQ job whose data is compressed at :data:`JOB_COMPRESSION`. Any RQ worker
    reads it: ``zlib.decompress`` takes every level."""

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict[str, Any]:
        data = self.data
        # RQ's own to_dict compresses ``_data`` at level 6: give it nothing to compress.
        self._data = b""
        try:
            obj = super().to_dict(include_meta=include_meta, include_result=include_result)
        finally:
            self._data = data
        obj["data"] = zlib.compress(data, JOB_COMPRESSION)
        return obj


def job_queue(name: str, connection: Any) -> Queue:
    """The RQ queue ``name`` as statsworker uses it: JSON jobs (no pickle), each
    compressed as :class:`CompactJob` compresses it."""
    return Queue(name, connection=connection, serializer=JSONSerializer, job_class=CompactJob)


FAILURE_TTL = 30 * 24 * 3600
"""Failed batches stay in the failed registry for 30 days, for ``statsworker failed``."""


class EventSink(Protocol):
    """Durable storage that must hold an event before it is queued (the event log)."""

    def append(
        self,
        events: Sequence[Event],
        bodies: Sequence[Any] | None = None,
        enqueued: Any = None,
    ) -> Any:
        """Store events durably as one batch; storing an event_id twice is harmless.

        ``bodies``, when given, are the events as the JSON objects they arrived in
        (already validated), stored instead of dumping each event again. ``enqueued``
        is what an earlier call returned, for a batch that has reached the queue since:
        it is marked so in the same write (as :meth:`mark_enqueued` would). Returns
        the handle of this batch (None for no events).
        """

    def mark_enqueued(self, batch: Any) -> None:
        """Record that the batch ``append`` returned the handle of reached the queue."""


@dataclass
class PublishReport:
    """What one publish did: events queued, and each rejection with its reason."""

    accepted: int = 0
    jobs: int = 0
    rejected: list[EventError] = field(default_factory=list)


class Publisher:
    """Publishes validated events: log first (when there is one), then the queue."""

    def __init__(
        self,
        queue: Queue,
        batch_size: int = 1000,
        sink: EventSink | None = None,
        on_rejected: Callable[[int], None] | None = None,
    ) -> None:
        self.queue = queue
        self.batch_size = batch_size
        self.sink = sink
        self.on_rejected = on_rejected

    def publish(
        self, events: Iterable[Event], report: PublishReport | None = None
    ) -> PublishReport:
        """Queue valid events in batches of ``batch_size``."""
        return self.publish_validated(((event, None) for event in events), report)

    def publish_validated(
        self, pairs: Iterable[tuple[Event, Any] | Idle], report: PublishReport | None = None
    ) -> PublishReport:
        """Queue ``(event, body)`` pairs in batches: ``body`` is the JSON object the event
        was validated from (the log stores it instead of dumping the event again), or None.

        A batch is logged, then sent to the queue, once it is full or its first event
        waited :data:`FLUSH_DELAY_SECONDS` (seen when the next pair, or an :data:`IDLE`,
        comes). The queue's reply is read once the next batch is logged (see
        :meth:`_flush`), or at the end. A batch is marked queued in the log with the first
        write after its reply was read, or on its own at the end or once it waited
        :data:`MARK_DELAY_SECONDS` for the next. Whatever
        happens, every batch that reached the queue is marked before this returns or
        raises; one left unmarked by a crash is queued again by the workers' sweep,
        which is harmless.
        """
        batch: list[Event] = []
        bodies: list[Any] = []
        queued: list[Any] = []  # the sink's handles of batches queued, not yet marked
        sending: _Sending | None = None  # the last batch sent, its reply not yet read
        mark_by = flush_by = 0.0
        report = report or PublishReport()
        try:
            for item in pairs:
                now = time.monotonic()
                if (queued or sending) and now > mark_by:
                    # The events come slowly (a trickling stdin): mark now rather than
                    # leave the batch for the workers' sweep to queue again.
                    self._received(sending, queued, report)
                    sending = None
                    self._mark(queued)
                if isinstance(item, Idle):
                    if not batch or now < flush_by:
                        continue
                else:
                    if not batch:
                        flush_by = now + FLUSH_DELAY_SECONDS
                    batch.append(item[0])
                    bodies.append(item[1])
                    if len(batch) < self.batch_size and now < flush_by:
                        continue
                sending = self._flush(batch, bodies, sending, queued, report)
                batch, bodies = [], []
                mark_by = time.monotonic() + MARK_DELAY_SECONDS
            if batch:
                sending = self._flush(batch, bodies, sending, queued, report)
            self._received(sending, queued, report)
            sending = None
        finally:
            if sending is not None:  # failing already: what reached the queue is still marked
                with contextlib.suppress(Exception):
                    self._received(sending, queued, report)
            self._mark(queued)
        return report

    def _mark(self, queued: list[Any]) -> None:
        """Mark the batches ``queued`` in the log, when there is one (twice is harmless),
        and forget them."""
        if queued and self.sink is not None:
            self.sink.mark_enqueued(queued)
        queued.clear()

    @staticmethod
    def _received(sending: _Sending | None, queued: list[Any], report: PublishReport) -> None:
        """Read the reply to the batch ``sending`` (an error of the queue is raised here);
        once it is queued, it is counted and awaits its mark in ``queued``."""
        if sending is None or sending.received:
            return
        sending.wait()
        sending.received = True
        if sending.handle is not None:
            queued.append(sending.handle)
        report.accepted += sending.events
        report.jobs += 1

    def publish_lines(
        self,
        lines: Iterable[str | bytes],
        progress: Callable[[int], None] | None = None,
        follow_stream: bool = False,
    ) -> PublishReport:
        """Publish JSON Lines; a bad line is reported as ``line N: reason`` and skipped.

        With ``follow_stream`` the lines are read by :func:`follow`, so that a stream
        which blocks between lines (a pipe) still has each event queued within about
        :data:`FLUSH_DELAY_SECONDS`.
        """
        report = PublishReport()
        source: Iterable[Any] = follow(lines) if follow_stream else lines

        def valid() -> Iterator[tuple[Event, Any] | Idle]:
            lineno = 0
            for line in source:
                if isinstance(line, Idle):
                    yield line
                    continue
                lineno += 1
                if progress is not None:
                    progress(lineno)
                if lineno == 1:  # a first line of only a byte order mark is blank too
                    line = without_bom(line)
                if not line.strip():
                    continue
                try:
                    obj = parse_json_line(line, lineno)
                    yield parse_event(obj, f"line {lineno}"), obj
                except EventError as exc:
                    report.rejected.append(exc)

        self.publish_validated(valid(), report)
        self._count_rejected(report)
        return report

    def publish_objects(self, objects: Sequence[Any]) -> PublishReport:
        """Validate and publish decoded JSON objects, as ``POST /events`` does; rejections name
        the event (by its event_id, else by its place)."""
        report = PublishReport()

        def valid() -> Iterator[tuple[Event, Any]]:
            for index, obj in enumerate(objects):
                try:
                    yield parse_event(obj), obj
                except EventError as exc:
                    # Named by its event_id when it has a usable one, else by its place.
                    report.rejected.append(
                        exc if _has_id(obj) else EventError(f"event {index}", exc.reason)
                    )

        self.publish_validated(valid(), report)
        self._count_rejected(report)
        return report

    def _count_rejected(self, report: PublishReport) -> None:
        if report.rejected and self.on_rejected is not None:
            self.on_rejected(len(report.rejected))

    def _flush(
        self,
        batch: Sequence[Event],
        bodies: Sequence[Any],
        sending: _Sending | None,
        queued: list[Any],
        report: PublishReport,
    ) -> _Sending:
        """Log ``batch``, marking the batches ``queued`` in the same write; read the reply
        to the batch ``sending`` (the one before); send ``batch`` to the queue. Returns
        the sending of ``batch``, whose reply the next step reads.

        The reply to a batch is read only after the next batch is validated and logged:
        a job's round trip waits behind whatever script Redis is running (8 ms a job of
        1,000 events on average while a worker applies, in a one-off measurement), time
        the publisher spends on the next batch instead of waiting.
        """
        if sending is not None and sending.ready():
            # Queued already (a queue that answers at once): marked in this write.
            self._received(sending, queued, report)
            sending = None
        handle = None
        if self.sink is not None:
            known = bodies if all(body is not None for body in bodies) else None
            handle = self.sink.append(batch, known, enqueued=list(queued))
        queued.clear()
        self._received(sending, queued, report)
        jobs = [
            Queue.prepare_data(
                APPLY_RECORDS,
                args=([record_of(event) for event in batch],),
                # RQ would otherwise describe the job by the repr of all its records.
                description=f"apply {len(batch)} events",
                timeout=JOB_TIMEOUT,
                failure_ttl=FAILURE_TTL,
                result_ttl=0,
                retry=JOB_RETRY,
            )
        ]
        return _Sending.start(self.queue, jobs, handle, len(batch))


class _Sending:
    """Jobs on their way to the queue: the commands are sent at once, their reply is read
    by :meth:`wait`. An RQ queue on a redis-py client sends its MULTI/EXEC transaction
    itself and reads the reply later; any other queue enqueues right away."""

    def __init__(self, handle: Any, events: int) -> None:
        self.handle = handle  # the sink's handle of the batch
        self.events = events
        self.received = False  # counted by the publisher once queued
        self._finish: Callable[[], None] = _nothing
        self._error: BaseException | None = None

    @classmethod
    def start(cls, queue: Any, jobs: list[Any], handle: Any, events: int) -> _Sending:
        sending = cls(handle, events)
        client = getattr(queue, "connection", None)
        if not isinstance(queue, Queue) or client is None or not can_defer(client):
            queue.enqueue_many(jobs)
            return sending
        pipe = client.pipeline(transaction=True)
        queue.enqueue_many(jobs, pipeline=pipe)
        sending._finish = _send_transaction(pipe)
        return sending

    def ready(self) -> bool:
        """Whether the jobs are known to be queued (:meth:`wait` returns at once)."""
        return self._finish is _nothing and self._error is None

    def wait(self) -> None:
        """Read the reply: the jobs are queued when this returns; if they were not, every
        call raises the error that says why."""
        if self._error is not None:
            raise self._error
        finish, self._finish = self._finish, _nothing
        try:
            finish()
        except BaseException as exc:
            self._error = exc
            raise


def _nothing() -> None:
    return None


def can_defer(client: Any) -> bool:
    """Whether ``client`` talks to Redis over redis-py's own connection pool (not
    fakeredis, not a cluster), whose commands can be sent and their replies read later."""
    return type(client) is redis.Redis and type(client.connection_pool) is redis.ConnectionPool


def _send_transaction(pipe: Any) -> Callable[[], None]:
    """Send the commands of the transaction ``pipe`` now; the function returned reads
    their reply and raises the first error in it.

    Should the connection fail, before or after the send, the whole transaction goes
    again through ``pipe.execute`` with the client's retries: at worst a job is queued
    twice, which is harmless (applying an event twice changes nothing).
    """
    commands = list(pipe.command_stack)
    pool = pipe.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(
            conn.pack_commands([("MULTI",), *(args for args, _ in commands), ("EXEC",)])
        )
    except (redis.ConnectionError, redis.TimeoutError):
        conn.disconnect()
        pool.release(conn)
        pipe.execute()
        return _nothing

    def finish() -> None:
        try:
            replies = [conn.read_response() for _ in range(len(commands) + 1)]
            done = conn.read_response()
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()
            pipe.execute()
            return
        except BaseException:
            conn.disconnect()  # part of the reply may be unread: the connection is spent
            raise
        finally:
            pool.release(conn)
            pipe.reset()
        for reply in [*replies, *(done if isinstance(done, list) else [done])]:
            if isinstance(reply, Exception):
                raise reply
        if not isinstance(done, list) or len(done) != len(commands):
            raise redis.ResponseError(f"the queue's transaction answered {done!r}")

    return finish


def _has_id(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("event_id"), str)
        and 0 < len(obj["event_id"]) <= 200
    )
