"""Setlist state: applying performance events and answering reads, one script call each."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from redis.exceptions import ResponseError

from events.schemas import PerformanceEvent
from events.wire import Record, record_of
from stats import keys
from stats.dates import from_ymd, round1, ymd
from stats.scripts import script
from stats.sending import CommandStream
from stats.setlist_models import (
    Bustout,
    Bustouts,
    Debut,
    Debuts,
    GapRow,
    SongFigures,
    Trends,
    VelocityRow,
    VerticalStats,
)

log = logging.getLogger(__name__)

EVENTS_PER_CALL = 1000
"""Events applied by one script call: bounds how long Redis is busy with one call."""

ARGS_PER_EVENT = 6
"""Arguments ``setlist_apply.lua`` takes per event (see :func:`event_args`)."""


class UnknownVertical(LookupError):
    """No performance event of this vertical has been applied."""


class StateNeedsRebuild(RuntimeError):
    """A vertical's state is in an earlier layout (``stats.keys.SETLIST_LAYOUT``): the
    scripts neither read nor extend it until ``statsworker rebuild`` rewrites it."""

    def __init__(self, vertical: str, found: str) -> None:
        super().__init__(
            f"the state of vertical {vertical!r} is in layout {found}, this version keeps"
            f" layout {keys.SETLIST_LAYOUT}: run `statsworker rebuild --vertical {vertical}`"
        )
        self.vertical = vertical


def _script_error(vertical: str, error: ResponseError) -> Exception:
    """The error a script's error reply stands for: StateNeedsRebuild for a layout refusal,
    else the reply's error naming the vertical."""
    words = str(error).split()
    if words[:1] == ["STATELAYOUT"]:
        return StateNeedsRebuild(vertical, words[1] if len(words) > 1 else "?")
    return type(error)(f"vertical {vertical!r}: {error}")


@dataclass(frozen=True)
class ApplyResult:
    """What a batch did: events that won (changed state) and events that lost (stale)."""

    applied: int = 0
    stale: int = 0

    def __add__(self, other: ApplyResult) -> ApplyResult:
        return ApplyResult(self.applied + other.applied, self.stale + other.stale)


