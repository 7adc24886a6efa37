"""Validate events and put them on the queue in batches, after the event log has them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rq import Queue, Retry

from events.schemas import Event, EventError, parse_event, parse_line

log = logging.getLogger(__name__)

APPLY_BATCH = "worker.jobs.apply_batch"
"""Import path of the job function that workers run for each batch."""

JOB_RETRY = Retry(max=3, interval=[2, 10, 30])
"""A batch that fails for a passing reason is tried again after 2, 10 and 30 seconds."""

JOB_TIMEOUT = 120
"""Seconds one batch may take before the worker gives it up (it is then retried)."""

FAILURE_TTL = 30 * 24 * 3600
"""Failed batches stay in the failed registry for 30 days, for ``statsworker failed``."""


class EventSink(Protocol):
    """Durable storage that must hold an event before it is queued (the event log)."""

    def append(self, events: Sequence[Event]) -> None:
        """Store events durably; storing an event_id twice is harmless."""

    def mark_enqueued(self, events: Sequence[Event]) -> None:
        """Record that these events reached the queue."""


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
        report = report or PublishReport()
        batch: list[Event] = []
        for event in events:
            batch.append(event)
            if len(batch) >= self.batch_size:
                self._flush(batch, report)
                batch = []
        if batch:
            self._flush(batch, report)
        return report

    def publish_lines(
        self, lines: Iterable[str | bytes], progress: Callable[[int], None] | None = None
    ) -> PublishReport:
        """Publish JSON Lines; a bad line is reported as ``line N: reason`` and skipped."""
        report = PublishReport()

        def valid() -> Iterator[Event]:
            for lineno, line in enumerate(lines, start=1):
                if progress is not None:
                    progress(lineno)
                if not line.strip():
                    continue
                try:
                    yield parse_line(line, lineno)
                except EventError as exc:
                    report.rejected.append(exc)

        self.publish(valid(), report)
        self._count_rejected(report)
        return report

    def publish_objects(self, objects: Sequence[Any]) -> PublishReport:
        """Publish decoded JSON objects (``POST /events``); rejections name the event."""
        report = PublishReport()
        events: list[Event] = []
        for index, obj in enumerate(objects):
            try:
                events.append(parse_event(obj, None if _has_id(obj) else f"event {index}"))
            except EventError as exc:
                report.rejected.append(exc)
        self.publish(events, report)
        self._count_rejected(report)
        return report

    def _count_rejected(self, report: PublishReport) -> None:
        if report.rejected and self.on_rejected is not None:
            self.on_rejected(len(report.rejected))

    def _flush(self, batch: Sequence[Event], report: PublishReport) -> None:
        if self.sink is not None:
            self.sink.append(batch)
        payload = [event.to_json_dict() for event in batch]
        self.queue.enqueue_many(
            [
                Queue.prepare_data(
                    APPLY_BATCH,
                    args=(payload,),
                    timeout=JOB_TIMEOUT,
                    failure_ttl=FAILURE_TTL,
                    result_ttl=0,
                    retry=JOB_RETRY,
                )
            ]
        )
        if self.sink is not None:
            self.sink.mark_enqueued(batch)
        report.accepted += len(batch)
        report.jobs += 1


def _has_id(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("event_id"), str)
        and 0 < len(obj["event_id"]) <= 200
    )
