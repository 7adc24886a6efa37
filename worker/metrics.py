"""Operational counters kept in Redis, so every worker and API process adds to the same ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stats import keys

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the apply-latency histogram."""


def record_apply(
    client: Any, prefix: str, applied: Mapping[str, int], rejected: int, seconds: float
) -> None:
    """Count a batch applied by a worker: events by type, rejections and its latency."""
    key = keys.metrics_key(prefix)
    pipe = client.pipeline(transaction=False)
    for kind, n in applied.items():
        pipe.hincrby(key, f"applied:{kind}", n)
    if rejected:
        pipe.hincrby(key, "rejected", rejected)
    pipe.hincrby(key, "batches", 1)
    pipe.hincrbyfloat(key, "apply_seconds", seconds)
    bucket = next((b for b in LATENCY_BUCKETS if seconds <= b), None)
    pipe.hincrby(key, f"apply_le:{bucket if bucket is not None else '+Inf'}", 1)
    pipe.execute()


def record_rejected(client: Any, prefix: str, n: int) -> None:
    """Count events rejected at the door (publish, ``POST /events``, rows an import skipped)."""
    if n:
        client.hincrby(keys.metrics_key(prefix), "rejected", n)


def read_counters(client: Any, prefix: str) -> dict[str, str]:
    """Every counter, raw."""
    return dict(client.hgetall(keys.metrics_key(prefix)))
