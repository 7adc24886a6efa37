"""Ingest throughput, end to end: publish (validate, enqueue) -> workers -> state applied."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rq import Queue
from rq.registry import FailedJobRegistry

from bench.procs import delete_pattern
from events.publisher import EventSink, Publisher
from stats import keys

POLL_SECONDS = 0.002
"""How often the applied counter is read while waiting for the workers."""


@dataclass(frozen=True)
class IngestRun:
    """One publish-to-applied measurement."""

    events: int
    seconds: float
    publish_seconds: float
    cpu: Mapping[str, float] = field(default_factory=dict)
    """CPU seconds used during the run, by part: ``publisher`` (this process while it
    published) and whatever the caller's meter names (workers, Redis)."""

    def cpu_us(self, part: str) -> float:
        """CPU microseconds per event of ``part``."""
        return self.cpu[part] * 1e6 / self.events

    @property
    def publish_rate(self) -> float:
        """Events per second of the publisher alone (validate, log, enqueue)."""
        return self.events / self.publish_seconds

    @property
    def rate(self) -> float:
        """Events per second, end to end."""
        return self.events / self.seconds


def applied_count(client: Any, prefix: str) -> int:
    """Events the workers have applied (won or stale) under ``prefix``, from the metrics hash."""
    values = client.hmget(
        keys.metrics_key(prefix), "applied:performance.recorded", "applied:performance.retracted"
    )
    return sum(int(v) for v in values if v is not None)


def failed_reasons(queue: Queue) -> list[str]:
    """The ids of the queue's failed jobs (a failing run says why instead of timing out)."""
    return list(FailedJobRegistry(queue=queue).get_job_ids())


def reset_state(client: Any, prefix: str) -> None:
    """Forget every state and metrics key of ``prefix`` (the queue's keys stay)."""
    delete_pattern(client, keys.all_keys_pattern(prefix))


def publish(publisher: Publisher, events: Sequence[dict[str, Any]]) -> None:
    """Publish ``events`` as ``POST /events`` does; every one of them must be accepted."""
    report = publisher.publish_objects(events)
    if report.rejected:
        raise RuntimeError(f"benchmark events were rejected: {report.rejected[:3]}")


def wait_applied(client: Any, queue: Queue, prefix: str, n: int, timeout: float) -> None:
    """Wait until the workers have applied ``n`` events under ``prefix``; a timeout says
    how far they got and which jobs failed."""
    deadline = time.monotonic() + timeout
    while applied_count(client, prefix) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{applied_count(client, prefix)} of {n} events applied after "
                f"{timeout:.0f} s; failed jobs: {failed_reasons(queue)[:5]}"
            )
        time.sleep(POLL_SECONDS)


def ingest_once(
    client: Any,
    queue: Queue,
    prefix: str,
    events: Sequence[dict[str, Any]],
    batch_size: int,
    timeout: float,
    sink: EventSink | None = None,
    meter: Callable[[], Mapping[str, float]] | None = None,
) -> IngestRun:
    """Publish ``events`` in jobs of ``batch_size`` and wait until all are applied.

    ``sink`` is the event log the publisher writes each batch to before queueing it,
    as the product's publisher does. ``meter`` gives the CPU seconds used so far by
    the other processes of the run, by name; the run records what each used.
    """
    reset_state(client, prefix)
    publisher = Publisher(queue, batch_size=batch_size, sink=sink)
    before = dict(meter()) if meter is not None else {}
    cpu_started = time.process_time()
    started = time.perf_counter()
    publish(publisher, events)
    published = time.perf_counter() - started
    publisher_cpu = time.process_time() - cpu_started
    wait_applied(client, queue, prefix, len(events), timeout)
    seconds = time.perf_counter() - started
    cpu = {"publisher": publisher_cpu}
    if meter is not None:
        cpu.update({part: used - before.get(part, 0.0) for part, used in meter().items()})
    return IngestRun(len(events), seconds, published, cpu)


def drain_once(
    client: Any,
    queue: Queue,
    prefix: str,
    events: Sequence[dict[str, Any]],
    batch_size: int,
    timeout: float,
    start_workers: Callable[[], None],
) -> IngestRun:
    """Fill the queue with ``events`` while no worker runs, then start the workers and
    time them from the moment all have registered until every event is applied: the
    workers' own rate, without a publisher beside them. Events applied before the last
    worker registered are left out of the rate."""
    reset_state(client, prefix)
    publish(Publisher(queue, batch_size=batch_size), events)
    start_workers()
    started = time.perf_counter()
    done_before = applied_count(client, prefix)
    wait_applied(client, queue, prefix, len(events), timeout)
    seconds = time.perf_counter() - started
    return IngestRun(len(events) - done_before, seconds, seconds)


def median_rate(runs: Sequence[IngestRun]) -> float:
    """Median events per second over several runs."""
    return statistics.median(r.rate for r in runs)
