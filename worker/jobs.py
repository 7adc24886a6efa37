"""The queued job: apply one batch of events to the state."""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import get_current_job

from events.schemas import (
    EventError,
    PerformanceRecorded,
    PerformanceRetracted,
    VideoDeleted,
    VideoMetricsUpdated,
    VideoPosted,
    parse_event,
)
from worker import context
from worker.metrics import record_apply

log = logging.getLogger(__name__)

APPLY_BATCH = "worker.jobs.apply_batch"
"""Import path RQ calls for each queued batch."""


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
        [*performances, *videos],
        rejected=len(errors),
        seconds=time.perf_counter() - started,
    )
    log.debug(
        "batch of %d: %d applied, %d stale, %d rejected", len(events), applied, stale, len(errors)
    )
    if errors:
        job = get_current_job()
        if job is not None:
            job.retries_left = 0  # bad data stays bad: retrying cannot help
        shown = "; ".join(errors[:20])
        more = f"; and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise PoisonBatchError(f"{len(errors)} invalid event(s) in batch: {shown}{more}")
    return {"applied": applied, "stale": stale, "rejected": 0}
