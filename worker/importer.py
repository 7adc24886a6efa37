"""``statsworker import``: setlist and video CSV files turned into events and published.

Every event is a pure function of the file's content, so importing a file twice
publishes the same events twice, which changes nothing:

- a setlist row is the performance ``show_id:set_name:position`` (without a position,
  ``show_id:set_name:#n`` for the row's place n within its show), ``occurred_at`` is
  its show date at 00:00 UTC and its event_id a hash of the row;
- a video row is a snapshot: per video the rows of its earliest ``snapshot_date`` are
  its ``video.posted``, later rows ``video.metrics_updated``, each at its
  ``snapshot_date`` 00:00 UTC. When one video has two rows on one date (it trended in
  two countries) the greater reading wins, comparing (views, likes, comments, shares,
  bookmarks, new_followers) in that order: its event_id starts with those counts.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from events.fields import DATE_RE, MAX_ID_LENGTH, SLUG_RE, slugify
from events.schemas import Event, EventError, parse_event

log = logging.getLogger(__name__)

SETLIST_COLUMNS = ("show_id", "show_date", "song_title")
"""Columns a setlist CSV must have (``venue``, ``set_name``, ``position`` are used when present)."""

VIDEO_COLUMNS = ("video_id", "channel_or_creator", "date_posted", "snapshot_date")
"""Columns a video CSV must have; a missing count column counts as 0, like an empty cell,
and the import says which were missing."""


COUNT_COLUMNS = ("views", "likes", "comments", "shares", "bookmarks", "new_followers")
"""The cumulative counts of a video snapshot."""

Row = dict[str, str]

_UNDECODED = re.compile("[\udc80-\udcff]")
"""A byte the file's UTF-8 decoding could not read, as ``surrogateescape`` keeps it."""


class MissingColumnsError(ValueError):
    """The CSV file lacks a required column."""


@dataclass
class ImportReport:
    """What an import did: rows read, events published, rows skipped and why."""

    rows: int = 0
    published: int = 0
    jobs: int = 0
    skipped: list[EventError] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    """Count columns the file has not, counted as 0 (a misspelt header shows here)."""


def _digest(*parts: object) -> str:
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _records(
    stream: IO[str],
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    absent: list[str] | None = None,
) -> Iterator[tuple[int, Row]]:
    """Rows of a CSV stream with the file line each starts on (the header is line 1).

    The ``optional`` columns the header lacks are added to ``absent``."""
    reader = csv.DictReader(stream)
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise MissingColumnsError(f"missing column(s): {', '.join(missing)}")
    if absent is not None:
        absent.extend(c for c in optional if c not in header and c not in absent)
    start = reader.line_num + 1
    for row in reader:
        yield start, {k: (v or "").strip() for k, v in row.items() if k is not None}
        start = reader.line_num + 1


SETLIST_USED = (*SETLIST_COLUMNS, "venue", "set_name", "position")
VIDEO_USED = (*VIDEO_COLUMNS, *COUNT_COLUMNS)
"""The columns an import reads; the others may hold anything."""


def _decoded(row: Row, lineno: int, columns: tuple[str, ...]) -> None:
    """Reject a row whose ``columns`` hold bytes that are not UTF-8 (the file's other
    rows still count)."""
    for column in columns:
        if _UNDECODED.search(row.get(column, "")):
            raise EventError(f"line {lineno}", f"{column}: not UTF-8 text (save the file as UTF-8)")


def _need(row: Row, column: str, lineno: int) -> str:
    value = row.get(column, "")
    if not value:
        raise EventError(f"line {lineno}", f"{column} is empty")
    return value


def _date(row: Row, column: str, lineno: int) -> str:
    # Checked here, before occurred_at is derived from it, so the error names this column.
    text = _need(row, column, lineno)
    try:
        # fromisoformat alone would also read 20240101 or 2024-W01-1.
        if DATE_RE.fullmatch(text):
            dt.date.fromisoformat(text)
            return text
    except ValueError:
        pass
    raise EventError(f"line {lineno}", f"{column}: {text!r} is not a real date written YYYY-MM-DD")


def _slug_of(row: Row, column: str, lineno: int) -> str:
    text = _need(row, column, lineno)
    slug = slugify(text)
    if not slug:
        reason = f"{column} {text!r} has no ASCII letter or digit to make a slug from"
        raise EventError(f"line {lineno}", reason)
    return slug


