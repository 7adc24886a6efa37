"""Benchmark of ``statsworker rebuild``: events replayed from the log per second.

    python bench/rebuild.py                      # SQLite log, 3 runs
    python bench/rebuild.py --pg --runs 5        # PostgreSQL log (a private schema of `test`)

Loads the 35,425 Grateful Dead performances of ../shared/data as events into a fresh
event log, then rebuilds the state on the real Redis under a private key prefix, and
prints the events per second of each run (target: 50,000). Every key and schema it
makes is removed at the end.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa

from events.fields import slugify
from events.schemas import Event, parse_event
from stats.settings import Settings
from worker import migrations
from worker.connections import Connections
from worker.eventlog import EventLog, make_engine
from worker.rebuild import Rebuilder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "grateful_dead_setlists.csv"
TARGET = 50_000
"""Events per second a rebuild must replay."""


def events() -> list[Event]:
    """One ``performance.recorded`` per row of the Grateful Dead data set."""
    out = []
    with DATA.open(encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f)):
            out.append(
                parse_event(
                    {
                        "type": "performance.recorded",
                        "event_id": f"gd-{i}",
                        "occurred_at": f"{row['show_date']}T00:00:00Z",
                        "vertical": "grateful-dead",
                        "performance_id": f"{row['show_id']}:{row['set_name']}:{row['position']}",
                        "show_id": row["show_id"],
                        "show_date": row["show_date"],
                        "song": slugify(row["song_title"]),
                        "song_title": row["song_title"],
                    }
                )
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg", action="store_true", help="log in PostgreSQL instead of SQLite")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    tmp = tempfile.TemporaryDirectory()
    if args.pg:
        admin = sa.create_engine(args.pg_url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = f"{args.pg_url}?options=-csearch_path%3D{schema}"
        engine = make_engine(url)
        migrations.upgrade(engine)
        engine.dispose()
    else:
        url = f"sqlite:///{tmp.name}/events.db"
    settings = Settings(redis_url=args.redis, key_prefix=prefix, database_url=url)
    conns = Connections.from_settings(settings)
    log = EventLog(url)
    try:
        stream = events()
        started = time.perf_counter()
        for start in range(0, len(stream), 1000):
            log.append(stream[start : start + 1000])
        print(f"logged {len(stream)} events in {time.perf_counter() - started:.2f} s")
        rates = []
        for run in range(args.runs):
            report = Rebuilder(conns, log).run()
            rates.append(report.rate)
            print(f"run {run + 1}: {report.events} events in {report.seconds:.3f} s, "
                  f"{report.rate:,.0f} events/s")  # fmt: skip
        best, median = max(rates), statistics.median(rates)
        verdict = "meets" if median >= TARGET else "misses"
        print(f"rebuild: median {median:,.0f} events/s, best {best:,.0f} ({verdict} {TARGET:,})")
        return 0
    finally:
        log.dispose()
        for key in conns.state.scan_iter(f"{prefix}:*", count=1000):
            conns.state.delete(key)
        if args.pg:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
