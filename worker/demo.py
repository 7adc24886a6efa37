"""``statsworker demo``: the whole pipeline on an embedded default, then a report of what it found.

Nothing to install or reach: Redis is fakeredis in this process (RQ runs on it) and
the event log an SQLite file in a temporary directory. The events come from the
project's generator, or from setlist and video CSV files. They are published, queued,
applied by an in-process worker and read back through the same stores the HTTP API
reads; ``--serve`` then keeps the API up on that state.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakeredis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from events.fields import SLUG_RE
from events.schemas import Event, EventError, PerformanceEvent, PerformanceRecorded, VideoPosted
from stats.setlist_models import Bustout, Debut, GapRow, VelocityRow, VerticalStats
from stats.settings import get_settings
from stats.video_models import Hashtags, Overview, TimeSeries
from worker.connections import MEMORY_URL, Connections
from worker.generator import DEFAULT_SEED

TOP = 5
"""Rows shown per table of the report."""

MIN_PLAYS = 5
"""Songs played fewer times are left out of "most overdue" (the route's default)."""

BUSTOUT_DAYS, BUSTOUT_GAP = 365, 180
"""Bustouts of the last year after a gap of at least 180 days (the route's defaults)."""

DEBUT_DAYS = 365
"""Debuts of the last year (the route's default)."""

CHART_DAYS = 60
"""Days of a creator's views drawn in the report's chart."""

DEMO_BATCH_SIZE = 250
"""Events per queued job in the demo: small enough for the progress bar to move smoothly."""

CREATORS_SHOWN = 2
"""Creators reported (those with the most videos) when a video file has many."""


@dataclass
class BandReport:
    """What the report shows about one vertical."""

    slug: str
    name: str
    stats: VerticalStats
    hottest: list[VelocityRow]
    overdue: list[GapRow]
    bustouts: list[Bustout]
    debuts: list[Debut]


@dataclass
class CreatorReport:
    """What the report shows about one creator."""

    slug: str
    name: str
    overview: Overview
    hashtags: Hashtags
    series: TimeSeries
    chart_start: dt.date


@dataclass
class DemoResult:
    """A finished demo run: its state (``conns``) and what was read from it."""

    conns: Connections
    today: dt.date
    published: int
    jobs: int
    seconds: float
    source: str
    skipped: dict[str, list[EventError]] = field(default_factory=dict)
    """Rows skipped, by their file as it was given."""
    failed_jobs: int = 0
    bands: list[BandReport] = field(default_factory=list)
    creators: list[CreatorReport] = field(default_factory=list)
    creators_total: int = 0


@dataclass
class _Input:
    events: list[Event]
    names: dict[str, str]
    today: dt.date
    source: str
    skipped: dict[str, list[EventError]]


def _from_csv(setlists: Path | None, vertical: str | None, videos: Path | None) -> _Input:
    from worker.importer import setlist_events, video_events

    events: list[Event] = []
    skipped: dict[str, list[EventError]] = {}
    names: list[str] = []
    if setlists is not None and vertical is not None:
        with setlists.open(encoding="utf-8-sig", newline="") as stream:
            events.extend(setlist_events(stream, vertical, skipped.setdefault(str(setlists), [])))
        names.append(setlists.name)
    if videos is not None:
        path = videos
        rows = skipped.setdefault(str(videos), [])
        events.extend(video_events(lambda: path.open(encoding="utf-8-sig", newline=""), rows))
        names.append(videos.name)
    shows = [e.show_date for e in events if isinstance(e, PerformanceRecorded)]
    last = max(shows) if shows else max((e.occurred_at.date() for e in events), default=None)
    if last is None:
        raise ValueError("the files hold no valid row")
    return _Input(events, {}, last + dt.timedelta(days=1), " and ".join(names), skipped)


def _generated(seed: int) -> _Input:
    from worker.generator import generate

    data = generate(seed)
    return _Input(data.events, data.names, data.today, f"generated data (seed {seed})", {})


def embedded_connections(workdir: Path, today: dt.date) -> Connections:
    """Connections on a fresh in-process Redis, an SQLite event log in ``workdir``, ``today``."""
    settings = get_settings().model_copy(
        update={
            "redis_url": MEMORY_URL,
            "database_url": f"sqlite:///{workdir / 'events.db'}",
            "today": today,
            "batch_size": DEMO_BATCH_SIZE,
        }
    )
    server = fakeredis.FakeServer()  # a server of its own: each run starts empty
    return Connections(
        settings,
        fakeredis.FakeRedis(server=server, decode_responses=True),
        fakeredis.FakeRedis(server=server),
    )


@contextmanager
def _signals_restored() -> Iterator[None]:
    # An RQ worker installs its own SIGINT/SIGTERM handlers; the caller's come back after.
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _drain(conns: Connections, jobs: int, progress: Progress) -> None:
    from worker.runner import run_worker

    task = progress.add_task("applying (worker)", total=jobs)
    done = threading.Event()

    def follow() -> None:
        while not done.wait(0.1):
            progress.update(task, completed=max(0, jobs - conns.queue.count))

    watcher = threading.Thread(target=follow, name="demo-progress", daemon=True)
    watcher.start()
    try:
        with _signals_restored():
            run_worker(conns, burst=True, with_scheduler=False)
    finally:
        done.set()
        watcher.join()
    progress.update(task, completed=jobs)


def _read(conns: Connections, data: _Input, today: dt.date, result: DemoResult) -> None:
    setlists = conns.setlists
    found = {e.vertical for e in data.events if isinstance(e, PerformanceEvent)}
    verticals = [v for v in data.names if v in found] + sorted(found - data.names.keys())
    for v in verticals:
        result.bands.append(
            BandReport(
                slug=v,
                name=data.names.get(v, v),
                stats=setlists.stats(v, today),
                hottest=setlists.velocity(v, today, TOP),
                overdue=setlists.gaps(v, today, MIN_PLAYS, TOP),
                bustouts=setlists.bustouts(v, today, BUSTOUT_DAYS, BUSTOUT_GAP, None).bustouts[
                    :TOP
                ],
                debuts=setlists.debuts(v, today, DEBUT_DAYS).debuts[:TOP],
            )
        )
    videos = Counter(
        c for c, _ in {(e.creator, e.video_id) for e in data.events if isinstance(e, VideoPosted)}
    )
    shown = sorted(videos, key=lambda c: (-videos[c], c))[:CREATORS_SHOWN]
    result.creators_total = len(videos)
    for c in shown:
        overview = conns.videos.overview(c)
        span = overview.metrics.date_range
        # The chart ends on the creator's latest video, whatever date the setlists end on.
        last = span[1] if span else today - dt.timedelta(days=1)
        first = last - dt.timedelta(days=CHART_DAYS - 1)
        result.creators.append(
            CreatorReport(
                slug=c,
                name=data.names.get(c, c),
                overview=overview,
                hashtags=conns.videos.hashtags(c, TOP),
                series=conns.videos.time_series(c, first, last),
                chart_start=first,
            )
        )


def run_demo(
    workdir: Path,
    seed: int = DEFAULT_SEED,
    setlists: Path | None = None,
    vertical: str | None = None,
    videos: Path | None = None,
    progress_console: Console | None = None,
) -> DemoResult:
    """Publish, queue, apply and read back a data set on the embedded default.

    Args:
        workdir: where the SQLite event log is written.
        seed: seed of the generated data set (used when no file is given).
        setlists, vertical: a setlist CSV file and the vertical it belongs to.
        videos: a video snapshot CSV file.
        progress_console: where progress is drawn (standard error by default).
    """
    from worker import context
    from worker.publishing import make_publisher
    from worker.runner import failed_jobs

    console = progress_console or Console(stderr=True)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("reading data", total=None)
        if setlists is None and videos is None:
            data = _generated(seed)
        else:
            data = _from_csv(setlists, vertical, videos)
        progress.update(task, total=1, completed=1)
        started = time.perf_counter()
        conns = embedded_connections(workdir, data.today)
        context.set_current(conns)
        task = progress.add_task("publishing", total=len(data.events))

        def counted() -> Iterator[Event]:
            for n, event in enumerate(data.events, start=1):
                yield event
                if n % 250 == 0:
                    progress.update(task, completed=n)

        report = make_publisher(conns).publish(counted())
        progress.update(task, completed=len(data.events))
        _drain(conns, report.jobs, progress)
        result = DemoResult(
            conns=conns,
            today=data.today,
            published=report.accepted,
            jobs=report.jobs,
            seconds=0.0,
            source=data.source,
            skipped=data.skipped,
            failed_jobs=len(failed_jobs(conns)),
        )
        task = progress.add_task("reading results", total=None)
        _read(conns, data, data.today, result)
        result.seconds = time.perf_counter() - started
    return result


def _check_args(args: argparse.Namespace) -> str | None:
    if (args.setlists is None) != (args.vertical is None):
        return "--setlists and --vertical go together"
    if args.vertical is not None and not SLUG_RE.fullmatch(args.vertical):
        return f"--vertical {args.vertical!r} is not a slug"
    for path in (args.setlists, args.videos):
        if path is not None and not Path(path).is_file():
            return f"cannot read {path}"
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    """Run ``statsworker demo``."""
    from worker.demo_report import render
    from worker.importer import MissingColumnsError

    problem = _check_args(args)
    if problem:
        print(f"statsworker demo: {problem}", file=sys.stderr)
        return 2
    if not args.verbose:
        # The event log is created afresh on each run: its migration is no news here.
        for name in ("alembic", "worker.migrations"):
            logging.getLogger(name).setLevel(logging.WARNING)
    out = Console()
    with tempfile.TemporaryDirectory(prefix="statsworker-demo-", ignore_cleanup_errors=True) as tmp:
        try:
            result = run_demo(
                Path(tmp),
                args.seed,
                Path(args.setlists) if args.setlists else None,
                args.vertical,
                Path(args.videos) if args.videos else None,
            )
        except (MissingColumnsError, ValueError) as exc:
            print(f"statsworker demo: {exc}", file=sys.stderr)
            return 2
        render(result, out)
        if args.serve:
            _serve(result, out, args.host, args.port)
    return 1 if result.failed_jobs else 0


def _serve(result: DemoResult, out: Console, host: str, port: int) -> None:
    import uvicorn

    from api_stub.app import create_app

    base = f"http://{host}:{port}"
    example = (
        f"/analytics/velocity/{result.bands[0].slug}"
        if result.bands
        else f"/analytics/insights/{result.creators[0].slug}/overview"
    )
    out.print(
        f"\nServing the API on this state at [bold]{base}[/] (try {base}{example}, "
        f"or {base}/docs); Ctrl-C stops it."
    )
    uvicorn.run(create_app(result.conns), host=host, port=port, log_level="warning")


def register(subparsers: Any) -> None:
    """Add ``demo [--setlists FILE --vertical SLUG] [--videos FILE] [--serve] [--port N]``."""
    p = subparsers.add_parser(
        "demo", help="run the whole pipeline in process (no server needed) and print a report"
    )
    p.add_argument("--setlists", metavar="FILE", help="a setlist CSV instead of generated data")
    p.add_argument("--vertical", metavar="SLUG", help="the vertical of --setlists")
    p.add_argument("--videos", metavar="FILE", help="a video snapshot CSV")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the generated data")
    p.add_argument("--serve", action="store_true", help="then serve the HTTP API on the state")
    p.add_argument("--host", default="127.0.0.1", help="address --serve listens on")
    p.add_argument("--port", type=int, default=8000, help="port --serve listens on")
    p.set_defaults(handler=cmd_demo)
