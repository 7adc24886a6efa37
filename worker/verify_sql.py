"""The set-based SQL behind ``statsworker verify``: every figure recomputed from the log.

Each query is one statement over ``event_log`` (window functions pick each
performance's or video's winning events), portable between PostgreSQL and SQLite
through SQLAlchemy Core; only comparisons of text that must follow byte order get a
``COLLATE "C"`` on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from worker.log_table import event_log

RECORDED = "performance.recorded"
POSTED, UPDATED, DELETED = "video.posted", "video.metrics_updated", "video.deleted"
COUNTS = ("views", "likes", "comments", "shares", "bookmarks", "new_followers")
"""The counts of a video, in the order of the ``day``/``totals`` fields."""


class day_number(FunctionElement[int]):
    """Days since 1970-01-01 of a ``YYYY-MM-DD`` text, in SQL."""

    type = sa.Integer()
    inherit_cache = True


@compiles(day_number, "sqlite")
def _day_number_sqlite(element: day_number, compiler: Any, **kw: Any) -> str:
    return f"CAST(julianday({compiler.process(element.clauses, **kw)}) - 2440587.5 AS INTEGER)"


@compiles(day_number, "postgresql")
def _day_number_pg(element: day_number, compiler: Any, **kw: Any) -> str:
    return f"(CAST({compiler.process(element.clauses, **kw)} AS DATE) - DATE '1970-01-01')"


def bytewise(dialect: str, column: Any) -> Any:
    """``column`` compared in byte order (PostgreSQL's collations may ignore punctuation)."""
    return column.collate("C") if dialect == "postgresql" else column


def performance_winners(dialect: str, vertical: str) -> sa.CTE:
    """Per performance of ``vertical`` its winning event (greatest version)."""
    c, body = event_log.c, event_log.c.body
    ranked = (
        sa.select(
            c.entity_id.label("pid"),
            c.type,
            c.version,
            body["song"].as_string().label("song"),
            body["show_id"].as_string().label("show_id"),
            body["show_date"].as_string().label("show_date"),
            sa.func.coalesce(body["song_title"].as_string(), body["song"].as_string()).label(
                "title"
            ),
            sa.func.row_number()
            .over(partition_by=c.entity_id, order_by=bytewise(dialect, c.version).desc())
            .label("rn"),
        )
        .where(c.vertical == vertical)
        .cte("ranked")
    )
    return sa.select(ranked).where(ranked.c.rn == 1).cte("winners")


def titles_query(dialect: str, vertical: str) -> sa.Select[Any]:
    """song, least title (in byte order) over every recorded event of the song."""
    c, body = event_log.c, event_log.c.body
    song = body["song"].as_string()
    title = sa.func.coalesce(body["song_title"].as_string(), song)
    return (
        sa.select(song, sa.func.min(bytewise(dialect, title)))
        .where(c.vertical == vertical, c.type == RECORDED)
        .group_by(song)
    )


def present_plays(dialect: str, vertical: str) -> tuple[sa.CTE, sa.CTE]:
    """The winners, and the present plays among them with their day number."""
    winners = performance_winners(dialect, vertical)
    plays = (
        sa.select(
            winners.c.pid,
            winners.c.song,
            winners.c.show_id,
            winners.c.show_date,
            winners.c.title,
            day_number(winners.c.show_date).label("day"),
        )
        .where(winners.c.type == RECORDED)
        .cte("plays")
    )
    return winners, plays


def winners_query(dialect: str, vertical: str) -> sa.Select[Any]:
    """pid, version, type, song, show_id, show_date, title of each winning event."""
    winners = performance_winners(dialect, vertical)
    return sa.select(
        winners.c.pid,
        winners.c.version,
        winners.c.type,
        winners.c.song,
        winners.c.show_id,
        winners.c.show_date,
        winners.c.title,
    )


def shows_query(dialect: str, vertical: str) -> sa.Select[Any]:
    """show_date, show_id, performances: the shows with a present performance."""
    _, plays = present_plays(dialect, vertical)
    return sa.select(plays.c.show_date, plays.c.show_id, sa.func.count()).group_by(
        plays.c.show_date, plays.c.show_id
    )


def months_query(dialect: str, vertical: str) -> sa.Select[Any]:
    """month, performances, shows of every month with a present performance."""
    _, plays = present_plays(dialect, vertical)
    month = sa.func.substr(plays.c.show_date, 1, 7)
    return sa.select(
        month,
        sa.func.count(),
        # dates have a fixed width, so date || show_id names a show without a separator
        sa.func.count(sa.distinct(plays.c.show_date + plays.c.show_id)),
    ).group_by(month)


def songs_query(dialect: str, vertical: str, today: dt.date) -> sa.Select[Any]:
    """Per song: plays, first and last date, title of the last play, plays in the windows.

    The title is that of the latest play by (date, performance_id); the windows are
    the 30, 90 and 365 days ending on ``today`` (the day the state keeps them for).
    """
    _, plays = present_plays(dialect, vertical)
    now = (today - dt.date(1970, 1, 1)).days
    ordered = sa.select(
        plays,
        sa.func.row_number()
        .over(
            partition_by=plays.c.song,
            order_by=(plays.c.show_date.desc(), bytewise(dialect, plays.c.pid).desc()),
        )
        .label("recency"),
    ).cte("ordered")

    def window(days: int) -> Any:
        inside = sa.and_(ordered.c.day > now - days, ordered.c.day <= now)
        return sa.func.sum(sa.case((inside, 1), else_=0))

    return sa.select(
        ordered.c.song,
        sa.func.count(),
        sa.func.min(ordered.c.show_date),
        sa.func.max(ordered.c.show_date),
        sa.func.max(sa.case((ordered.c.recency == 1, ordered.c.title))),
        window(30),
        window(90),
        window(365),
        sa.func.min(ordered.c.day),
    ).group_by(ordered.c.song)


def bustouts_query(dialect: str, vertical: str, gap_days: int) -> sa.Select[Any]:
    """song, show_id, pid, show_date and the previous play's date of each play whose
    previous play of the song (by date, then performance_id) is >= gap_days earlier."""
    _, plays = present_plays(dialect, vertical)
    with_previous = sa.select(
        plays.c.song,
        plays.c.show_id,
        plays.c.pid,
        plays.c.show_date,
        plays.c.day,
        sa.func.lag(plays.c.day)
        .over(
            partition_by=plays.c.song,
            order_by=(plays.c.show_date, bytewise(dialect, plays.c.pid)),
        )
        .label("previous"),
        sa.func.lag(plays.c.show_date)
        .over(
            partition_by=plays.c.song,
            order_by=(plays.c.show_date, bytewise(dialect, plays.c.pid)),
        )
        .label("previous_date"),
    ).cte("with_previous")
    w = with_previous.c
    return sa.select(w.song, w.show_id, w.pid, w.show_date, w.previous_date).where(
        with_previous.c.day - with_previous.c.previous >= gap_days
    )


def present_videos(dialect: str, creator: str) -> sa.CTE:
    """Per present video of ``creator``: date_posted, day number and winning metrics.

    A video is present while its latest ``video.posted`` beats every ``video.deleted``;
    its metrics come from its latest event among ``video.posted`` and
    ``video.metrics_updated``.
    """
    c, body = event_log.c, event_log.c.body
    kind = sa.case((c.type == DELETED, "d"), else_="m")
    latest = bytewise(dialect, c.version).desc()
    ranked = (
        sa.select(
            c.entity_id.label("video_id"),
            c.type,
            c.version,
            body["date_posted"].as_string().label("date_posted"),
            _hashtag_array(dialect, body).label("hashtags"),
            # BIGINT: counts reach 10**15, and as_integer() casts to a 32-bit INTEGER
            # on PostgreSQL.
            *(sa.cast(body[name].as_string(), sa.BigInteger).label(name) for name in COUNTS),
            sa.func.row_number()
            .over(partition_by=(c.entity_id, c.type), order_by=latest)
            .label("latest_of_type"),
            sa.func.row_number()
            .over(partition_by=(c.entity_id, kind), order_by=latest)
            .label("latest_of_kind"),
        )
        .where(c.creator == creator)
        .cte("ranked_videos")
    )
    posted = (
        sa.select(ranked)
        .where(ranked.c.type == POSTED, ranked.c.latest_of_type == 1)
        .subquery("posted")
    )
    metrics = (
        sa.select(ranked)
        .where(ranked.c.type != DELETED, ranked.c.latest_of_kind == 1)
        .subquery("metrics")
    )
    deleted = (
        sa.select(ranked.c.video_id, ranked.c.version)
        .where(ranked.c.type == DELETED, ranked.c.latest_of_type == 1)
        .subquery("deleted")
    )
    return (
        sa.select(
            posted.c.video_id,
            posted.c.date_posted,
            posted.c.hashtags,
            day_number(posted.c.date_posted).label("day"),
            *(metrics.c[name] for name in COUNTS),
        )
        .join(metrics, metrics.c.video_id == posted.c.video_id)
        .outerjoin(deleted, deleted.c.video_id == posted.c.video_id)
        .where(
            sa.or_(
                deleted.c.version.is_(None),
                bytewise(dialect, posted.c.version) > bytewise(dialect, deleted.c.version),
            )
        )
        .cte("present_videos")
    )


def _hashtag_array(dialect: str, body: Any) -> Any:
    """A body's ``hashtags`` when they are an array, else NULL: a body logged as it
    arrived may have none, or ``null``, which SQLite's JSON index turned into the JSON
    text ``null``, itself a one-row table (a hashtag "None") to ``json_each``."""
    if dialect == "postgresql":
        tags = body["hashtags"]
        return sa.case((sa.func.jsonb_typeof(tags) == "array", tags), else_=sa.null())
    return sa.case(
        (
            sa.func.json_type(body, "$.hashtags") == "array",
            sa.func.json_extract(body, "$.hashtags"),
        ),
        else_=sa.null(),
    )


def _hashtags(dialect: str, videos: sa.CTE) -> Any:
    """A table of each present video's hashtags (column ``value``), joined per video."""
    if dialect == "postgresql":
        fn = sa.func.jsonb_array_elements_text(videos.c.hashtags)
        return fn.table_valued("value").lateral("tags")
    return sa.func.json_each(videos.c.hashtags).table_valued("value").alias("tags")


def video_sums_query(dialect: str, creator: str, by: str) -> sa.Select[Any]:
    """Sums over present videos grouped ``by`` date, weekday (Monday = 0), hashtag (a
    video counts once in each of its hashtags) or nothing (``total``).

    Columns: group, videos, the six counts, and the sum of engagement rates in percent
    (a float; the state keeps it exact, so the comparison allows rounding).
    """
    v: Any = present_videos(dialect, creator)
    if by == "hashtag":
        # One row per video and tag. Bodies logged before every leading '#' was dropped
        # hold a tag such as '#x' (from '##x'): a replay reads it as 'x', and so does this.
        tags = _hashtags(dialect, v)
        v = (
            sa.select(
                v.c.video_id,
                *(v.c[name] for name in COUNTS),
                sa.func.ltrim(tags.c.value, "#").label("tag"),
            )
            .select_from(v.join(tags, sa.true()))
            .distinct()
            .subquery("tagged")
        )
    engaged = v.c.likes + v.c.comments + v.c.shares + v.c.bookmarks
    rate = sa.case(
        (v.c.views == 0, 0.0),
        else_=sa.cast(engaged, sa.Float) * 100.0 / sa.cast(v.c.views, sa.Float),
    )
    group: Any
    if by == "date":
        group = v.c.date_posted
    elif by == "weekday":
        # 1970-01-01 was a Thursday; SQL's % keeps the sign of a day before it, Lua's not
        group = ((v.c.day + 3) % 7 + 7) % 7
    elif by == "hashtag":
        group = v.c.tag
    else:
        group = sa.literal("total")
    query = sa.select(
        group.label("grp"),
        sa.func.count(),
        *(sa.func.sum(v.c[name]) for name in COUNTS),
        sa.func.sum(rate),
    )
    return query if by == "total" else query.group_by(group)
