"""The publisher's rate with the event log on SQLite and on PostgreSQL, queue left out.

    python bench/publish_log.py [--batch N] [--runs N] [--events N] [--pg-url URL] [--lines]

``Publisher.publish_objects`` validates the real Grateful Dead events (35,425), writes
each batch to the log, marks the batch before it queued, and hands the batch to a
queue that keeps nothing, so the figure is validation plus the log's writes. Each run
uses a fresh log: an SQLite file in a temp dir, and a private schema of PostgreSQL
database ``test`` (``--pg-url`` or ``STATSWORKER_BENCH_PG_URL``; dropped afterwards).
Prints the median of ``--runs`` runs per log. With ``--lines`` it also publishes the
events as JSON Lines through ``Publisher.publish_lines`` (SQLite log), read straight and
followed as ``statsworker publish -`` follows a pipe, runs taking turns.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa

from bench import data
from bench.seed_sql import DEFAULT_PG_URL
from events.publisher import Publisher
from worker.cli import tune_gc
from worker.eventlog import EventLog


class _NoQueue:
    """Takes every batch and keeps nothing: the rate is the publisher's and the log's."""

    def enqueue_many(self, jobs: list[Any]) -> None:
        pass


@contextmanager
def sqlite_log() -> Iterator[str]:
    tmp = Path(tempfile.mkdtemp(prefix="statsworker-publog-"))
    try:
        yield f"sqlite:///{tmp / 'log.db'}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def postgres_log(url: str) -> Iterator[str]:
    schema = f"publog_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        engine.dispose()


def rate(url: str, events: list[dict[str, Any]], batch: int, lines: bool | None = None) -> float:
    """Events a second through a publisher writing a fresh log at ``url``: the objects, or
    with ``lines`` set the same events as JSON Lines (``True``: followed)."""
    log = EventLog(url, migrate=True)
    try:
        publisher = Publisher(_NoQueue(), batch_size=batch, sink=log)  # type: ignore[arg-type]
        text = [json.dumps(e) for e in events] if lines is not None else []
        started = time.perf_counter()
        if lines is None:
            report = publisher.publish_objects(events)
        else:
            report = publisher.publish_lines(text, follow_stream=lines)
        took = time.perf_counter() - started
    finally:
        log.dispose()
    assert report.accepted == len(events), report.rejected[:3]
    return len(events) / took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=1000, help="events per batch (1000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=0, help="use the first N (default: all)")
    parser.add_argument("--lines", action="store_true", help="JSON Lines, straight and followed")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("STATSWORKER_BENCH_PG_URL", DEFAULT_PG_URL),
        help="empty: SQLite only",
    )
    args = parser.parse_args(argv)
    tune_gc()
    events = [data.event_dict(p) for p in data.scaled_plays(data.load_plays(), 1)]
    if args.events:
        events = events[: args.events]
    logs = [("SQLite", sqlite_log)]
    if args.pg_url:
        logs.append(("PostgreSQL", lambda: postgres_log(args.pg_url)))
    for name, make in logs:
        rates = []
        for _ in range(args.runs):
            with make() as url:
                rates.append(rate(url, events, args.batch))
        _report(f"publisher with the {name} log, batches of {args.batch}", rates)
    if args.lines:
        by_mode: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.runs):
            for followed in (False, True):
                with sqlite_log() as url:
                    by_mode[followed].append(rate(url, events, args.batch, lines=followed))
        for followed, rates in by_mode.items():
            how = "followed" if followed else "read straight"
            _report(f"JSON Lines {how}, SQLite log, batches of {args.batch}", rates)
    return 0


def _report(label: str, rates: list[float]) -> None:
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    print(f"{label}: {statistics.median(rates):,.0f} events/s (median of {len(rates)}: {runs})")


if __name__ == "__main__":
    raise SystemExit(main())
