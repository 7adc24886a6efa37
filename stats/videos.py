"""Creator-video state: applying video events and answering insight reads, one script call each."""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from redis.exceptions import ResponseError

from events.schemas import VideoEvent
from events.wire import RATE_SPLIT, Record, record_of
from stats import keys
from stats.dates import ymd
from stats.scripts import script
from stats.sending import CommandStream
from stats.setlists import ApplyResult
from stats.video_models import (
    DataPoint,
    DayName,
    Hashtags,
    HashtagStats,
    Overview,
    OverviewMetrics,
    PostingTime,
    TimeSeries,
    WeekdayStats,
)

log = logging.getLogger(__name__)

EVENTS_PER_CALL = 1000
"""Events applied by one script call: bounds how long Redis is busy with one call."""

RATE_UNITS_PER_PERCENT = 10**7
"""Engagement rates are kept in exact integer units of 1e-7 percent."""

FIELD_SEP = "\x1f"
"""Joins the fields of an event argument and of a record (ids are printable, so never hold it)."""

DELETED_TAIL = FIELD_SEP * 10
"""The ten empty fields that end a ``video.deleted`` argument."""

WEEKDAYS: tuple[DayName, ...] = (
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
)


class UnknownCreator(LookupError):
    """No video event of this creator has been applied."""


def _int(value: str | None) -> int:
    """A sum as the read script returns it: a decimal string, or None for 0."""
    return int(value) if value else 0


def _mean_rate(videos: int, rh: str | None, rl: str | None) -> float:
    """Mean engagement rate in percent of ``videos`` whose rate units sum to rh, rl."""
    if videos == 0:
        return 0.0
    units = _int(rh) * RATE_SPLIT + _int(rl)
    return units / (videos * RATE_UNITS_PER_PERCENT)  # exact ints: one correctly rounded division


class SumsOverflow(ResponseError):
    """A creator's sums would pass 64-bit integers: that creator's events of the batch
    are refused whole, and sending them again cannot help."""


OVERFLOW_CODE = "SUMSOVERFLOW"
"""The error code ``video_apply.lua`` answers with when it refuses a creator's call for
overflow (as ``STATELAYOUT`` names a layout refusal of the setlist scripts)."""


