"""The publisher every entry point uses (event log first, then the queue), and recovery.

Every publish path (``statsworker publish``, ``import``, ``backfill``, ``POST /events``)
goes through :func:`make_publisher`, so an event is in the log (committed) before it
is queued and before the caller is told it was accepted.

Recovery of an event that was logged but never queued (the publisher died between
its commit and the enqueue, or Redis was down): each logged batch has a row in
``log_batches`` until it is queued, and every ``statsworker worker`` sweeps the log, at
start and then every :data:`SWEEP_INTERVAL` seconds, for batches logged more than
:data:`SWEEP_GRACE` seconds ago and still there, and publishes their events again
(and those of rows logged before ``log_batches`` existed and never marked queued).
The grace leaves a live publisher time to enqueue what it has just logged; a repeat is
harmless anyway, since applying an event twice changes nothing. Several workers may
sweep at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from events.publisher import Publisher
from worker.connections import Connections
from worker.errors import unreachable
from worker.eventlog import EventLog, open_log, utcnow
from worker.metrics import record_rejected

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 30.0
"""Seconds between two sweeps of a running worker for logged but unqueued events."""

SWEEP_GRACE = 60.0
"""An unqueued event is recovered once it has been in the log this many seconds."""

SWEEP_BATCH = 10_000
"""Events read from the log per round of a sweep."""


def event_log(conns: Connections) -> EventLog:
    """The event log of ``conns.settings.database_url`` (SQLite by default)."""
    return open_log(conns.settings.database_url)


def make_publisher(conns: Connections) -> Publisher:
    """A publisher that logs each batch, then queues it, counting rejections in the metrics."""
    settings = conns.settings

    def count(n: int) -> None:
        record_rejected(conns.state, settings.key_prefix, n)

    return Publisher(conns.queue, settings.batch_size, sink=event_log(conns), on_rejected=count)


def recover_unqueued(conns: Connections, grace: float | None = None) -> int:
    """Queue the events logged more than ``grace`` seconds ago that never reached the queue.

    Args:
        grace: seconds; :data:`SWEEP_GRACE` by default.

    Returns:
        How many events were queued again.
    """
    eventlog = event_log(conns)
    publisher = make_publisher(conns)
    cutoff = utcnow() - dt.timedelta(seconds=SWEEP_GRACE if grace is None else grace)
    total = 0
    while True:
        found = eventlog.unqueued(cutoff, limit=SWEEP_BATCH)
        if not found.batches and not found.legacy:
            break
        total += publisher.publish(row.event() for row in found.rows).accepted
        eventlog.settle(found)  # only now that they are queued again
        if len(found.rows) < SWEEP_BATCH:
            break
    if total:
        log.warning("recovered %d logged event(s) that had not reached the queue", total)
    return total


class Sweeper(threading.Thread):
    """Runs :func:`recover_unqueued` every ``interval`` seconds until stopped."""

    def __init__(self, conns: Connections, interval: float | None = None) -> None:
        super().__init__(name="statsworker-sweeper", daemon=True)
        self.conns = conns
        self.interval = SWEEP_INTERVAL if interval is None else interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            sweep_once(self.conns)

    def stop(self) -> None:
        """Ask the thread to end after its current sweep."""
        self.stopped.set()


def sweep_once(conns: Connections, told: bool = True) -> str | None:
    """One sweep. A failure is never raised: a worker keeps applying the queue whatever
    the log's state.

    Args:
        told: log a failure (a burst worker says it in its last line instead); a failure
            that is not about a server, a bug, is logged with its traceback anyway.

    Returns:
        Why the sweep failed, in one line (a server that cannot be used as the command
        line says it), or None when it did not.
    """
    try:
        recover_unqueued(conns)
        return None
    except Exception as exc:
        reason = unreachable(exc, conns.settings.redis_url, conns.settings.database_url)
        if reason is None:
            log.exception("sweeping the event log for unqueued events failed")
            lines = str(exc).strip().splitlines()
            return f"{type(exc).__name__}: {lines[0] if lines else ''}"
        if told:
            log.warning(
                "the event log was not swept for events that never reached the queue: %s",
                reason,
            )
        return reason


def start_sweeper(conns: Connections, burst: bool) -> tuple[Sweeper | None, str | None]:
    """Sweep now; unless ``burst``, keep sweeping in a daemon thread.

    Returns:
        The thread (None with ``burst``), and why the first sweep failed, if it did.
    """
    failed = sweep_once(conns, told=not burst)
    if burst:
        return None, failed
    sweeper = Sweeper(conns)
    sweeper.start()
    return sweeper, failed
