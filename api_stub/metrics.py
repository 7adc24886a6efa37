"""``GET /metrics``: counters shared through Redis, rendered in Prometheus text format."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from worker.connections import Connections
from worker.metrics import LATENCY_BUCKETS, read_counters


class _StateCollector(Collector):
    def __init__(self, conns: Connections) -> None:
        self.conns = conns

    def collect(self) -> Iterator[Any]:
        conns = self.conns
        counters = read_counters(conns.state, conns.settings.key_prefix)
        applied = CounterMetricFamily(
            "statsworker_events_applied", "Events applied by workers, by type", labels=["type"]
        )
        for field, value in sorted(counters.items()):
            if field.startswith("applied:"):
                applied.add_metric([field.removeprefix("applied:")], float(value))
        yield applied
        yield CounterMetricFamily(
            "statsworker_events_rejected",
            "Events rejected as invalid",
            value=float(counters.get("rejected", 0)),
        )
        buckets = []
        cumulative = 0.0
        for bound in LATENCY_BUCKETS:
            cumulative += float(counters.get(f"apply_le:{bound}", 0))
            buckets.append((str(bound), cumulative))
        cumulative += float(counters.get("apply_le:+Inf", 0))
        buckets.append(("+Inf", cumulative))
        yield HistogramMetricFamily(
            "statsworker_apply_seconds",
            "Time to apply one queued batch",
            buckets=buckets,
            sum_value=float(counters.get("apply_seconds", 0.0)),
        )
        queue = conns.queue
        yield GaugeMetricFamily(
            "statsworker_queue_depth", "Batches waiting on the queue", value=float(len(queue))
        )
        yield GaugeMetricFamily(
            "statsworker_failed_jobs",
            "Batches in the failed registry",
            value=float(FailedJobRegistry(queue=queue).count),
        )
        lag = 0.0
        oldest = queue.get_job_ids(0, 1)
        try:
            job = Job.fetch(oldest[0], connection=conns.raw, serializer=JSONSerializer)
        except (IndexError, NoSuchJobError):  # no job waits, or a worker just took and ended it
            job = None
        if job is not None and job.enqueued_at is not None:
            lag = max(0.0, time.time() - job.enqueued_at.timestamp())
        yield GaugeMetricFamily(
            "statsworker_lag_seconds", "Age of the oldest queued batch", value=lag
        )


def render_metrics(conns: Connections) -> tuple[bytes, str]:
    """The exposition body and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StateCollector(conns))
    return generate_latest(registry), CONTENT_TYPE_LATEST
