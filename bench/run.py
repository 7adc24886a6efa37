"""Run the statsworker benchmark and print one table.

    python bench/run.py                 # full: 35k, 350k and 3.5M performances
    python bench/run.py --quick         # seconds: what CI runs so the benchmark cannot rot
    python bench/run.py --scale 1,10    # pick the scales (multiples of the real 35,425)

Ingest is measured end to end (publish -> applied) with ``statsworker worker``
processes on a private queue and key prefix; reads call each route in process and over
HTTP (``statsworker api`` on a free port); the SQL baselines run on a private schema of
PostgreSQL database ``test``. Every key, queue and schema the run makes is removed at
the end, whatever happens.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import signal
import statistics
import sys
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from rq import Queue
from rq.registry import FailedJobRegistry

from bench import data, ingest, machine, reads, seed_sql, state
from bench.procs import (
    Children,
    PrivateRedis,
    cpu_seconds,
    delete_pattern,
    start_api,
    start_workers,
    stop_workers,
)
from bench.table import Table, ms, rate, times, times2
from events.publisher import job_queue
from stats.setlists import SetlistStore
from stats.settings import Settings
from worker.cli import tune_gc
from worker.eventlog import EventLog

DEFAULT_REDIS_URL = os.environ.get("STATSWORKER_REDIS_URL", "redis://127.0.0.1:6379/0")
DEFAULT_PG_URL = os.environ.get("STATSWORKER_BENCH_PG_URL", seed_sql.DEFAULT_PG_URL)
TARGET = "target"
"""The last column: what the project aims for (p50 where a latency is meant)."""
WARM_UP_EVENTS, WARM_UP_BATCH = 4000, 100
"""The untimed publish after workers start: 40 jobs, so that each worker gets some."""
CPU_PARTS = ("publisher", "workers", "redis")
"""The processes of an ingest run whose CPU time per event the table shows."""
MIN_PLAYS, LIMIT = 5, 50
"""The gaps read every baseline answers (the route's defaults)."""


@dataclass(frozen=True)
class Plan:
    """How much the run measures."""

    scales: list[float]
    runs: int
    ingest_events: int
    baseline_events: int
    batch_sizes: tuple[int, int]
    drain_scale: float
    read_calls: int
    http_calls: int
    rounds: int
    lazy_max_scale: float
    sql_budget_seconds: float
    spin_iterations: int
    spin_samples: int


FULL = Plan(
    scales=[1, 10, 100],
    runs=3,
    ingest_events=0,  # the whole data set
    baseline_events=1000,
    batch_sizes=(1000, 5000),
    drain_scale=3,
    read_calls=300,
    http_calls=150,
    rounds=5,
    lazy_max_scale=1,
    sql_budget_seconds=120,
    spin_iterations=3_000_000,
    spin_samples=7,
)
QUICK = Plan(
    scales=[0.1],
    runs=1,
    ingest_events=2000,
    baseline_events=60,
    batch_sizes=(200, 1000),
    drain_scale=0.1,
    read_calls=20,
    http_calls=10,
    rounds=2,
    lazy_max_scale=1,
    sql_budget_seconds=20,
    spin_iterations=300_000,
    spin_samples=1,
)


@dataclass
class Context:
    """What the run owns, for the final clean-up."""

    client: Any
    raw: Any
    redis_url: str
    pg_url: str
    run_id: str = field(default_factory=lambda: f"swbench{uuid.uuid4().hex[:8]}")
    prefixes: list[str] = field(default_factory=list)
    queues: list[Queue] = field(default_factory=list)

    def prefix(self, what: str) -> str:
        """A fresh private key prefix, removed at the end."""
        p = f"{self.run_id}{what}"
        self.prefixes.append(p)
        return p

    def cleanup(self) -> None:
        """Delete every key, queue and failed job this run made."""
        for queue in self.queues:
            registry = FailedJobRegistry(queue=queue)
            for job_id in registry.get_job_ids():
                self.raw.delete(f"rq:job:{job_id}")
            delete_pattern(self.raw, f"*{queue.name}*")
        for p in self.prefixes:
            state.drop_prefix(self.raw, p)


def log(message: str) -> None:
    """Progress on stderr, so stdout holds the table only."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def label_of(n: int) -> str:
    """``35k``, ``350k``, ``3.5M``: a column name for a number of performances."""
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1000:.0f}k" if n >= 10_000 else f"{n / 1000:.1f}k"


def median_time(fn: Callable[[], Any], runs: int, budget: float) -> tuple[float, Any, int]:
    """Median seconds of up to ``runs`` calls (fewer when over ``budget`` s), last answer."""
    samples: list[float] = []
    answer: Any = None
    started = time.monotonic()
    while len(samples) < runs and (not samples or time.monotonic() - started < budget):
        t = time.perf_counter()
        answer = fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples), answer, len(samples)


# -- ingest --------------------------------------------------------------------------


def bench_machine(plan: Plan, table: Table, column: str) -> None:
    """Whether the cores slow each other down when both are busy (``bench/machine.py``):
    what two workers can win at best, with the publisher and Redis beside them."""
    log(f"machine: a busy loop alone and two at once, {plan.spin_samples} sample(s)")
    speeds = sorted(machine.pair_speed(plan.spin_iterations) for _ in range(plan.spin_samples))
    table.section("machine")
    spread = f" ({times2(speeds[0])}-{times2(speeds[-1])})" if len(speeds) > 1 else ""
    table.add(
        f"two busy processes at once, speed of each / one alone, median of {len(speeds)}",
        {column: times2(statistics.median(speeds)) + spread},
    )


def bench_ingest(ctx: Context, plan: Plan, table: Table, column: str) -> None:
    """Publish -> applied throughput, 1 and 2 workers, two batch sizes, and a job per event."""
    plays = data.load_plays()
    events = [data.event_dict(p) for p in data.scaled_plays(plays, 1)]
    if plan.ingest_events:
        events = events[: plan.ingest_events]
    today = data.last_date(list(data.scaled_plays(plays, 1)))
    # A redis-server of its own: on the shared one, another client's long script
    # stalls every round trip of the workers (job-per-event fell 8x so, once).
    server = PrivateRedis()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    raw = redis.Redis.from_url(server.url)
    prefix = ctx.prefix("i")
    queue = job_queue(f"{prefix}-q", raw)
    children = Children(server.url, prefix, queue.name, today)
    timeout = max(120.0, len(events) / 200)
    small, big = plan.batch_sizes
    results: dict[str, float] = {}
    publish: dict[str, float] = {}
    logs = count()

    def meter() -> dict[str, float]:
        # Stopped workers have left children.procs: only the live ones are counted.
        workers = [cpu_seconds(p.pid) for p in children.procs]
        return {
            "workers": sum(c for c in workers if c is not None),
            "redis": cpu_seconds(server.proc.pid) or 0.0,
        }

    def once(batch: list[dict[str, Any]], size: int, logged: bool = True) -> ingest.IngestRun:
        # A fresh SQLite event log per run (the product's default log), so every run
        # logs new events rather than finding them already there.
        if not logged:
            return ingest.ingest_once(client, queue, prefix, batch, size, timeout, meter=meter)
        sink = EventLog(f"sqlite:///{children.tmp / f'publisher-{next(logs)}.db'}")
        try:
            return ingest.ingest_once(client, queue, prefix, batch, size, timeout, sink, meter)
        finally:
            sink.dispose()

    runs: dict[str, list[ingest.IngestRun]] = defaultdict(list)
    try:
        start_workers(children, queue, 1)
        log(f"ingest: job-per-event baseline, {plan.baseline_events} events")
        base = [once(events[: plan.baseline_events], 1) for _ in range(plan.runs)]
        results["baseline"] = ingest.median_rate(base)
        # One worker and two take turns round by round, so that the machine's speed,
        # which drifts over minutes, weighs on both alike; the ratio row pairs them by round.
        for round_no in range(plan.runs):
            for workers in (1, 2):
                stop_workers(children, queue, workers)
                start_workers(children, queue, workers)
                # Untimed: a worker just started still opens its event log and sweeps it,
                # and its first jobs run cold; every worker of the run takes a few jobs.
                once(events[:WARM_UP_EVENTS], WARM_UP_BATCH, logged=False)
                for size in (small, big):
                    log(
                        f"ingest round {round_no + 1}/{plan.runs}: {workers} worker(s),"
                        f" batches of {size}, {len(events)} events"
                    )
                    runs[f"{workers}:{size}"].append(once(events, size))
                if workers == 1:
                    log(f"ingest: 1 worker, batches of {big}, publisher without the event log")
                    runs["nolog"].append(once(events, big, logged=False))
        for name, done in runs.items():
            results[name] = ingest.median_rate(done)
            publish[name] = statistics.median(r.publish_rate for r in done)
        check = SetlistStore(client, prefix).stats(data.VERTICAL, today)
        unique = len({e["performance_id"] for e in events})
        ok = check.total_performances == unique
        table.notes.append(
            f"ingest state check: {check.total_performances} performances applied for "
            f"{unique} published ({'ok' if ok else 'MISMATCH'})"
        )
        # The workers alone: the queue filled first, then one or two workers drain it.
        drain = [data.event_dict(p) for p in data.scaled_plays(plays, plan.drain_scale)]
        for round_no in range(plan.runs):
            for workers in (1, 2):
                log(
                    f"drain round {round_no + 1}/{plan.runs}: {workers} worker(s),"
                    f" {len(drain)} events in jobs of {small}"
                )
                stop_workers(children, queue, 0)

                def start(n: int = workers) -> None:
                    start_workers(children, queue, n)

                runs[f"drain:{workers}"].append(
                    ingest.drain_once(client, queue, prefix, drain, small, timeout, start)
                )
        drained = len(drain)
    finally:
        children.stop_all()
        server.stop()
    table.section(
        f"ingest, {len(events):,} events, publish -> applied (events/s, median of {plan.runs})"
    )
    table.notes.append(
        "ingest: the publisher writes each batch to a fresh SQLite event log before queueing "
        "it, as the product's publisher does; the 'no event log' rows leave that out"
    )
    for workers in (1, 2):
        for size in (small, big):
            table.add(
                f"ingest {workers} worker{'s' if workers > 1 else ''}, batches of {size}",
                {
                    column: rate(results[f"{workers}:{size}"]),
                    TARGET: ">= 20,000, aim 50,000" if workers == 1 else "no slower than 1",
                },
            )
    for size in (small, big):
        pairs = zip(runs[f"2:{size}"], runs[f"1:{size}"], strict=True)
        table.add(
            f"ingest 2 workers / 1 worker, batches of {size}, same round",
            {
                column: times2(statistics.median(two.rate / one.rate for two, one in pairs)),
                TARGET: ">= 1.00x",
            },
        )
    for workers in (1, 2):
        table.add(
            f"workers alone, draining {drained:,} queued events in jobs of {small},"
            f" {workers} worker{'s' if workers > 1 else ''} (events/s)",
            {column: rate(ingest.median_rate(runs[f"drain:{workers}"]))},
        )
    pairs = zip(runs["drain:2"], runs["drain:1"], strict=True)
    table.add(
        "workers alone, 2 workers / 1 worker, same round",
        {column: times2(statistics.median(two.rate / one.rate for two, one in pairs))},
    )
    for workers in (1, 2):
        done = runs[f"{workers}:{small}"]
        parts = [statistics.median(r.cpu_us(part) for r in done) for part in CPU_PARTS]
        table.add(
            f"CPU us/event, publisher + workers + Redis, {workers} worker"
            f"{'s' if workers > 1 else ''}, batches of {small}",
            {column: " + ".join(f"{p:.1f}" for p in parts) + f" = {sum(parts):.1f}"},
        )
    table.add(
        f"publisher alone (validate, log, enqueue), batches of {big}",
        {column: rate(publish[f"1:{big}"])},
    )
    table.add(
        f"ingest 1 worker, batches of {big}, no event log in the publisher",
        {column: rate(results["nolog"])},
    )
    table.add(
        f"publisher alone without the event log, batches of {big}",
        {column: rate(publish["nolog"])},
    )
    table.add(
        f"ingest job-per-event baseline (1 worker, {plan.baseline_events} events)",
        {column: rate(results["baseline"])},
    )
    best_one = max(results[f"1:{small}"], results[f"1:{big}"])
    table.add(
        "ingest speed-up, best 1-worker batched / job-per-event",
        {column: times(best_one / results["baseline"]), TARGET: ">= 100x"},
    )


# -- reads, SQL and memory per scale ---------------------------------------------------


@dataclass
class ScaleResult:
    """Everything measured at one scale."""

    performances: int = 0
    load_seconds: float = 0.0
    bytes_info: float = 0.0
    bytes_usage: float = 0.0
    usage: list[state.KeyUsage] = field(default_factory=list)
    local: dict[str, reads.Latency] = field(default_factory=dict)
    http: dict[str, reads.Latency] = field(default_factory=dict)
    seed_loop: float | None = None
    seed_runs: int = 0
    seed_lazy: float | None = None
    window: float | None = None
    agree: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)


def top_songs(plays: list[data.ScaledPlay], n: int = 8) -> list[str]:
    """The most played songs of the benchmark band, for the one-song route."""
    counts: dict[str, int] = {}
    for p in plays:
        if p.vertical == data.VERTICAL:
            counts[p.song] = counts.get(p.song, 0) + 1
    return sorted(counts, key=lambda s: (-counts[s], s))[:n]


@dataclass
class Loaded:
    """One scale's state in Redis, kept while the reads of every scale are timed."""

    label: str
    scale: float
    prefix: str
    today: Any
    songs: list[str]
    conns: Any
    redis_gaps: list[seed_sql.GapAnswer]
    result: ScaleResult


def load_scale(ctx: Context, scale: float, base: list[data.Play], label: str) -> Loaded:
    """Load one scale into Redis under a prefix of its own; measure its memory."""
    from worker.connections import Connections

    res = ScaleResult()
    sample = list(data.scaled_plays(base, min(scale, 1)))
    songs = top_songs(sample)
    today = data.scaled_last_date(base, scale)
    prefix = ctx.prefix(f"s{len(ctx.prefixes)}")
    store = SetlistStore(ctx.client, prefix)
    before = state.used_memory(ctx.client)
    started = time.perf_counter()
    res.performances = state.load_state(store, data.scaled_plays(base, scale), today)
    res.load_seconds = time.perf_counter() - started
    time.sleep(0.2)  # let lazy frees of other clients settle before reading INFO
    res.bytes_info = (state.used_memory(ctx.client) - before) / res.performances
    res.usage = state.usage_by_key(ctx.client, prefix)
    res.bytes_usage = sum(u.bytes for u in res.usage) / res.performances
    log(
        f"scale {scale}: {res.performances:,} performances loaded in {res.load_seconds:.1f} s "
        f"({res.performances / res.load_seconds:,.0f}/s)"
    )
    conns = Connections(Settings(key_prefix=prefix, today=today), ctx.client, ctx.raw)
    res.sizes = reads.answer_sizes(conns, data.VERTICAL, songs[0])
    redis_gaps = [
        seed_sql.GapAnswer(r.song_slug, r.total_plays, r.last_played, r.shows_since_played)
        for r in store.gaps(data.VERTICAL, today, MIN_PLAYS, LIMIT)
    ]
    return Loaded(label, scale, prefix, today, songs, conns, redis_gaps, res)


def time_reads(ctx: Context, plan: Plan, loaded: list[Loaded]) -> bool:
    """Every route of every scale, in process and over HTTP (an API per scale), the
    scales taking turns (``reads.interleaved``); True when done."""
    local = reads.interleaved(
        {s.label: reads.in_process_timer(s.conns, data.VERTICAL, s.songs) for s in loaded},
        plan.read_calls,
        plan.rounds,
    )
    apis = [Children(ctx.redis_url, s.prefix, f"{s.prefix}-q", s.today) for s in loaded]
    conns: list[http.client.HTTPConnection] = []
    try:
        for s, children in zip(loaded, apis, strict=True):
            log(f"{s.label}: starting the API")
            port = start_api(children)
            conns.append(http.client.HTTPConnection("127.0.0.1", port, timeout=30))
        timers = {
            s.label: reads.http_timer(conn, data.VERTICAL, s.songs)
            for s, conn in zip(loaded, conns, strict=True)
        }
        log("reads over HTTP, the scales taking turns")
        over_http = reads.interleaved(timers, plan.http_calls, plan.rounds, http=True)
    finally:
        for conn in conns:
            conn.close()
        for children in apis:
            children.stop_all()
    for s in loaded:
        s.result.local, s.result.http = local[s.label], over_http[s.label]
    return True


def bench_sql(ctx: Context, plan: Plan, base: list[data.Play], s: Loaded) -> None:
    """The PostgreSQL baselines of the gaps read on the same data as ``s``."""
    if not ctx.pg_url:
        return
    res, scale = s.result, s.scale
    sql = seed_sql.SqlBaseline(ctx.pg_url)
    try:
        log(f"scale {scale}: loading PostgreSQL")
        sql.load(data.scaled_plays(base, scale))
        args = (data.VERTICAL, s.today, MIN_PLAYS, LIMIT)
        res.window, window_rows, _ = median_time(
            lambda: sql.window_query(*args), max(plan.runs, 5), plan.sql_budget_seconds
        )
        log(f"scale {scale}: seed-style loop")
        res.seed_loop, seed_rows, res.seed_runs = median_time(
            lambda: sql.seed_loop(*args), plan.runs, plan.sql_budget_seconds
        )
        res.agree.append(f"window {_agree(window_rows, s.redis_gaps)}")
        res.agree.append(f"seed loop {_agree(seed_rows, s.redis_gaps)}")
        if scale <= plan.lazy_max_scale:
            log(f"scale {scale}: seed-style loop, lazy ORM")
            res.seed_lazy, lazy_rows, _ = median_time(
                lambda: sql.seed_loop_lazy(*args), plan.runs, plan.sql_budget_seconds
            )
            res.agree.append(f"lazy loop {_agree(lazy_rows, s.redis_gaps)}")
    finally:
        sql.drop()


def _agree(rows: list[seed_sql.GapAnswer], redis_rows: list[seed_sql.GapAnswer]) -> str:
    return "agrees" if seed_sql.same_answers(rows, redis_rows) else "DISAGREES"


def bench_videos(ctx: Context, table: Table, column: str) -> None:
    """Redis bytes per stored video, on a private server (the deltas are a few MB)."""
    from events.schemas import parse_event
    from stats.videos import VideoStore

    events = [parse_event(e) for e in data.video_events()]
    videos = len({(e.creator, e.video_id) for e in events if e.type == "video.posted"})  # type: ignore[union-attr]
    server = PrivateRedis()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        prefix = "v"
        before = state.used_memory(client)
        VideoStore(client, prefix).apply(events)
        info = (state.used_memory(client) - before) / videos
        usage = state.usage_by_key(client, prefix)
    finally:
        server.stop()
    table.add(
        f"Redis bytes per video, INFO used_memory ({videos:,} videos)",
        {column: f"{info:,.0f}", TARGET: "<= 1,024"},
    )
    table.add(
        "Redis bytes per video, sum of MEMORY USAGE",
        {column: f"{sum(u.bytes for u in usage) / videos:,.0f}", TARGET: "<= 1,024"},
    )
    table.notes.append(
        "video memory measured on a private redis-server (on the shared one, other "
        "clients' keys move INFO by more than the videos take); keys: "
        + ", ".join(f"{u.name} {u.bytes / videos:,.0f} B/video ({u.encoding})" for u in usage)
    )


ROUTE_TARGETS = {"song (one song)": "p50 <= 1 ms", "stats": "p50 <= 1 ms"}
"""In-process targets of single-row reads; every other route is a list (p50 <= 3 ms)."""


def report_scales(table: Table, plan: Plan, results: dict[str, ScaleResult]) -> None:
    """The read, SQL and memory rows, a column per scale."""
    cols = list(results)
    first = results[cols[0]]
    for kind, title, target in (
        ("local", "reads in process: route function p50 / p99 (ms)", None),
        ("http", "reads over HTTP: p50 / p99 (ms)", "p50 <= 5 ms"),
    ):
        table.section(title)
        for route in reads.ROUTES:
            if route.label not in getattr(first, kind):
                continue  # timed in process only
            cells = {c: _p50_p99(getattr(r, kind)[route.label]) for c, r in results.items()}
            cells[TARGET] = target or ROUTE_TARGETS.get(route.label, "p50 <= 3 ms")
            table.add(route.label, cells)
    table.section(f"read growth: p50 at this scale / p50 at {cols[0]} (worst route)")
    for kind in ("local", "http"):
        cells = {TARGET: "<= 1.3x"}
        for c, r in results.items():
            ratio, label = max(
                (getattr(r, kind)[lbl].p50 / getattr(first, kind)[lbl].p50, lbl)
                for lbl in getattr(r, kind)
            )
            cells[c] = f"{times(ratio)} {label.split()[0]}"
        table.add(f"{'in process' if kind == 'local' else 'over HTTP'}, worst route", cells)
    if len(results) > 1:
        # Growth read against k: a route whose answer grows (trends: one row per month of
        # history) is O(k) by design, not a lookup that slows with the data.
        for c, r in list(results.items())[1:]:
            table.notes.append(
                f"{c}: in-process p50 vs {cols[0]} per route (rows answered): "
                + ", ".join(
                    f"{lbl.split(' (')[0]} {r.local[lbl].p50 / first.local[lbl].p50:.2f}x "
                    f"({first.sizes.get(lbl, 0)}->{r.sizes.get(lbl, 0)})"
                    for lbl in r.local
                )
            )
    if any(r.window is not None for r in results.values()):
        gaps_p50 = {c: r.local["gaps (50 rows)"].p50 for c, r in results.items()}
        table.section("gaps read, 50 rows: PostgreSQL baselines (ms) and statsworker's speed-up")
        table.add("seed-style per-song loop (ORM query per song)", _cells(results, "seed_loop"))
        table.add("seed-style loop with lazy ORM loading", _cells(results, "seed_lazy"))
        table.add("one window-function query, indexed", _cells(results, "window"))
        table.add("statsworker gaps in process p50", {c: ms(v) for c, v in gaps_p50.items()})
        for name, attr, target in (
            ("seed loop", "seed_loop", ">= 100x at 35k"),
            ("lazy loop", "seed_lazy", ""),
            ("window query", "window", ">= 10x at 35k"),
        ):
            cells = {
                c: times(getattr(r, attr) * 1e3 / gaps_p50[c])
                for c, r in results.items()
                if getattr(r, attr) is not None
            }
            table.add(f"speed-up vs {name} (x)", {**cells, TARGET: target})
        for c, r in results.items():
            table.notes.append(f"{c}: gaps answers vs statsworker: {', '.join(r.agree)}")
            if r.seed_runs and r.seed_runs < plan.runs:
                table.notes.append(f"{c}: seed loop ran {r.seed_runs} time(s) (time budget)")
    table.section("state in Redis")
    table.add("performances loaded", {c: f"{r.performances:,}" for c, r in results.items()})
    table.add(
        "load rate through SetlistStore.apply (events/s)",
        {c: rate(r.performances / r.load_seconds) for c, r in results.items()},
    )
    table.add(
        "Redis bytes per performance, INFO used_memory",
        {**{c: f"{r.bytes_info:,.0f}" for c, r in results.items()}, TARGET: "<= 150"},
    )
    table.add(
        "Redis bytes per performance, sum of MEMORY USAGE",
        {**{c: f"{r.bytes_usage:,.0f}" for c, r in results.items()}, TARGET: "<= 150"},
    )
    last = results[cols[-1]]
    table.notes.append(
        f"bytes per performance by key at {cols[-1]}: "
        + ", ".join(
            f"{u.name} {u.bytes / last.performances:,.1f} ({u.encoding})" for u in last.usage[:8]
        )
    )


def _p50_p99(latency: reads.Latency) -> str:
    return f"{ms(latency.p50)} / {ms(latency.p99)}"


def _cells(results: dict[str, ScaleResult], attr: str) -> dict[str, str]:
    return {
        c: ms(getattr(r, attr) * 1e3) for c, r in results.items() if getattr(r, attr) is not None
    }


# -- main ------------------------------------------------------------------------------


@contextmanager
def owned(ctx: Context) -> Iterator[Context]:
    """Clean up whatever the run made, on success, failure or interrupt."""
    try:
        yield ctx
    finally:
        log("cleaning up")
        ctx.cleanup()


def _fail_soft(failed: list[str], table: Table, name: str, fn: Callable[[], Any]) -> Any:
    """Run one section; a failure is noted under the table and the other sections go on."""
    try:
        return fn()
    except Exception as exc:
        log(f"{name} failed:\n{traceback.format_exc()}")
        failed.append(name)
        table.notes.append(f"FAILED: {name}: {type(exc).__name__}: {str(exc)[:300]}")
        return None


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds of everything (CI)")
    parser.add_argument(
        "--scale",
        help="comma-separated multiples of the real data for the read rows (default 1,10,100)",
    )
    parser.add_argument("--runs", type=int, help="runs per ingest and SQL figure (median)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="empty: skip the SQL rows")
    parser.add_argument("--skip-ingest", action="store_true", help="only reads, SQL and memory")
    parser.add_argument("--ingest-only", action="store_true", help="only the ingest rows")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the table goes to stdout, progress to stderr."""
    args = parse_args(argv)
    tune_gc()  # the publisher runs in this process: tune it as the statsworker command does
    # A stopped run still removes its keys, queue and schema (see ``owned``).
    signal.signal(signal.SIGTERM, _interrupted)
    plan = QUICK if args.quick else FULL
    if args.scale:
        plan = Plan(**{**plan.__dict__, "scales": [float(s) for s in args.scale.split(",")]})
    if args.ingest_only:
        plan = Plan(**{**plan.__dict__, "scales": []})
    if args.runs:
        plan = Plan(**{**plan.__dict__, "runs": args.runs})
    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    raw = redis.Redis.from_url(args.redis_url)
    client.ping()
    base = data.load_plays()
    # The ingest column is named after the data it publishes (all of it in a full run).
    labels = [label_of(int(len(base) * s)) for s in plan.scales]
    table = Table(columns=[*(labels or [label_of(len(base))]), TARGET])
    ctx = Context(client, raw, args.redis_url, args.pg_url)
    started = time.monotonic()
    failed: list[str] = []
    with owned(ctx):
        if not args.skip_ingest:
            column = table.columns[0]
            _fail_soft(failed, table, "machine", lambda: bench_machine(plan, table, column))
            _fail_soft(failed, table, "ingest", lambda: bench_ingest(ctx, plan, table, column))
        # Every scale stays loaded while the reads are timed, so that the scales take
        # turns and their growth is measured side by side (3.5M: about 0.5 GB of Redis).
        loaded: list[Loaded] = []
        for scale, label in zip(plan.scales, labels, strict=True):
            found = _fail_soft(
                failed,
                table,
                f"scale {label}",
                lambda s=scale, lbl=label: load_scale(ctx, s, base, lbl),
            )
            if found is not None:
                loaded.append(found)
        if loaded and _fail_soft(failed, table, "reads", lambda: time_reads(ctx, plan, loaded)):
            for s in loaded:
                baseline = partial(bench_sql, ctx, plan, base, s)
                _fail_soft(failed, table, f"SQL {s.label}", baseline)
            report_scales(table, plan, {s.label: s.result for s in loaded})
        for s in loaded:
            state.drop_prefix(ctx.raw, s.prefix)
        if not args.ingest_only:
            _fail_soft(failed, table, "videos", lambda: bench_videos(ctx, table, labels[0]))
    server = client.info("server")
    print(
        f"statsworker benchmark ({'quick' if args.quick else 'full'}): "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Redis {server['redis_version']}, {time.monotonic() - started:.0f} s"
    )
    print(table.render())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
