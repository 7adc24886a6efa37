"""Sub-commands around the event log: ``migrate``, ``rebuild``, ``verify``, ``backfill``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from events.fields import SLUG_RE

log = logging.getLogger(__name__)


class RateColumn(ProgressColumn):
    """Units (rows) per second since the start (the average, as the command's summary gives it;
    rich's own estimate over its last few updates jumps with the size of each update)."""

    def __init__(self, unit: str = "rows") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        speed = task.completed / elapsed if elapsed else None
        shown = f"{speed:,.0f}" if speed else "-"
        return Text(f"{shown} {self.unit}/s", style="progress.data.speed")


@contextmanager
def progress_bar(
    description: str, total: int, unit: str = "rows"
) -> Iterator[Callable[[int], None]]:
    """A progress bar on standard error with count, rate and ETA; yields ``advance(n)``.
    Past ``total`` (a log that grew while it was read) the total follows the count."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(description, total=total)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            progress.update(task, advance=n, total=max(total, done))

        yield advance


def _slug(value: str) -> str:
    if not SLUG_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a slug")
    return value


def _conns() -> Any:
    from worker import context

    return context.get()


def _open_log(conns: Any) -> Any:
    """The event log, or None after saying why it cannot be opened."""
    from worker.eventlog import SchemaNotReady
    from worker.publishing import event_log

    try:
        return event_log(conns)
    except SchemaNotReady as exc:
        print(f"statsworker: {exc}", file=sys.stderr)
        return None


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the event log's schema to the latest revision (or ``--revision``)."""
    from stats.settings import get_settings
    from worker import migrations
    from worker.eventlog import make_engine

    engine = make_engine(get_settings().database_url)
    try:
        state = migrations.describe(engine)
        if args.check:
            behind = state["current"] != state["head"]
            print(f"event log at {state['current'] or 'none'}, latest {state['head']}")
            return 1 if behind else 0
        migrations.upgrade(engine, args.revision)
        now = migrations.current_revision(engine) or "none"
        before = state["current"] or "none"
        told = f"already at {now}" if now == before else f"migrated from {before} to {now}"
        print(f"event log {told}", file=sys.stderr)
        return 0
    finally:
        engine.dispose()


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Rebuild the Redis state from the event log and switch it in atomically."""
    from worker.rebuild import Rebuilder

    conns = _conns()
    eventlog = _open_log(conns)
    if eventlog is None:
        return 2
    rebuilder = Rebuilder(conns, eventlog)
    verticals, creators = rebuilder.scopes(args.vertical, args.creator)
    everything = args.vertical is None and args.creator is None
    total = rebuilder.total(verticals, creators, everything)
    with progress_bar("replaying the event log", total) as advance:
        rebuilder.progress = advance
        report = rebuilder.run(args.vertical, args.creator)
    print(
        f"rebuilt {report.verticals} vertical(s) and {report.creators} creator(s) "
        f"from {report.events} event(s) in {report.seconds:.2f} s ({report.rate:,.0f} events/s); "
        f"{report.tail} applied again after the switch, {report.removed} removed"
        + (
            f"; {report.left_behind} key(s) staged by a rebuild that stopped deleted"
            if report.left_behind
            else ""
        ),
        file=sys.stderr,
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Recompute every figure from the log and compare it with Redis; exit 1 on drift."""
    from worker.verify import Verifier

    conns = _conns()
    eventlog = _open_log(conns)
    if eventlog is None:
        return 2
    verifier = Verifier(conns, eventlog)
    verticals, creators = verifier.scopes(args.vertical, args.creator)
    total = len(verticals) + len(creators)
    with progress_bar("verifying verticals and creators", total, unit="names") as advance:
        drifts = verifier.run(args.vertical, args.creator, progress=advance)
    for drift in drifts:
        print(drift)
    for vertical in verifier.old_layouts:
        print(
            f"verify: vertical {vertical!r} is kept in an earlier layout, not compared:"
            f" run `statsworker rebuild --vertical {vertical}`",
            file=sys.stderr,
        )
    if drifts:
        print(f"verify: {len(drifts)} difference(s) between Redis and the log", file=sys.stderr)
        return 1
    print("verify: Redis agrees with the event log", file=sys.stderr)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    """Publish the rows of a site database as events."""
    import sqlalchemy as sa

    from worker.backfill import UnknownDatabase, backfill, count_rows, kinds
    from worker.eventlog import sqlite_file
    from worker.publishing import make_publisher

    conns = _conns()
    if _open_log(conns) is None:
        return 2
    url = sa.engine.make_url(args.from_db)
    path = sqlite_file(url)
    if path is not None and not Path(path).is_file():
        print(f"statsworker: {args.from_db}: no such file", file=sys.stderr)
        return 2  # SQLite would create an empty database there
    engine = sa.create_engine(url)
    try:
        try:
            total = count_rows(engine, kinds(engine))
        except UnknownDatabase as exc:
            print(f"statsworker: {args.from_db}: {exc}", file=sys.stderr)
            return 2
        except sa.exc.SQLAlchemyError as exc:
            print(f"statsworker: cannot read {args.from_db}: {exc}", file=sys.stderr)
            return 2
        with progress_bar("backfilling", total) as advance:
            report = backfill(args.from_db, make_publisher(conns), advance, engine=engine)
    finally:
        engine.dispose()
    for err in report.skipped:
        print(str(err), file=sys.stderr)
    print(
        f"backfilled {report.published} event(s) in {report.jobs} job(s) from {report.rows} "
        f"row(s); {len(report.skipped)} row(s) reported",
        file=sys.stderr,
    )
    return 1 if report.skipped else 0


def _scope(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--vertical", type=_slug, help="only this vertical")
    group.add_argument("--creator", type=_slug, help="only this creator")


def register(subparsers: Any) -> None:
    """Add ``migrate``, ``rebuild``, ``verify`` and ``backfill`` to the command line."""
    p = subparsers.add_parser("migrate", help="bring the event log's database schema up to date")
    p.add_argument(
        "--revision", default="head", help="migrate to this revision (default head; base = none)"
    )
    p.add_argument(
        "--check", action="store_true", help="only report; exit 1 when the schema is behind"
    )
    p.set_defaults(handler=cmd_migrate)

    p = subparsers.add_parser("rebuild", help="rebuild the Redis state from the event log")
    _scope(p)
    p.set_defaults(handler=cmd_rebuild)

    p = subparsers.add_parser(
        "verify", help="compare every figure in Redis with the event log; exit 1 on drift"
    )
    _scope(p)
    p.set_defaults(handler=cmd_verify)

    p = subparsers.add_parser("backfill", help="publish the rows of a site database as events")
    p.add_argument("--from-db", required=True, metavar="URL", help="SQLAlchemy URL of the site DB")
    p.set_defaults(handler=cmd_backfill)