def _count(row: Row, column: str, lineno: int) -> int:
    text = row.get(column, "")
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()):
        raise EventError(f"line {lineno}", f"{column}: {text!r} is not a whole number >= 0")
    return int(text)


def setlist_events(stream: IO[str], vertical: str, skipped: list[EventError]) -> Iterator[Event]:
    """``performance.recorded`` events of a setlist CSV; bad rows are added to ``skipped``."""
    in_show: dict[str, int] = {}
    in_slot: dict[str, list[str]] = {}
    for lineno, row in _records(stream, SETLIST_COLUMNS):
        show_id = row["show_id"]
        in_show[show_id] = in_show.get(show_id, 0) + 1  # counts bad rows too: ids stay put
        try:
            _decoded(row, lineno, SETLIST_USED)
            _need(row, "show_id", lineno)
            show_date = _date(row, "show_date", lineno)
            title = _need(row, "song_title", lineno)
            song = _slug_of(row, "song_title", lineno)
            position = row.get("position", "")
            if position and not (position.isascii() and position.isdigit()):
                raise EventError(f"line {lineno}", f"position: {position!r} is not a whole number")
            set_name = row.get("set_name", "")
            slot = position or f"#{in_show[show_id]}"
            performance_id = f"{show_id}:{set_name}:{slot}"
            # Rows of one show, set and position with different songs are different
            # plays: the second song's id says so (the same on every import of the
            # file). The same song again there is the same play, a row repeated.
            songs_here = in_slot.setdefault(performance_id, [])
            if song not in songs_here:
                songs_here.append(song)
            repeat = songs_here.index(song) + 1
            if repeat > 1:
                performance_id += f"+{repeat}"
            if len(performance_id) > MAX_ID_LENGTH:  # a show_id near the limit of 200
                performance_id = "csv:" + _digest(performance_id)
            venue = row.get("venue") or None
            obj: dict[str, Any] = {
                "type": "performance.recorded",
                "event_id": "csv:"
                + _digest(vertical, performance_id, show_date, song, title, venue, set_name),
                "occurred_at": f"{show_date}T00:00:00Z",
                "vertical": vertical,
                "performance_id": performance_id,
                "show_id": show_id,
                "show_date": show_date,
                "song": song,
                "song_title": title,
            }
            if venue:
                obj["venue"] = venue
            if set_name:
                obj["set"] = set_name
            if position:
                obj["position"] = int(position)
            yield parse_event(obj, f"line {lineno}")
        except EventError as exc:
            skipped.append(exc)


def _snapshot(lineno: int, row: Row) -> dict[str, Any]:
    """The validated content of one video row (raises EventError naming the line)."""
    _decoded(row, lineno, VIDEO_USED)
    creator = _slug_of(row, "channel_or_creator", lineno)
    return {
        "creator": creator,
        "video_id": _need(row, "video_id", lineno),
        "date_posted": _date(row, "date_posted", lineno),
        "snapshot_date": _date(row, "snapshot_date", lineno),
        **{c: _count(row, c, lineno) for c in COUNT_COLUMNS},
    }


def _video_event(snap: dict[str, Any], posted: bool, lineno: int) -> Event:
    body = {k: v for k, v in snap.items() if k not in ("snapshot_date", "date_posted")}
    obj: dict[str, Any] = {
        "type": "video.posted" if posted else "video.metrics_updated",
        "event_id": "csv:"
        + ".".join(f"{snap[c]:016d}" for c in COUNT_COLUMNS)
        + ":"
        + _digest(posted, *snap.values())[:24],
        "occurred_at": f"{snap['snapshot_date']}T00:00:00Z",
        **body,
    }
    if posted:
        obj["date_posted"] = snap["date_posted"]
    return parse_event(obj, f"line {lineno}")