class SetlistStore:
    """Per-vertical setlist state in Redis (see ``stats.keys`` for the schema)."""

    def __init__(self, client: Any, prefix: str) -> None:
        """Args:
        client: a redis-py client created with ``decode_responses=True``.
        prefix: the key prefix.
        """
        self.client = client
        self.prefix = prefix

    def keys(self, vertical: str) -> keys.VerticalKeys:
        """The keys of ``vertical``."""
        return keys.vertical_keys(self.prefix, vertical)

    # -- writes ---------------------------------------------------------------

    def apply(self, events: Iterable[PerformanceEvent], today: dt.date) -> ApplyResult:
        """Apply events (any order, duplicates welcome); one script call per vertical chunk."""
        return self.apply_records([record_of(event) for event in events], today)

    def apply_records(self, records: Iterable[Record], today: dt.date) -> ApplyResult:
        """Apply ``R``/``X`` wire records (``events.wire``), as :meth:`apply` applies events.

        Each call of :data:`EVENTS_PER_CALL` events is sent as soon as its arguments are
        built (``stats.sending``), so Redis runs one while the next is built."""
        apply_script = script(self.client, "setlist_apply")
        head: list[str | bytes] = list(apply_head(today))
        step = EVENTS_PER_CALL * ARGS_PER_EVENT
        calls: list[str] = []  # the vertical of each command sent
        pending: dict[str, list[str | bytes]] = {}
        with CommandStream(self.client) as stream:

            def send(vertical: str, args: list[str | bytes]) -> None:
                stream.script(apply_script, list(self.keys(vertical)), head + args)
                calls.append(vertical)

            for r in records:
                args = pending.get(r[1])
                if args is None:
                    args = pending[r[1]] = []
                    stream.command("SADD", keys.verticals_key(self.prefix), r[1])
                    calls.append(r[1])
                args += event_args(r)
                if len(args) >= step:
                    send(r[1], args)
                    pending[r[1]] = []
            for vertical, args in pending.items():
                if args:
                    send(vertical, args)
            replies = stream.replies() if calls else []
        result = ApplyResult()
        for name, reply in zip(calls, replies, strict=True):
            if isinstance(reply, ResponseError):
                raise _script_error(name, reply)
            if isinstance(reply, list):
                result += ApplyResult(int(reply[0]), int(reply[1]))
        return result

    def roll(self, vertical: str, today: dt.date) -> dt.date:
        """Move the windowed counters of ``vertical`` forward to ``today`` (no event
        applied); the day they are kept for afterwards, which stays a later one."""
        vkeys = self.keys(vertical)
        try:
            script(self.client, "setlist_apply")(keys=list(vkeys), args=apply_head(today))
        except ResponseError as exc:
            raise _script_error(vertical, exc) from None
        return dt.date.fromisoformat(self.client.hget(vkeys.meta, "today"))

    def verticals(self) -> list[str]:
        """Every vertical with state, sorted."""
        return sorted(self.client.smembers(keys.verticals_key(self.prefix)))

    # -- reads ----------------------------------------------------------------

    def _read(self, vertical: str, read: str, as_of: dt.date, *params: Any) -> list[Any]:
        try:
            reply = script(self.client, "setlist_read")(
                keys=list(self.keys(vertical)),
                args=[read, as_of.isoformat(), ymd(as_of), *params],
            )
        except ResponseError as exc:
            raise _script_error(vertical, exc) from None
        if reply is None:
            raise UnknownVertical(vertical)
        return list(reply)

    @staticmethod
    def _window_dates(as_of: dt.date) -> list[str]:
        return [(as_of - dt.timedelta(days=n)).isoformat() for n in (30, 90, 365)]

    def song(self, vertical: str, song: str, as_of: dt.date) -> SongFigures | None:
        """Every figure of one song; None when it has no play by ``as_of``."""
        r = self._read(vertical, "song", as_of, song, *self._window_dates(as_of))
        if not r:
            return None
        title, total, first_ymd, last_ymd, shows_since, p30, p90, p365 = r
        first, last = from_ymd(first_ymd), from_ymd(last_ymd)
        return SongFigures(
            song_id=song,
            song_slug=song,
            song_title=title,
            total_plays=total,
            first_played=first,
            last_played=last,
            days_since_played=(as_of - last).days,
            average_gap_days=_average_gap(first, last, total),
            shows_since_played=shows_since,
            plays_last_30_days=p30,
            plays_last_90_days=p90,
            plays_last_year=p365,
            velocity_score=3 * p30 + 2 * p90 + p365,
        )

    def gaps(self, vertical: str, as_of: dt.date, min_plays: int, limit: int) -> list[GapRow]:
        """Songs with ``total_plays >= min_plays``, longest since played first."""
        r = self._read(vertical, "gaps", as_of, min_plays, limit)
        rows = []
        for i in range(0, len(r), 6):
            song, title, last_ymd, total, first_ymd, shows_since = r[i : i + 6]
            last, first = from_ymd(last_ymd), from_ymd(first_ymd)
            rows.append(
                GapRow(
                    song_id=song,
                    song_title=title,
                    song_slug=song,
                    last_played=last,
                    days_since_played=(as_of - last).days,
                    total_plays=total,
                    average_gap_days=_average_gap(first, last, total),
                    shows_since_played=shows_since,
                )
            )
        return rows

    def velocity(self, vertical: str, as_of: dt.date, limit: int) -> list[VelocityRow]:
        """Songs with at least one play, highest ``3*p30 + 2*p90 + p365`` first."""
        r = self._read(vertical, "velocity", as_of, limit, *self._window_dates(as_of))
        rows = []
        for i in range(0, len(r), 6):
            song, title, p30, p90, p365, total = r[i : i + 6]
            rows.append(
                VelocityRow(
                    song_id=song,
                    song_title=title,
                    song_slug=song,
                    plays_last_30_days=p30,
                    plays_last_90_days=p90,
                    plays_last_year=p365,
                    total_plays=total,
                    velocity_score=3 * p30 + 2 * p90 + p365,
                )
            )
        return rows

    def trend_rows(self, vertical: str, as_of: dt.date, period: str) -> list[tuple[str, int, int]]:
        """``(period, shows, performances)`` per month or quarter with a show, oldest first."""
        packed, shows_now, perfs_now = self._read(
            vertical, "trends", as_of, ymd(as_of.replace(day=1))
        )
        rows = list(trend_lines(packed, period))
        if shows_now:
            if period == "month":
                now = f"{as_of.year:04d}-{as_of.month:02d}"
            else:
                now = f"{as_of.year:04d}-Q{(as_of.month + 2) // 3}"
            if rows and rows[-1][0] == now:  # a quarter begun before as_of's month
                rows[-1] = (now, rows[-1][1] + int(shows_now), rows[-1][2] + int(perfs_now))
            else:
                rows.append((now, int(shows_now), int(perfs_now)))
        return rows

    def trends(self, vertical: str, as_of: dt.date, period: str) -> Trends:
        """Shows and performances per month or quarter, oldest first."""
        return Trends.model_validate(
            {
                "vertical": vertical,
                "period_type": "month" if period == "month" else "quarter",
                "trends": [
                    {"period": key, "shows": s, "performances": p}
                    for key, s, p in self.trend_rows(vertical, as_of, period)
                ],
            }
        )

    def stats(self, vertical: str, as_of: dt.date) -> VerticalStats:
        """Band totals as of a date."""
        shows, perfs, played, first, last = self._read(vertical, "stats", as_of)
        return VerticalStats(
            vertical_id=vertical,
            vertical_name=vertical,
            vertical_slug=vertical,
            total_shows=shows,
            total_songs=played,  # a read sees only the plays up to as_of (SPEC section 2)
            total_performances=perfs,
            unique_songs_played=played,
            avg_songs_per_show=round1(perfs / shows) if shows else 0.0,
            first_show=from_ymd(first) if first is not None else None,
            last_show=from_ymd(last) if last is not None else None,
        )

    def bustouts(
        self,
        vertical: str,
        as_of: dt.date,
        days: int,
        gap_threshold: int,
        gap_shows_threshold: int | None,
    ) -> Bustouts:
        """Plays after a gap of at least ``gap_threshold`` days within the last ``days``."""
        r = self._read(
            vertical,
            "bustouts",
            as_of,
            ymd(as_of - dt.timedelta(days=days)),
            gap_threshold,
            gap_shows_threshold or 0,
            keys.BUSTOUT_INDEX_DAYS,
        )
        found: list[tuple[Any, ...]] = [tuple(r[i : i + 8]) for i in range(0, len(r), 8)]
        found.sort(key=lambda b: (-b[4], _desc(b[2]), b[0].encode(), b[7].encode()))
        return Bustouts(
            vertical=vertical,
            threshold_days=gap_threshold,
            bustouts=[
                Bustout(
                    song_title=title,
                    song_slug=song,
                    bustout_date=dt.date.fromisoformat(day),
                    show_slug=show_id,
                    gap_days=gap,
                    gap_shows=gap_shows,
                    previous_play=dt.date.fromisoformat(prev),
                )
                for song, title, day, show_id, gap, gap_shows, prev, _pid in found
            ],
        )

    def debuts(self, vertical: str, as_of: dt.date, days: int) -> Debuts:
        """Songs whose first play lies in the last ``days`` days, newest first."""
        r = self._read(vertical, "debuts", as_of, ymd(as_of - dt.timedelta(days=days)))
        found: list[tuple[Any, ...]] = [tuple(r[i : i + 5]) for i in range(0, len(r), 5)]
        found.sort(key=lambda d: (-int(d[2]), d[0].encode()))
        return Debuts(
            vertical=vertical,
            period_days=days,
            debuts=[
                Debut(
                    song_title=title,
                    song_slug=song,
                    debut_date=from_ymd(day),
                    show_slug=show_id,
                    times_played_since=total,
                )
                for song, title, day, show_id, total in found
            ],
        )