class VideoStore:
    """Per-creator video state in Redis (see ``stats.keys`` for the schema)."""

    def __init__(self, client: Any, prefix: str) -> None:
        """Args:
        client: a redis-py client created with ``decode_responses=True``.
        prefix: the key prefix.
        """
        self.client = client
        self.prefix = prefix

    def keys(self, creator: str) -> keys.CreatorKeys:
        """The keys of ``creator``."""
        return keys.creator_keys(self.prefix, creator)

    # -- writes ---------------------------------------------------------------

    def apply(self, events: Iterable[VideoEvent]) -> ApplyResult:
        """Apply events (any order, duplicates welcome); one script call per creator chunk.

        Raises:
            SumsOverflow: when a creator's sums would outgrow 64-bit integers; that
                creator's chunk is refused whole, the other chunks are applied.
        """
        return self.apply_records([record_of(event) for event in events])

    def apply_records(self, records: Iterable[Record]) -> ApplyResult:
        """Apply ``P``/``M``/``D`` wire records (``events.wire``), as :meth:`apply` does events.

        Raises:
            SumsOverflow: as :meth:`apply`.
        """
        by_creator: dict[str, list[str]] = defaultdict(list)
        for r in records:
            # video_apply.lua takes one argument per event: its 13 fields, 0x1F-joined.
            if r[0] == "D":
                by_creator[r[1]].append(f"D{FIELD_SEP}{r[2]}{FIELD_SEP}{r[3]}{DELETED_TAIL}")
            else:
                by_creator[r[1]].append(FIELD_SEP.join((r[0], *r[2:])))
        if not by_creator:
            return ApplyResult()
        apply_script = script(self.client, "video_apply")
        calls: list[str] = []  # the creator of each command sent
        with CommandStream(self.client) as stream:
            for creator, args in by_creator.items():
                stream.command("SADD", keys.creators_key(self.prefix), creator)
                calls.append(creator)
                ckeys = list(self.keys(creator))
                for start in range(0, len(args), EVENTS_PER_CALL):
                    stream.script(apply_script, ckeys, args[start : start + EVENTS_PER_CALL])
                    calls.append(creator)
            replies = stream.replies()
        result = ApplyResult()
        for creator, reply in zip(calls, replies, strict=True):
            if isinstance(reply, ResponseError):
                overflow = str(reply).split()[:1] == [OVERFLOW_CODE]
                kind = SumsOverflow if overflow else type(reply)
                raise kind(f"creator {creator!r}: {reply}")
            if isinstance(reply, list):
                result += ApplyResult(int(reply[0]), int(reply[1]))
        log.debug(
            "video events of %d creator(s): %d applied, %d stale",
            len(by_creator),
            result.applied,
            result.stale,
        )
        return result

    def creators(self) -> list[str]:
        """Every creator with state, sorted."""
        return sorted(self.client.smembers(keys.creators_key(self.prefix)))

    # -- reads ----------------------------------------------------------------

    def _read(self, creator: str, read: str, *params: Any) -> list[Any]:
        reply = script(self.client, "video_read")(
            keys=list(self.keys(creator)), args=[read, *params]
        )
        if reply is None:
            raise UnknownCreator(creator)
        return list(reply)

    def time_series(
        self, creator: str, start: dt.date | None = None, end: dt.date | None = None
    ) -> TimeSeries:
        """One point per posting date within [start, end] (inclusive, open when None).

        Raises:
            UnknownCreator: when the creator has no state.
        """
        r = self._read(
            creator,
            "series",
            "-inf" if start is None else ymd(start),
            "+inf" if end is None else ymd(end),
        )
        points = []
        for i in range(0, len(r), 6):
            date, n, views, followers, rh, rl = r[i : i + 6]
            videos = _int(n)
            points.append(
                DataPoint(
                    date=dt.date.fromisoformat(date),
                    views=_int(views),
                    engagement_rate=_mean_rate(videos, rh, rl),
                    new_followers=_int(followers),
                    video_count=videos,
                )
            )
        date_range = (points[0].date, points[-1].date) if points else None
        return TimeSeries(data_points=points, date_range=date_range)

    def overview(self, creator: str) -> Overview:
        """Totals over every present video.

        Raises:
            UnknownCreator: when the creator has no state.
        """
        first, last, n, views, likes, comments, shares, bookmarks, followers, rh, rl = self._read(
            creator, "overview"
        )
        videos = _int(n)
        return Overview(
            metrics=OverviewMetrics(
                total_videos=videos,
                total_views=_int(views),
                total_likes=_int(likes),
                total_comments=_int(comments),
                total_shares=_int(shares),
                total_bookmarks=_int(bookmarks),
                total_new_followers=_int(followers),
                avg_engagement_rate=_mean_rate(videos, rh, rl),
                date_range=(
                    (dt.date.fromisoformat(first), dt.date.fromisoformat(last)) if first else None
                ),
            )
        )

    def hashtags(self, creator: str, limit: int = 20) -> Hashtags:
        """The ``limit`` most viewed hashtags (ties by hashtag) and the number of hashtags.

        Raises:
            UnknownCreator: when the creator has no state.
            ValueError: when ``limit`` is below 1.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        r = self._read(creator, "hashtags", limit)
        rows = []
        for i in range(1, len(r), 5):
            tag, n, views, rh, rl = r[i : i + 5]
            videos, total_views = _int(n), _int(views)
            rows.append(
                HashtagStats(
                    hashtag=tag,
                    video_count=videos,
                    total_views=total_views,
                    avg_views=total_views / videos,
                    avg_engagement_rate=_mean_rate(videos, rh, rl),
                )
            )
        # Exact order: the script's is that of the scores, doubles (see video_read.lua).
        rows.sort(key=lambda row: (-row.total_views, row.hashtag))
        return Hashtags(top_hashtags=rows[:limit], total_unique_hashtags=int(r[0]))

    def posting_time(self, creator: str) -> PostingTime:
        """Videos, mean views and mean engagement per posting weekday, Monday first.

        Raises:
            UnknownCreator: when the creator has no state.
        """
        r = self._read(creator, "posting")
        days = []
        for weekday, name in enumerate(WEEKDAYS):
            n, views, rh, rl = r[4 * weekday : 4 * weekday + 4]
            videos = _int(n)
            if videos:
                days.append(
                    WeekdayStats(
                        day_of_week=name,
                        video_count=videos,
                        avg_views=_int(views) / videos,
                        avg_engagement_rate=_mean_rate(videos, rh, rl),
                    )
                )
        return PostingTime(by_day=days)
