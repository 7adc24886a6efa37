"""``statsworker backfill --from-db URL``: a site database's rows published as events.

It reads the databases of the apps statsworker replaces (the two shapes are in
``tests/fixtures/setlist_site.sql`` and ``tests/fixtures/creator_site.sql``):

- a setlist site (tables ``bands``, ``songs``, ``shows``, ``performances``): one
  ``performance.recorded`` per performance, event_id
  ``backfill:<vertical>:performance:<performances.id>``, at its show date 00:00 UTC;
- a creator site (tables ``creators``, ``videos``): one ``video.posted`` per video with
  its current counts, event_id ``backfill:<creator>:video:<videos.id>`` (plus
  ``@<updated_at>`` when the row has one, so an edited row is a newer event), at
  ``updated_at`` (else date_posted 00:00 UTC).

Event ids are functions of the rows, so running the backfill twice publishes the same
events again, which changes nothing. A row that cannot be mapped (a performance
without a song, a song without a title, a show without a date, a name without a
letter or digit to make a slug of, a negative count) is reported with its table and
id, and skipped: never guessed.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from events.fields import SLUG_RE, slugify
from events.publisher import Publisher
from events.schemas import Event, EventError, parse_event

log = logging.getLogger(__name__)

SETLIST_TABLES = frozenset({"bands", "songs", "shows", "performances"})
"""Tables of a setlist site database."""

CREATOR_TABLES = frozenset({"creators", "videos"})
"""Tables of a creator site database."""

COUNTS = ("views", "likes", "comments", "shares", "bookmarks", "new_followers")

READ_BATCH = 5000
"""Rows fetched from the site database at a time."""

SETLIST_QUERY = sa.text(
    """
    SELECT p.id, p.set_name, p.position, s.id, s.show_date, s.venue, s.slug,
           g.id, g.title, g.slug, b.id, b.name, b.slug
    FROM performances p
    LEFT JOIN shows s ON s.id = p.show_id
    LEFT JOIN songs g ON g.id = p.song_id
    LEFT JOIN bands b ON b.id = s.band_id
    ORDER BY p.id
    """
)

VIDEO_QUERY = sa.text(
    f"""
    SELECT v.id, v.platform_id, v.date_posted, {", ".join("v." + c for c in COUNTS)},
           v.hashtags, v.hook, v.cta, v.length_seconds, v.updated_at, c.id, c.name, c.slug
    FROM videos v
    LEFT JOIN creators c ON c.id = v.creator_id
    ORDER BY v.id
    """
)


class UnknownDatabase(ValueError):
    """The database has neither a setlist site's tables nor a creator site's."""


@dataclass
class BackfillReport:
    """What a backfill did: rows read, events published, rows reported and why."""

    rows: int = 0
    published: int = 0
    jobs: int = 0
    skipped: list[EventError] = field(default_factory=list)


class _Unmappable(Exception):
    pass


def _slug(slug: Any, name: Any, what: str) -> str:
    if isinstance(slug, str) and SLUG_RE.fullmatch(slug):
        return slug
    made = slugify(name) if isinstance(name, str) else ""
    if not made:
        raise _Unmappable(f"{what} has no slug and no name with a letter or digit to make one")
    return made


def _date(value: Any, what: str) -> str:
    if value is None or value == "":
        raise _Unmappable(f"{what} has no date")
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)[:10]


def _timestamp(value: Any) -> str | None:
    if value is None or value == "":
        return None
    stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)  # a site database keeps UTC
    return stamp.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _count(value: Any, name: str) -> int:
    if value is None or value == "":
        return 0  # as in a video CSV: an empty count is 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _Unmappable(f"{name} {value!r} is not a whole number") from None
    if number != value and not isinstance(value, str):
        raise _Unmappable(f"{name} {value!r} is not a whole number")
    return number


def _performance(row: Any) -> dict[str, Any]:
    pid, set_name, position, show_row, show_date, venue, show_slug = row[:7]
    song_row, title, song_slug, band_row, band_name, band_slug = row[7:]
    if show_row is None:
        raise _Unmappable("its show does not exist")
    if song_row is None:
        raise _Unmappable("it has no song")
    if band_row is None:
        raise _Unmappable(f"show {show_row} has no band")
    vertical = _slug(band_slug, band_name, f"band {band_row}")
    if not (isinstance(title, str) and title.strip()) and not song_slug:
        raise _Unmappable(f"song {song_row} has no title")
    song = _slug(song_slug, title, f"song {song_row}")
    date = _date(show_date, f"show {show_row}")
    obj: dict[str, Any] = {
        "type": "performance.recorded",
        "event_id": f"backfill:{vertical}:performance:{pid}",
        "occurred_at": f"{date}T00:00:00Z",
        "vertical": vertical,
        "performance_id": str(pid),
        "show_id": show_slug or str(show_row),
        "show_date": date,
        "song": song,
    }
    if isinstance(title, str) and title.strip():
        obj["song_title"] = title.strip()
    if venue:
        obj["venue"] = venue
    if set_name:
        obj["set"] = set_name
    if position is not None:
        obj["position"] = position
    return obj


def _video(row: Any) -> dict[str, Any]:
    vid, platform_id, date_posted, *rest = row
    counts = rest[: len(COUNTS)]
    hashtags, hook, cta, length, updated_at, creator_row, name, slug = rest[len(COUNTS) :]
    if creator_row is None:
        raise _Unmappable("its creator does not exist")
    creator = _slug(slug, name, f"creator {creator_row}")
    date = _date(date_posted, "it")
    stamp = _timestamp(updated_at)
    obj: dict[str, Any] = {
        "type": "video.posted",
        "event_id": f"backfill:{creator}:video:{vid}" + (f"@{stamp}" if stamp else ""),
        "occurred_at": stamp or f"{date}T00:00:00Z",
        "creator": creator,
        "video_id": platform_id or str(vid),
        "date_posted": date,
    }
    for name_, value in zip(COUNTS, counts, strict=True):
        obj[name_] = _count(value, name_)
    if hashtags:
        obj["hashtags"] = [t for t in re.split(r"[\s,]+", hashtags) if t]
    if hook:
        obj["hook"] = hook
    if cta:
        obj["cta"] = cta
    if length is not None:
        obj["length_seconds"] = length
    return obj


def kinds(engine: sa.Engine) -> list[str]:
    """Which site shapes the database holds: ``setlists``, ``videos`` or both.

    Raises:
        UnknownDatabase: when it holds neither.
    """
    tables = set(sa.inspect(engine).get_table_names())
    found = [
        kind
        for kind, need in (("setlists", SETLIST_TABLES), ("videos", CREATOR_TABLES))
        if need <= tables
    ]
    if not found:
        raise UnknownDatabase(
            "found neither a setlist site's tables (bands, songs, shows, performances) "
            "nor a creator site's (creators, videos)"
        )
    return found


def count_rows(engine: sa.Engine, found: list[str]) -> int:
    """Rows the backfill will read (for the progress bar)."""
    table = {"setlists": "performances", "videos": "videos"}
    with engine.connect() as conn:
        return sum(
            int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table[k]}")).scalar_one())
            for k in found
        )


def site_events(
    engine: sa.Engine,
    found: list[str],
    report: BackfillReport,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Event]:
    """The events of every mappable row; unmappable rows go to ``report.skipped``."""
    plan = [
        ("performances", SETLIST_QUERY, _performance)
        if k == "setlists"
        else ("videos", VIDEO_QUERY, _video)
        for k in found
    ]
    with engine.connect() as conn:
        for table, query, mapper in plan:
            result = conn.execution_options(stream_results=True, yield_per=READ_BATCH)
            for part in result.execute(query).partitions(READ_BATCH):
                for row in part:
                    report.rows += 1
                    where = f"{table} row {row[0]}"
                    try:
                        yield parse_event(mapper(row), where)
                    except _Unmappable as exc:
                        report.skipped.append(EventError(where, str(exc)))
                    except EventError as exc:
                        report.skipped.append(exc)
                if progress is not None:
                    progress(len(part))


def backfill(
    url: str,
    publisher: Publisher,
    progress: Callable[[int], None] | None = None,
    engine: sa.Engine | None = None,
) -> BackfillReport:
    """Publish the events of the site database at ``url`` through ``publisher``.

    Raises:
        UnknownDatabase: when the database is not shaped like a site's.
    """
    owned = engine is None
    engine = engine or sa.create_engine(url)
    try:
        found = kinds(engine)
        report = BackfillReport()
        published = publisher.publish(site_events(engine, found, report, progress))
        report.published, report.jobs = published.accepted, published.jobs
        log.debug(
            "backfilled %d of %d row(s) from %s; %d reported",
            report.published,
            report.rows,
            engine.url.render_as_string(hide_password=True),
            len(report.skipped),
        )
        return report
    finally:
        if owned:
            engine.dispose()
