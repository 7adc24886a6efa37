"""``statsworker verify``: every figure recomputed from the log and compared with Redis.

The expected figures come from set-based SQL (``worker.verify_sql``); Python only
formats them as the state stores them and compares. A difference is reported as the
Redis key, the figure (hash field or set member), the expected value and the value
found (``None`` when absent). Run it on a quiet system: an event logged but not yet
applied by a worker shows as a difference until it is.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from stats import keys
from worker import verify_sql as q
from worker.connections import Connections
from worker.eventlog import EventLog
from worker.rebuild import scopes
from worker.rebuild_setlists import song_dates, trend_line

log = logging.getLogger(__name__)

SEP = "\x1f"
"""Field separator inside stored values (as in the scripts)."""

RECORD_SEP = "\x1e"
"""Separates the records of a ``perf`` bucket (as in the scripts)."""

RATE_UNITS = 10**7
"""Stored engagement rates are integers in units of 1e-7 percent."""

RATE_SPLIT = 10**12
"""A stored rate sum is ``rh * RATE_SPLIT + rl``."""


@dataclass(frozen=True)
class Drift:
    """One figure on which Redis and the log disagree."""

    key: str
    figure: str
    expected: str | None
    found: str | None

    def __str__(self) -> str:
        def show(value: str | None) -> str:
            if value is None:
                return "(absent)"
            return value.replace("\x00", "\\0").replace(SEP, "\\x1f")

        return (
            f"{self.key}\t{show(self.figure)}"
            f"\texpected {show(self.expected)}\tfound {show(self.found)}"
        )


def _ymd(date: str) -> str:
    return date.replace("-", "")


def _score(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def compare(key: str, expected: dict[str, str], found: dict[str, str]) -> Iterator[Drift]:
    """The differences between two views of one key, figure by figure, sorted."""
    for figure in sorted(expected.keys() | found.keys()):
        want, got = expected.get(figure), found.get(figure)
        if want != got:
            yield Drift(key, figure, want, got)


class Verifier:
    """Compares the state behind ``conns`` with what ``eventlog`` says it must be."""

    def __init__(self, conns: Connections, eventlog: EventLog) -> None:
        self.conns = conns
        self.client = conns.state
        self.prefix = conns.settings.key_prefix
        self.eventlog = eventlog
        self.dialect = eventlog.dialect
        self._scopes: dict[tuple[str | None, str | None], tuple[list[str], list[str]]] = {}
        self.old_layouts: list[str] = []
        """Verticals found in an earlier layout (see :meth:`vertical`)."""

    def _rows(self, query: sa.Select[Any]) -> list[Any]:
        with self.eventlog.engine.connect() as conn:
            return list(conn.execute(query))

    def _hash(self, key: str) -> dict[str, str]:
        found = dict(self.client.hscan_iter(key, count=5000))
        found.pop(keys.PIN_FIELD, None)  # how the hash is stored, not what it holds
        return found

    def _zset(self, key: str) -> dict[str, str]:
        return {m: _score(s) for m, s in self.client.zscan_iter(key, count=5000)}

    def scopes(self, vertical: str | None, creator: str | None) -> tuple[list[str], list[str]]:
        """The verticals and creators :meth:`run` compares (:func:`worker.rebuild.scopes`),
        listed once per verifier: the command asks for them first, to size its progress
        bar, and a full list reads the whole log's index."""
        key = (vertical, creator)
        if key not in self._scopes:
            self._scopes[key] = scopes(self.conns, self.eventlog, vertical, creator)
        return self._scopes[key]

    def run(
        self,
        vertical: str | None = None,
        creator: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Drift]:
        """Every difference, for one vertical, one creator or (neither given) everything;
        ``progress(1)`` after each vertical and creator."""
        drifts: list[Drift] = []
        if vertical is None and creator is None:
            drifts += self._registry(
                keys.verticals_key(self.prefix),
                self.eventlog.verticals(),
                self.conns.setlists.verticals(),
            )
            drifts += self._registry(
                keys.creators_key(self.prefix),
                self.eventlog.creators(),
                self.conns.videos.creators(),
            )
        verticals, creators = self.scopes(vertical, creator)
        for check, names in ((self.vertical, verticals), (self.creator, creators)):
            for name in names:
                drifts += check(name)
                if progress is not None:
                    progress(1)
        return drifts

    def _registry(self, key: str, logged: Iterable[str], live: Iterable[str]) -> list[Drift]:
        expected = dict.fromkeys(logged, "member")
        return list(compare(key, expected, dict.fromkeys(live, "member")))

    # -- setlists ---------------------------------------------------------------

    def vertical(self, vertical: str) -> list[Drift]:
        """Differences in one vertical's keys."""
        k = keys.vertical_keys(self.prefix, vertical)
        layout = self.client.hget(k.meta, "layout")
        if layout != keys.SETLIST_LAYOUT and self.client.exists(k.meta):
            # State an earlier version wrote: its keys have other shapes (the reads below
            # met a sorted set where a hash is kept now, WRONGTYPE), and it is neither
            # read nor extended until a rebuild rewrites it. One difference says so.
            self.old_layouts.append(vertical)
            return [Drift(k.meta, "layout", keys.SETLIST_LAYOUT, layout)]
        d = self.dialect
        winners = self._rows(q.winners_query(d, vertical))
        stored_today = self.client.hget(k.meta, "today")
        drifts: list[Drift] = []
        if winners and stored_today is None:
            drifts.append(Drift(k.meta, "today", "a date", None))
        if not winners and stored_today is not None:
            drifts.append(Drift(k.meta, "today", None, stored_today))
        today = (
            dt.date.fromisoformat(stored_today)
            if stored_today
            else self.conns.settings.current_date()
        )

        titles = {str(song): str(title) for song, title in self._rows(q.titles_query(d, vertical))}
        drifts += compare(k.titles, titles, self._hash(k.titles))
        records: dict[int, list[str]] = defaultdict(list)
        showplays: dict[str, list[str]] = defaultdict(list)
        song_plays: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for pid, version, kind, song, show_id, date, title in winners:
            bucket = records[keys.perf_bucket(pid, len(winners))]
            if kind == q.RECORDED:
                show = f"{date}\0{show_id}"
                bucket.append(f"{pid}{SEP}{keys.stored_version(version)}{SEP}{show}")
                shown = "" if title == titles.get(song) else title
                showplays[show].append(f"{song}\0{pid}\0{shown}")
                song_plays[song].append((date, pid))
            else:
                bucket.append(f"{pid}{SEP}{keys.stored_version(version)}")
        drifts += compare(
            k.perf,
            {str(b): RECORD_SEP.join(sorted(recs)) for b, recs in records.items()},
            self._hash(k.perf),
        )
        drifts += compare(
            k.showplays,
            {show: SEP.join(sorted(entries)) for show, entries in showplays.items()},
            self._hash(k.showplays),
        )
        songplays: dict[str, str] = {}
        songyears: dict[str, str] = {}
        for song, plays in song_plays.items():
            chunks, songyears[song] = song_dates(sorted(plays))
            for year, chunk in chunks.items():
                songplays[f"{song}\0{year}"] = chunk
        drifts += compare(k.songplays, songplays, self._hash(k.songplays))
        drifts += compare(k.songyears, songyears, self._hash(k.songyears))
        present = sum(len(plays) for plays in song_plays.values())
        figures = ("plays", "layout", "records")
        meta = dict(zip(figures, self.client.hmget(k.meta, *figures), strict=True))
        held = {"layout": keys.SETLIST_LAYOUT, "records": str(len(winners))} if winners else {}
        drifts += compare(
            k.meta,
            {**({"plays": str(present)} if present else {}), **held},
            {figure: value for figure, value in meta.items() if value is not None},
        )

        shows = self._rows(q.shows_query(d, vertical))
        drifts += compare(
            k.shows, {f"{date}\0{sid}": _ymd(date) for date, sid, _ in shows}, self._zset(k.shows)
        )
        months: dict[str, str] = {}
        for month, perfs, nshows in self._rows(q.months_query(d, vertical)):
            months[f"p:{month}"], months[f"s:{month}"] = str(perfs), str(nshows)
            year = f"y:{month[:4]}"
            months[year] = str(int(months.get(year, 0)) + perfs)
        drifts += compare(k.months, months, self._hash(k.months))
        counts = {field: int(n) for field, n in months.items()}
        trend = trend_line(counts) if counts else None
        drifts += compare(
            k.trend,
            {"value": trend} if trend else {},
            {"value": v} if (v := self.client.get(k.trend)) else {},
        )

        songs, bylast, byfirst, win, vel = {}, {}, {}, {}, {}
        now = (today - dt.date(1970, 1, 1)).days
        for song, n, first, last, title, p30, p90, p365, first_day in self._rows(
            q.songs_query(d, vertical, today)
        ):
            songs[song] = f"{n}{SEP}{title}"
            bylast[song], byfirst[song] = _ymd(last), _ymd(first)
            if p30 or p90 or p365:
                win[song] = f"{p30}{SEP}{p90}{SEP}{p365}"
            if first_day <= now:
                vel[song] = str(-(3 * p30 + 2 * p90 + p365))
        drifts += compare(k.songs, songs, self._hash(k.songs))
        drifts += compare(k.bylast, bylast, self._zset(k.bylast))
        drifts += compare(k.byfirst, byfirst, self._zset(k.byfirst))
        drifts += compare(k.win, win, self._hash(k.win))
        drifts += compare(k.vel, vel, self._zset(k.vel))

        bust = {
            f"{song}\0{show_id}\0{pid}\0{prev}": _ymd(date)
            for song, show_id, pid, date, prev in self._rows(
                q.bustouts_query(d, vertical, keys.BUSTOUT_INDEX_DAYS)
            )
        }
        drifts += compare(k.bust, bust, self._zset(k.bust))
        return drifts

    # -- videos -----------------------------------------------------------------

    def creator(self, creator: str) -> list[Drift]:
        """Differences in one creator's sums per day, weekday and hashtag and in total,
        and in the indexes of days and hashtags (the per-video records are not compared:
        their layout belongs to the video script)."""
        k = keys.creator_keys(self.prefix, creator)
        drifts: list[Drift] = []
        days: dict[str, str] = {}
        tagviews: dict[str, str] = {}
        for by, key in (
            ("date", k.day),
            ("weekday", k.dow),
            ("hashtag", k.tags),
            ("total", k.totals),
        ):
            found = self._hash(key)
            expected: dict[str, str] = {}
            rates: dict[str, tuple[float, int]] = {}
            for grp, n, *sums, rate in self._rows(q.video_sums_query(self.dialect, creator, by)):
                head = "" if by == "total" else f"{grp}:"
                if by == "date":
                    days[str(grp)] = "member"
                if by == "hashtag":
                    # The score is the double nearest the exact sum, which `tags` holds.
                    tagviews[str(grp)] = _score(float(-int(sums[0] or 0)))
                for name, value in zip(("n", *q.COUNTS), (n, *sums), strict=True):
                    if value:  # a zero sum is an absent field
                        expected[head + name] = str(value)
                rates[head] = (float(rate or 0.0), int(n))
            counted = {f: v for f, v in found.items() if not f.endswith(("rh", "rl"))}
            drifts += compare(key, expected, counted)
            drifts += self._rates(key, rates, found)
        drifts += compare(k.days, days, {m: "member" for m, _ in self.client.zscan_iter(k.days)})
        drifts += compare(k.tagviews, tagviews, self._zset(k.tagviews))
        return drifts

    def _rates(
        self, key: str, expected: dict[str, tuple[float, int]], found: dict[str, str]
    ) -> Iterator[Drift]:
        """Engagement-rate sums: each video's rate is stored rounded to 1e-7 percent."""
        heads = set(expected) | {f[: -len("rh")] for f in found if f.endswith("rh")}
        heads |= {f[: -len("rl")] for f in found if f.endswith("rl")}
        for head in sorted(heads):
            want, videos = expected.get(head, (0.0, 0))
            units = int(found.get(head + "rh", 0)) * RATE_SPLIT + int(found.get(head + "rl", 0))
            got = units / RATE_UNITS
            if abs(got - want) > videos * 1e-7 + 1e-9 * abs(want) + 1e-9:
                yield Drift(key, head + "engagement_rate_sum", f"{want:.7f}", f"{got:.7f}")


def verify(
    conns: Connections,
    eventlog: EventLog,
    vertical: str | None = None,
    creator: str | None = None,
) -> list[Drift]:
    """Every difference between the Redis state and the log (empty when they agree)."""
    return Verifier(conns, eventlog).run(vertical, creator)
