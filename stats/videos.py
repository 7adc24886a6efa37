"""Creator-video state: applying video events and answering insight reads, one script call each."""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from events.schemas import VideoDeleted, VideoEvent, VideoPosted
from stats import keys
from stats.dates import ymd
from stats.scripts import script
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

RATE_SPLIT = 10**12
"""Rate units are stored as ``rh * RATE_SPLIT + rl`` so each part stays a small integer."""

RATE_UNITS_PER_PERCENT = 10**7
"""Engagement rates are kept in exact integer units of 1e-7 percent."""

FIELD_SEP = "\x1f"
"""Joins the fields of an event argument and of a record (ids are printable, so never hold it)."""

HASHTAG_SEP = "\x1e"
"""Joins a video's hashtags in its record (hashtags are printable, so never hold it)."""

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


def _event_arg(event: VideoEvent) -> str:
    """One event as ``video_apply.lua`` takes it: 13 fields joined by 0x1F."""
    if isinstance(event, VideoDeleted):
        return FIELD_SEP.join(["D", event.video_id, event.version, *[""] * 10])
    rh, rl = divmod(event.rate_units(), RATE_SPLIT)
    counts = [
        str(n)
        for n in (
            event.views,
            event.likes,
            event.comments,
            event.shares,
            event.bookmarks,
            event.new_followers,
            rh,
            rl,
        )
    ]
    if isinstance(event, VideoPosted):
        tags = HASHTAG_SEP.join(event.hashtags or [])
        head = ["P", event.video_id, event.version, event.date_posted.isoformat(), tags]
    else:
        head = ["M", event.video_id, event.version, "", ""]
    return FIELD_SEP.join(head + counts)


def _int(value: str | None) -> int:
    """A sum as the read script returns it: a decimal string, or None for 0."""
    return int(value) if value else 0


def _mean_rate(videos: int, rh: str | None, rl: str | None) -> float:
    """Mean engagement rate in percent of ``videos`` whose rate units sum to rh, rl."""
    if videos == 0:
        return 0.0
    units = _int(rh) * RATE_SPLIT + _int(rl)
    return units / (videos * RATE_UNITS_PER_PERCENT)  # exact ints: one correctly rounded division


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
            redis.ResponseError: when a creator's sums would outgrow 64-bit integers;
                that creator's chunk is refused whole, the other chunks are applied.
        """
        by_creator: dict[str, list[VideoEvent]] = defaultdict(list)
        for event in events:
            by_creator[event.creator].append(event)
        if not by_creator:
            return ApplyResult()
        apply_script = script(self.client, "video_apply")
        pipe = self.client.pipeline(transaction=False)
        for creator, batch in by_creator.items():
            pipe.sadd(keys.creators_key(self.prefix), creator)
            ckeys = list(self.keys(creator))
            for start in range(0, len(batch), EVENTS_PER_CALL):
                args = [_event_arg(event) for event in batch[start : start + EVENTS_PER_CALL]]
                apply_script(keys=ckeys, args=args, client=pipe)
        result = ApplyResult()
        for reply in pipe.execute():
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
        return Hashtags(top_hashtags=rows, total_unique_hashtags=int(r[0]))

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