def video_events(
    open_stream: Callable[[], IO[str]],
    skipped: list[EventError],
    absent: list[str] | None = None,
) -> Iterator[Event]:
    """Video events of a snapshot CSV, read twice: first for each video's earliest snapshot.

    Args:
        open_stream: opens the file afresh (called twice).
        skipped: receives one error per bad row.
        absent: receives the count columns the file has not (counted as 0).
    """
    earliest: dict[tuple[str, str], str] = {}
    with open_stream() as first:
        for lineno, row in _records(first, VIDEO_COLUMNS, COUNT_COLUMNS, absent):
            try:
                snap = _snapshot(lineno, row)
                _video_event(snap, True, lineno)  # a row that cannot be an event is no snapshot
            except EventError:
                continue
            key = (snap["creator"], snap["video_id"])
            if key not in earliest or snap["snapshot_date"] < earliest[key]:
                earliest[key] = snap["snapshot_date"]
    with open_stream() as second:
        for lineno, row in _records(second, VIDEO_COLUMNS):
            try:
                snap = _snapshot(lineno, row)
                # A row the first pass found no event in fails again below, with its reason.
                first_seen = earliest.get(
                    (snap["creator"], snap["video_id"]), snap["snapshot_date"]
                )
                yield _video_event(snap, snap["snapshot_date"] == first_seen, lineno)
            except EventError as exc:
                skipped.append(exc)


# -- the command ------------------------------------------------------------------


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def import_file(
    conns: Any, path: Path, kind: str, vertical: str | None = None, console: Console | None = None
) -> ImportReport:
    """Publish the events of a setlist (``kind="setlists"``) or video (``"videos"``) CSV file.

    A progress bar on ``console`` (standard error by default) follows the bytes read.

    Raises:
        OSError: the file cannot be read.
        MissingColumnsError: a required column is missing.
    """
    from worker.publishing import make_publisher

    report = ImportReport()
    publisher = make_publisher(conns)
    size = path.stat().st_size
    passes = 1 if kind == "setlists" else 2  # videos are read twice
    with _progress(console or Console(stderr=True)) as progress, ExitStack() as files:
        task = progress.add_task(f"importing {path.name}", total=passes * size)
        opened = 0

        def open_stream() -> IO[str]:
            nonlocal opened
            progress.update(task, completed=opened * size)
            opened += 1
            # rich's reader does not close the file it wraps: the exit stack does.
            handle = files.enter_context(path.open("rb"))
            raw = progress.wrap_file(handle, total=passes * size, task_id=task)
            # A byte that is not UTF-8 rejects its row (see _decoded), not the file.
            return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")

        if kind == "setlists":
            if vertical is None:
                raise ValueError("a setlist import needs a vertical")
            with open_stream() as stream:
                published = publisher.publish(setlist_events(stream, vertical, report.skipped))
        else:
            published = publisher.publish(video_events(open_stream, report.skipped, report.absent))
        progress.update(task, completed=passes * size)
    report.published, report.jobs = published.accepted, published.jobs
    report.rows = report.published + len(report.skipped)
    if report.skipped and publisher.on_rejected is not None:  # counted as publish counts them
        publisher.on_rejected(len(report.skipped))
    return report


def _vertical(value: str) -> str:
    if not SLUG_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a slug (a-z, 0-9, '.', '_', '-')")
    return value


def cmd_import(args: argparse.Namespace) -> int:
    """Run ``statsworker import setlists|videos FILE``."""
    from worker import context

    path = Path(args.file)
    try:
        report = import_file(context.get(), path, args.kind, getattr(args, "vertical", None))
    except OSError as exc:
        print(f"statsworker: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    except MissingColumnsError as exc:
        print(f"statsworker: {path}: {exc}", file=sys.stderr)
        return 2
    for err in report.skipped:
        print(str(err), file=sys.stderr)
    if report.absent:
        print(
            f"statsworker: {path}: no column(s) {', '.join(report.absent)}: counted as 0",
            file=sys.stderr,
        )
    print(
        f"imported {report.published} event(s) from {report.rows} row(s) of {path} in "
        f"{report.jobs} job(s); {len(report.skipped)} row(s) skipped",
        file=sys.stderr,
    )
    return 1 if report.skipped else 0


def register(subparsers: Any) -> None:
    """Add ``import setlists FILE --vertical SLUG`` and ``import videos FILE``."""
    p = subparsers.add_parser("import", help="publish a setlist or video CSV file")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    s = kinds.add_parser("setlists", help="one performance.recorded per row")
    s.add_argument(
        "file", help="CSV with show_id, show_date, song_title (and venue, set_name, position)"
    )
    s.add_argument("--vertical", required=True, type=_vertical, help="the band's slug")
    s.set_defaults(handler=cmd_import)
    v = kinds.add_parser("videos", help="per video: first snapshot posted, later ones updates")
    v.add_argument(
        "file", help="CSV with video_id, channel_or_creator, date_posted, counts, snapshot_date"
    )
    v.set_defaults(handler=cmd_import)
