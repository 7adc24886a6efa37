"""Validate events and put them on the queue in batches, after the event log has them."""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from events.schemas import Event, EventError, parse_event, parse_json_line
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
"""Longest a queued batch waits for the next batch's log write to be marked queued in it."""

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

        A batch is logged, then queued, once it is full or its first event waited
        :data:`FLUSH_DELAY_SECONDS` (seen when the next pair, or an :data:`IDLE`, comes).
        It is marked queued in the log along with the next batch's write, or on its own
        at the end or once it waited :data:`MARK_DELAY_SECONDS` for the next. Whatever
        happens, every batch that reached the queue is marked before this returns or
        raises; one left unmarked by a crash is queued again by the workers' sweep,
        which is harmless.
        """
        batch: list[Event] = []
        bodies: list[Any] = []
        queued: Any = None  # the sink's handle of the last batch queued, until marked
        mark_by = flush_by = 0.0
        report = report or PublishReport()
        try:
            for item in pairs:
                now = time.monotonic()
                if queued is not None and now > mark_by:
                    # The events come slowly (a trickling stdin): mark now rather than
                    # leave the batch for the workers' sweep to queue again.
                    self._mark(queued)
                    queued = None
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
                queued = self._flush(batch, bodies, queued, report)
                batch, bodies = [], []
                mark_by = time.monotonic() + MARK_DELAY_SECONDS
            if batch:
                queued = self._flush(batch, bodies, queued, report)
        finally:
            self._mark(queued)
        return report

    def _mark(self, queued: Any) -> None:
        """Mark the batch ``queued`` in the log, when there is one (twice is harmless)."""
        if queued is not None and self.sink is not None:
            self.sink.mark_enqueued(queued)

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
        queued: Any,
        report: PublishReport,
    ) -> Any:
        """Log ``batch``, marking ``queued`` (the batch before it) in the same write; then
        queue it. Returns the sink's handle of ``batch`` (None without a sink)."""
        handle = None
        if self.sink is not None:
            known = bodies if all(body is not None for body in bodies) else None
            handle = self.sink.append(batch, known, enqueued=queued)
        self.queue.enqueue_many(
            [
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
        )
        report.accepted += len(batch)
        report.jobs += 1
        return handle


def _has_id(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("event_id"), str)
        and 0 < len(obj["event_id"]) <= 200
    )