TREND_MEMO = 16
"""Stored trend strings (with a period) whose rows each process keeps."""


@lru_cache(maxsize=TREND_MEMO)
def trend_lines(packed: str, period: str) -> tuple[tuple[str, int, int], ...]:
    """The rows of ``packed``, lines of ``trend`` (``keys.TREND_WIDTH`` bytes a month:
    YYYYMM, shows, performances), by month or by quarter.

    Kept by the string itself: a read of unchanged history skips cutting it up (about
    1 us a row, thousands of rows for a long history), and a read after a write that
    changed a month gets another string, so the answer is never older than the state.
    """
    width = keys.TREND_WIDTH
    if period == "month":
        return tuple(
            (
                f"{packed[i : i + 4]}-{packed[i + 4 : i + 6]}",
                int(packed[i + 6 : i + 12]),
                int(packed[i + 12 : i + width]),
            )
            for i in range(0, len(packed), width)
        )
    rows: list[tuple[str, int, int]] = []
    for i in range(0, len(packed), width):
        quarter = f"{packed[i : i + 4]}-Q{(int(packed[i + 4 : i + 6]) + 2) // 3}"
        shows, perfs = int(packed[i + 6 : i + 12]), int(packed[i + 12 : i + width])
        if rows and rows[-1][0] == quarter:
            rows[-1] = (quarter, rows[-1][1] + shows, rows[-1][2] + perfs)
        else:
            rows.append((quarter, shows, perfs))
    return tuple(rows)


def apply_head(today: dt.date) -> list[str]:
    """The arguments ``setlist_apply.lua`` takes before the events."""
    return [today.isoformat(), str(keys.BUSTOUT_INDEX_DAYS), str(keys.PERF_BUCKET_LOAD)]


def event_args(record: Record) -> tuple[str | bytes, ...]:
    """The :data:`ARGS_PER_EVENT` arguments ``setlist_apply.lua`` takes for an ``R`` or
    ``X`` wire record: performance_id, stored version, song, show (show_date, a zero
    byte, show_id: the show as ``showplays`` names it), title (the last three empty for
    a retraction, which an empty show tells apart), and the performance_id's hash
    (``stats.keys.pid_hash``, which picks its ``perf`` bucket) as 4 bytes, big-endian.
    Computing the hash in the script took about 7,800 instructions an event (5 % of
    them); reading it from 4 bytes takes a few hundred."""
    pid = record[2]
    h = keys.pid_hash(pid).to_bytes(4, "big")
    if record[0] == "R":
        _, _, _, version, song, show, date, title = record
        return (pid, keys.stored_version(version), song, f"{date}\0{show}", title, h)
    return (pid, keys.stored_version(record[3]), "", "", "", h)


def _desc(date: str) -> int:
    """Sort key putting later ISO dates first."""
    return -int(date.replace("-", ""))


def _average_gap(first: dt.date, last: dt.date, total: int) -> float | None:
    """``(last - first) / (total - 1)`` in days, one decimal; None below two plays."""
    return round1((last - first).days / (total - 1)) if total > 1 else None
