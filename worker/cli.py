"""The ``statsworker`` command line."""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from stats.settings import get_settings
from worker import logs
from worker.errors import UNREACHABLE, unreachable

log = logging.getLogger(__name__)

EXTRA_COMMANDS = (
    "worker.importer",
    "worker.demo",
    "worker.log_commands",
)
"""Modules that add their own sub-commands through a ``register(subparsers)`` function."""

Handler = Callable[[argparse.Namespace], int]


def _connections() -> Any:
    from worker import context

    return context.get()


def _is_regular_file(stream: Any) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):  # no descriptor (a test's StringIO)
        return False


JSONL_NEWLINE = "\n"
"""What ends a line of JSON Lines: a lone CR is JSON whitespace inside a line, not a line
break (Python's universal newlines would split there); CRLF still ends a line, its CR
being whitespace."""


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish a JSON Lines file (or standard input)."""
    from worker.publishing import make_publisher

    conns = _connections()
    publisher = make_publisher(conns)
    if args.file == "-":
        # A pipe or a terminal may pause between lines: follow it, so that what came is
        # queued meanwhile. Standard input redirected from a file is read straight.
        stdin = sys.stdin
        if hasattr(stdin, "reconfigure"):  # whatever the locale says: bad bytes reject a line
            stdin.reconfigure(encoding="utf-8", errors="surrogateescape", newline=JSONL_NEWLINE)
        report = publisher.publish_lines(stdin, follow_stream=not _is_regular_file(stdin))
    else:
        try:
            # A byte that is not UTF-8 rejects its line (as on standard input), not the file.
            with open(
                args.file, encoding="utf-8", errors="surrogateescape", newline=JSONL_NEWLINE
            ) as stream:
                report = publisher.publish_lines(stream)
        except OSError as exc:
            print(f"statsworker: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 2
    for err in report.rejected:
        print(str(err), file=sys.stderr)
    print(
        f"published {report.accepted} event(s) in {report.jobs} job(s); "
        f"{len(report.rejected)} rejected",
        file=sys.stderr,
    )
    return 1 if report.rejected else 0


def _warn_of_eviction(conns: Any) -> None:
    """Log a warning when the Redis of ``conns`` may evict state keys (see
    ``worker.connections.eviction_risk``)."""
    from worker.connections import MEMORY_URL, eviction_risk

    if not conns.settings.redis_url.startswith(MEMORY_URL):
        risk = eviction_risk(conns.probe())  # tries once: a Redis down is told next
        if risk is not None:
            log.warning("%s", risk)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker on the queue."""
    from worker.runner import (
        Tally,
        WorkerFailed,
        failed_job_count,
        run_worker,
        scheduled_job_count,
    )

    conns = _connections()
    _warn_of_eviction(conns)
    tally = Tally()
    try:
        run_worker(conns, burst=args.burst, with_scheduler=not args.burst, tally=tally)
    except WorkerFailed as exc:
        print(
            f"statsworker: the worker kept stopping on an error: {exc}; "
            f"{tally.jobs_done} job(s) applied by this worker before it gave up",
            file=sys.stderr,
        )
        return 1
    if args.burst:
        failed, later = failed_job_count(conns), scheduled_job_count(conns)
        print(
            f"worker: {'stopped' if tally.stopped else 'queue drained'}; "
            f"{tally.jobs_done} job(s) applied by this worker"
            + (f"; {later} job(s) scheduled for later" if later else "")
            + (f"; {failed} failed job(s): see `statsworker failed`" if failed else ""),
            file=sys.stderr,
        )
        if tally.sweep_failed is not None:
            # The queue was applied, but what was logged and never queued was not looked for.
            print(
                "statsworker: the event log was not swept for events that never reached"
                f" the queue: {tally.sweep_failed}",
                file=sys.stderr,
            )
            return 3
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the read API."""
    import uvicorn

    from api_stub.app import create_app
    from worker import context

    conns = context.get(serving=True)  # a hung Redis answers 503 after seconds
    _warn_of_eviction(conns)
    app = create_app(conns)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning" if not args.verbose else "info"
    )
    sock = config.bind_socket()  # bound before it is told: port 0 becomes a real one
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"statsworker api: serving on http://{host}:{sock.getsockname()[1]}", file=sys.stderr)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def cmd_roll(args: argparse.Namespace) -> int:
    """Move every vertical's windowed counters to today (with ``--every``, again and again)."""
    from stats.setlists import StateNeedsRebuild

    conns = _connections()
    while True:
        today = conns.settings.current_date()
        verticals = conns.setlists.verticals()
        kept: list[dt.date] = []
        refused: list[StateNeedsRebuild] = []
        for vertical in verticals:
            try:
                day = conns.setlists.roll(vertical, today)
            except StateNeedsRebuild as exc:  # an earlier layout: the others roll all the same
                refused.append(exc)
                continue
            if day > today:
                kept.append(day)
        print(
            f"rolled {len(verticals) - len(kept) - len(refused)} vertical(s) to"
            f" {today.isoformat()}",
            file=sys.stderr,
        )
        if kept:
            print(
                f"{len(kept)} vertical(s) left at a later day (up to {max(kept).isoformat()}): "
                "counters never move back",
                file=sys.stderr,
            )
        for refusal in refused:
            print(f"not rolled: {refusal}", file=sys.stderr)
        every = getattr(args, "every", None)  # absent when a caller builds its own Namespace
        if not every:
            return 1 if refused else 0
        # A roll to the same day changes nothing, so a short period costs little and
        # puts a new day into the counters soon after midnight UTC.
        time.sleep(every)


