"""The queued jobs: apply one batch of wire records, or of raw events, to the state."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from rq import get_current_job

from events import wire
from events.schemas import EventError, parse_event
from events.wire import Record
from stats.videos import SumsOverflow
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
    if not isinstance(events, list):
        events = [events]
    records: list[Record] = []
    errors: list[str] = []
    for index, raw in enumerate(events):
        try:
            records.append(wire.record_of(parse_event(raw, None)))
        except EventError as exc:
            errors.append(f"event {index}: {exc}")
    return _apply(records, errors, len(events), started)


def apply_records(records: list[Any]) -> dict[str, int]:
    """Apply a batch of wire records (``events.wire``) that a publisher validated.

    Each record's shape is checked (the full validation was the publisher's); a
    malformed one is reported as :func:`apply_batch` reports an invalid event.

    Raises:
        PoisonBatchError: when any record of the batch is malformed.
    """
    started = time.perf_counter()
    if not isinstance(records, list):
        records = [records]
    if wire.all_well_formed(records):  # the usual case, checked in one pass
        return _apply(records, [], len(records), started)
    good: list[Record] = []
    errors: list[str] = []
    for index, record in enumerate(records):
        reason = wire.problem(record)
        if reason is None:
            good.append(record)
        else:
            errors.append(f"record {index}: {reason}")
    return _apply(good, errors, len(records), started)


def _apply(records: list[Record], errors: list[str], size: int, started: float) -> dict[str, int]:
    """Apply well-formed records, count them, and raise with ``errors`` when there are any."""
    conns = context.get()
    setlists = [r for r in records if r[0] in wire.SETLIST_OPS]
    videos = [r for r in records if r[0] not in wire.SETLIST_OPS]
    setlist_result = conns.setlists.apply_records(setlists, conns.settings.current_date())
    try:
        video_result = conns.videos.apply_records(videos)
    except SumsOverflow:
        _no_retry()
        raise
    record_apply(
        conns.state,
        conns.settings.key_prefix,
        Counter(wire.TYPE_OF[r[0]] for r in records),
        rejected=len(errors),
        seconds=time.perf_counter() - started,
    )
    applied = setlist_result.applied + video_result.applied
    stale = setlist_result.stale + video_result.stale
    log.debug("batch of %d: %d applied, %d stale, %d rejected", size, applied, stale, len(errors))
    if errors:
        _no_retry()
        shown = "; ".join(errors[:20])
        more = f"; and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise PoisonBatchError(f"{len(errors)} invalid event(s) in batch: {shown}{more}")
    return {"applied": applied, "stale": stale, "rejected": 0}


def _no_retry() -> None:
    """Spend the running job's retries: bad data stays bad, retrying cannot help."""
    job = get_current_job()
    if job is not None:
        job.retries_left = 0
