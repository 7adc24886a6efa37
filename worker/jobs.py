"""The queued job: apply one batch of events to the state."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from rq import get_current_job

from events import wire
from events.schemas import (
    EventError,
    PerformanceRecorded,
    PerformanceRetracted,
    VideoDeleted,
    VideoMetricsUpdated,
    VideoPosted,
    parse_event,
)
from events.wire import Record
from worker import context
from worker.metrics import record_apply

log = logging.getLogger(__name__)


class PoisonBatchError(ValueError):
    """A queued batch held events that are not valid; the valid ones were applied."""


def apply_batch(events: list[Any]) -> dict[str, int]:
    """Validate and apply a batch of events (JSON data); returns applied/stale/rejected.

    Invalid events (a job placed on the queue without validation) are reported in the
    job's failure reason after the valid ones are applied; such a job is not retried.

    Raises:
        PoisonBatchError: when any event of the batch is invalid.
    """
    started = time.perf_counter()
    conns = context.get()
    performances: list[PerformanceRecorded | PerformanceRetracted] = []
    videos: list[VideoPosted | VideoMetricsUpdated | VideoDeleted] = []
    errors: list[str] = []
    if not isinstance(events, list):
        events = [events]
    for index, raw in enumerate(events):
        try:
            event = parse_event(raw, None)
        except EventError as exc:
            errors.append(f"event {index}: {exc}")
            continue
        if isinstance(event, PerformanceRecorded | PerformanceRetracted):
            performances.append(event)
        else:
            videos.append(event)
    today = conns.settings.current_date()
    setlist_result = conns.setlists.apply(performances, today)
    video_result = conns.videos.apply(videos)
    applied = setlist_result.applied + video_result.applied
    stale = setlist_result.stale + video_result.stale
    record_apply(
        conns.state,
        conns.settings.key_prefix,
        Counter(event.type for event in [*performances, *videos]),
        rejected=len(errors),
        seconds=time.perf_counter() - started,
    )
    _report(len(events), applied, stale, errors)
    return {"applied": applied, "stale": stale, "rejected": 0}


def apply_records(records: list[Any]) -> dict[str, int]:
    """Apply a batch of wire records (``events.wire``) that a publisher validated.

    Each record's shape is checked (the full validation was the publisher's); a
    malformed one is reported as :func:`apply_batch` reports an invalid event.

    Raises:
        PoisonBatchError: when any record of the batch is malformed.
    """
    started = time.perf_counter()
    conns = context.get()
    setlists: list[Record] = []
    videos: list[Record] = []
    errors: list[str] = []
    if not isinstance(records, list):
        records = [records]
    for index, record in enumerate(records):
        reason = wire.problem(record)
        if reason is not None:
            errors.append(f"record {index}: {reason}")
        elif record[0] in wire.SETLIST_OPS:
            setlists.append(record)
        else:
            videos.append(record)
    setlist_result = conns.setlists.apply_records(setlists, conns.settings.current_date())
    video_result = conns.videos.apply_records(videos)
    record_apply(
        conns.state,
        conns.settings.key_prefix,
        Counter(wire.TYPE_OF[r[0]] for r in [*setlists, *videos]),
        rejected=len(errors),
        seconds=time.perf_counter() - started,
    )
    applied = setlist_result.applied + video_result.applied
    stale = setlist_result.stale + video_result.stale
    _report(len(records), applied, stale, errors)
    return {"applied": applied, "stale": stale, "rejected": 0}


def _report(size: int, applied: int, stale: int, errors: list[str]) -> None:
    """Log a batch; raise with the reasons when some of it was invalid (never retried)."""
    log.debug("batch of %d: %d applied, %d stale, %d rejected", size, applied, stale, len(errors))
    if errors:
        job = get_current_job()
        if job is not None:
            job.retries_left = 0  # bad data stays bad: retrying cannot help
        shown = "; ".join(errors[:20])
        more = f"; and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise PoisonBatchError(f"{len(errors)} invalid event(s) in batch: {shown}{more}")
