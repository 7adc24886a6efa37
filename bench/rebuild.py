"""Benchmark of ``statsworker rebuild``: events replayed from the log per second.

    python bench/rebuild.py                      # SQLite log, 3 runs
    python bench/rebuild.py --pg --runs 5        # PostgreSQL log (a private schema of `test`)
    python bench/rebuild.py --redis redis://...  # a given Redis instead of a private one

Loads the 35,425 Grateful Dead performances of ../shared/data as events into a fresh
event log, then rebuilds the state into a Redis of its own (a redis-server started on a
free port, so other clients' load on a shared server is not measured), emptied before
each run as after a loss (``--over-live`` rebuilds over the previous run's state, which
then has to be freed too), and prints the events per second of each run (target:
50,000). Every key, schema and process it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import csv
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
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


def _redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the Redis server has used (counts other clients' work on a shared one)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on a free port, without persistence; stopped after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg", action="store_true", help="log in PostgreSQL instead of SQLite")
    parser.add_argument("--redis", help="Redis URL (default: a private redis-server)")
    parser.add_argument(
        "--over-live",
        action="store_true",
        help="rebuild over the previous run's state (default: into an emptied Redis)",
    )
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    if args.redis:
        return run(args, args.redis)
    with private_redis() as url:
        return run(args, url)


def run(args: argparse.Namespace, redis_url: str) -> int:
    """Load the log, rebuild ``args.runs`` times, print the rates."""

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
    settings = Settings(redis_url=redis_url, key_prefix=prefix, database_url=url)
    conns = Connections.from_settings(settings)
    log = EventLog(url)
    try:
        stream = events()
        started = time.perf_counter()
        for start in range(0, len(stream), 1000):
            log.append(stream[start : start + 1000])
        print(f"logged {len(stream)} events in {time.perf_counter() - started:.2f} s")
        rates, cpu_rates = [], []
        for run in range(args.runs):
            if not args.over_live:  # Redis lost everything: the case rebuild is for
                for key in conns.state.scan_iter(f"{prefix}:*", count=1000):
                    conns.state.delete(key)
            redis_cpu, cpu = _redis_cpu(conns.state), time.process_time()
            report = Rebuilder(conns, log).run()
            cpu = time.process_time() - cpu + _redis_cpu(conns.state) - redis_cpu
            rates.append(report.rate)
            cpu_rates.append(report.events / cpu)
            print(f"run {run + 1}: {report.events} events in {report.seconds:.3f} s, "
                  f"{report.rate:,.0f} events/s; {cpu:.3f} CPU-s (this process + Redis), "
                  f"{report.events / cpu:,.0f} events per CPU-s")  # fmt: skip
        best, median = max(rates), statistics.median(rates)
        verdict = "meets" if median >= TARGET else "misses"
        print(f"rebuild: median {median:,.0f} events/s, best {best:,.0f} ({verdict} {TARGET:,}); "
              f"median {statistics.median(cpu_rates):,.0f} events per CPU-second "
              "(an idle machine, without overlap of the two processes)")  # fmt: skip
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