def cmd_failed(args: argparse.Namespace) -> int:
    """List failed jobs with their reasons."""
    from worker.runner import failed_jobs

    jobs = failed_jobs(_connections())
    for job_id, reason in jobs:
        print(f"{job_id}\t{reason}")
    print(f"{len(jobs)} failed job(s)", file=sys.stderr)
    return 0


def cmd_retry_failed(args: argparse.Namespace) -> int:
    """Put failed jobs back on the queue."""
    from worker.runner import retry_failed

    n = retry_failed(_connections())
    print(f"re-enqueued {n} failed job(s)", file=sys.stderr)
    return 0


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (0-65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="statsworker", description="Incremental setlist and video statistics in Redis."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("publish", help="validate a JSON Lines file (or -) and enqueue it")
    p.add_argument("file", help="path of a JSON Lines file, or - for standard input")
    p.set_defaults(handler=cmd_publish)

    p = sub.add_parser("worker", help="apply queued events")
    p.add_argument("--burst", action="store_true", help="drain the queue, then exit")
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("api", help="serve the HTTP read API")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    p.add_argument("--port", type=_port, default=8000, help="port to listen on (%(default)s)")
    p.set_defaults(handler=cmd_api)

    p = sub.add_parser("roll", help="move windowed counters of every vertical to today")
    p.add_argument(
        "--every", type=float, metavar="SECONDS", help="keep running: roll again every SECONDS"
    )
    p.set_defaults(handler=cmd_roll)

    p = sub.add_parser("failed", help="list failed jobs and why they failed")
    p.set_defaults(handler=cmd_failed)

    p = sub.add_parser("retry-failed", help="re-enqueue every failed job")
    p.set_defaults(handler=cmd_retry_failed)

    for name in EXTRA_COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


GC_YOUNG_THRESHOLD = 50_000
"""Allocations between collections of the youngest generation (Python's default: 700).

Publishing and applying allocate a few objects per event field and keep a batch of
them alive, so at the default the collector keeps walking the batch: a tenth of a
publisher's CPU (GD events with the SQLite log: 70 -> 64 us an event, one run of
three each). Cyclic garbage is still collected, only later; the older generations
keep their defaults."""


def tune_gc() -> None:
    """Collect the youngest generation every :data:`GC_YOUNG_THRESHOLD` allocations."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``statsworker`` console script."""
    tune_gc()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            name = "STATSWORKER_" + "_".join(str(p) for p in err["loc"]).upper()
            message = err["msg"].removeprefix("Value error, ")  # pydantic's, for ValueError
            print(f"statsworker: bad configuration: {name}: {message}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, args.verbose)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        from worker.migrations import SchemaNotReady  # alembic: imported when needed

        if not isinstance(exc, SchemaNotReady) or args.verbose:
            raise
        print(f"statsworker: {exc}", file=sys.stderr)  # as verify and rebuild say it
        return 2
    except UNREACHABLE as exc:
        reason = unreachable(exc, settings.redis_url, settings.database_url)
        if reason is None or args.verbose:  # -v: the whole traceback
            raise
        print(f"statsworker: {reason}", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
