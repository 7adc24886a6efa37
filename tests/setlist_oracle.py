"""A naive recompute of every setlist read, written from SPEC sections 1-3 alone.

It shares no code with ``stats``: it keeps the winning event of each performance in a
dict and answers each read by scanning every play, so it is slow and obviously right.
Where SPEC is silent it follows the project's recorded decisions:

- ``song_id`` is the slug; ``song_title`` is the title of the song's latest present
  performance dated on or before ``as_of`` (greatest show_date, then performance_id),
  the slug when that performance has none: a read sees no later play;
- ``show_slug`` is the show_id; ``vertical_id``, ``vertical_name`` and ``vertical_slug``
  are the vertical's slug;
- ``total_songs`` and ``unique_songs_played`` both count songs with a play on or before
  ``as_of``;
- a debut's ``times_played_since`` counts the song's plays up to ``as_of``, debut included;
- trends list only periods with at least one show;
- a vertical is unknown until some performance event of it (recorded or retracted) exists;
- averages use Python's ``round(x, 1)``;
- every tie is broken by song slug ascending in byte order; bustouts sort by gap_days
  desc, bustout_date desc, slug, performance_id; debuts newest first, then slug;
- gaps and velocity list only songs with at least one play by ``as_of``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from events.schemas import PerformanceRecorded, PerformanceRetracted, parse_event

PerformanceEvent = PerformanceRecorded | PerformanceRetracted
WINDOWS = {"plays_last_30_days": 30, "plays_last_90_days": 90, "plays_last_year": 365}


@dataclass(frozen=True)
class Play:
    """A present performance."""

    performance_id: str
    song: str
    show_id: str
    show_date: dt.date
    title: str

    @property
    def show(self) -> tuple[str, dt.date]:
        return (self.show_id, self.show_date)

    @property
    def order(self) -> tuple[dt.date, bytes]:
        """Plays of a song are ordered by date, then performance_id (byte order)."""
        return (self.show_date, self.performance_id.encode())


def _order(event: PerformanceEvent) -> tuple[dt.datetime, int, str]:
    """(instant, nanoseconds below its microsecond, event_id)."""
    return (event.occurred_at, getattr(event.occurred_at, "nanos", 0), event.event_id)


def _slug_key(slug: str) -> bytes:
    return slug.encode()


class SetlistOracle:
    """Every setlist read, recomputed from the set of events by brute force."""

    def __init__(self, events: Iterable[PerformanceEvent]) -> None:
        winners: dict[tuple[str, str], PerformanceEvent] = {}
        for event in events:
            key = (event.vertical, event.performance_id)
            held = winners.get(key)
            # SPEC 2: the greatest (occurred_at, event_id) wins; occurred_at compares as
            # an instant whatever its offset, to the digit written, event_id as a string.
            if held is None or _order(event) > _order(held):
                winners[key] = event
        self.known: set[str] = {vertical for vertical, _ in winners}
        self.plays: dict[str, list[Play]] = defaultdict(list)
        for (vertical, pid), event in winners.items():
            if isinstance(event, PerformanceRecorded):
                self.plays[vertical].append(
                    Play(
                        pid,
                        event.song,
                        event.show_id,
                        event.show_date,
                        event.song_title or event.song,
                    )
                )

    # -- helpers --------------------------------------------------------------

    def _upto(self, vertical: str, as_of: dt.date) -> list[Play]:
        return [p for p in self.plays.get(vertical, []) if p.show_date <= as_of]

    def _song_plays(self, vertical: str, song: str) -> list[Play]:
        return sorted(
            (p for p in self.plays.get(vertical, []) if p.song == song), key=lambda p: p.order
        )

    def songs(self, vertical: str) -> list[str]:
        """Every song with a present performance at any date."""
        return sorted({p.song for p in self.plays.get(vertical, [])}, key=_slug_key)

    def title(self, vertical: str, song: str, as_of: dt.date) -> str:
        plays = [p for p in self._song_plays(vertical, song) if p.show_date <= as_of]
        return plays[-1].title if plays else song

    def _shows_between(self, vertical: str, after: dt.date, upto: dt.date) -> int:
        return len({p.show for p in self.plays.get(vertical, []) if after < p.show_date <= upto})

    # -- reads ----------------------------------------------------------------

    def song(self, vertical: str, song: str, as_of: dt.date) -> dict[str, Any] | None:
        """GET /analytics/songs/{vertical}/{song}; None for a 404."""
        plays = [p for p in self._song_plays(vertical, song) if p.show_date <= as_of]
        if not plays:
            return None
        total = len(plays)
        first = min(p.show_date for p in plays)
        last = max(p.show_date for p in plays)
        windows = {
            name: sum(1 for p in plays if as_of - dt.timedelta(days=n) < p.show_date <= as_of)
            for name, n in WINDOWS.items()
        }
        return {
            "song_id": song,
            "song_slug": song,
            "song_title": self.title(vertical, song, as_of),
            "total_plays": total,
            "first_played": first,
            "last_played": last,
            "days_since_played": (as_of - last).days,
            "average_gap_days": round((last - first).days / (total - 1), 1) if total > 1 else None,
            "shows_since_played": self._shows_between(vertical, last, as_of),
            **windows,
            "velocity_score": 3 * windows["plays_last_30_days"]
            + 2 * windows["plays_last_90_days"]
            + windows["plays_last_year"],
        }

    def _played(self, vertical: str, as_of: dt.date) -> list[dict[str, Any]]:
        figures = (self.song(vertical, s, as_of) for s in self.songs(vertical))
        return [f for f in figures if f is not None]

    def gaps(
        self, vertical: str, as_of: dt.date, min_plays: int, limit: int
    ) -> list[dict[str, Any]]:
        """GET /analytics/gaps/{vertical}."""
        rows = [f for f in self._played(vertical, as_of) if f["total_plays"] >= min_plays]
        rows.sort(key=lambda f: (-f["days_since_played"], _slug_key(f["song_slug"])))
        names = (
            "song_id",
            "song_title",
            "song_slug",
            "last_played",
            "days_since_played",
            "total_plays",
            "average_gap_days",
            "shows_since_played",
        )
        return [{k: f[k] for k in names} for f in rows[:limit]]

    def velocity(self, vertical: str, as_of: dt.date, limit: int) -> list[dict[str, Any]]:
        """GET /analytics/velocity/{vertical}."""
        rows = self._played(vertical, as_of)
        rows.sort(key=lambda f: (-f["velocity_score"], _slug_key(f["song_slug"])))
        names = (
            "song_id",
            "song_title",
            "song_slug",
            "plays_last_30_days",
            "plays_last_90_days",
            "plays_last_year",
            "total_plays",
            "velocity_score",
        )
        return [{k: f[k] for k in names} for f in rows[:limit]]

    def trends(self, vertical: str, as_of: dt.date, period: str) -> dict[str, Any]:
        """GET /analytics/trends/{vertical}."""

        def name(day: dt.date) -> str:
            if period == "month":
                return f"{day.year:04d}-{day.month:02d}"
            return f"{day.year:04d}-Q{(day.month - 1) // 3 + 1}"

        shows: dict[str, set[tuple[str, dt.date]]] = defaultdict(set)
        perfs: dict[str, int] = defaultdict(int)
        for p in self._upto(vertical, as_of):
            shows[name(p.show_date)].add(p.show)
            perfs[name(p.show_date)] += 1
        return {
            "vertical": vertical,
            "period_type": period,
            "trends": [
                {"period": key, "shows": len(shows[key]), "performances": perfs[key]}
                for key in sorted(shows)
                if shows[key]
            ],
        }

    def stats(self, vertical: str, as_of: dt.date) -> dict[str, Any]:
        """GET /analytics/stats/{vertical}."""
        plays = self._upto(vertical, as_of)
        shows = {p.show for p in plays}
        dates = [d for _, d in shows]
        return {
            "vertical_id": vertical,
            "vertical_name": vertical,
            "vertical_slug": vertical,
            "total_shows": len(shows),
            "total_songs": len({p.song for p in plays}),
            "total_performances": len(plays),
            "unique_songs_played": len({p.song for p in plays}),
            "avg_songs_per_show": round(len(plays) / len(shows), 1) if shows else 0,
            "first_show": min(dates) if dates else None,
            "last_show": max(dates) if dates else None,
        }

    def bustouts(
        self,
        vertical: str,
        as_of: dt.date,
        days: int,
        gap_threshold: int,
        gap_shows_threshold: int | None,
    ) -> dict[str, Any]:
        """GET /analytics/bustouts/{vertical}."""
        found: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        for song in self.songs(vertical):
            plays = self._song_plays(vertical, song)
            for prev, cur in itertools.pairwise(plays):
                if not as_of - dt.timedelta(days=days) < cur.show_date <= as_of:
                    continue
                gap_days = (cur.show_date - prev.show_date).days
                if gap_days < gap_threshold:
                    continue
                gap_shows = self._shows_between(vertical, prev.show_date, cur.show_date)
                if gap_shows_threshold is not None and gap_shows < gap_shows_threshold:
                    continue
                row = {
                    "song_title": self.title(vertical, song, as_of),
                    "song_slug": song,
                    "bustout_date": cur.show_date,
                    "show_slug": cur.show_id,
                    "gap_days": gap_days,
                    "gap_shows": gap_shows,
                    "previous_play": prev.show_date,
                }
                order = (
                    -gap_days,
                    -cur.show_date.toordinal(),
                    _slug_key(song),
                    cur.performance_id.encode(),
                )
                found.append((order, row))
        found.sort(key=lambda item: item[0])
        return {
            "vertical": vertical,
            "threshold_days": gap_threshold,
            "bustouts": [row for _, row in found],
        }

    def debuts(self, vertical: str, as_of: dt.date, days: int) -> dict[str, Any]:
        """GET /analytics/debut-songs/{vertical}."""
        rows = []
        for song in self.songs(vertical):
            plays = self._song_plays(vertical, song)
            debut = plays[0]
            if as_of - dt.timedelta(days=days) < debut.show_date <= as_of:
                rows.append(
                    {
                        "song_title": self.title(vertical, song, as_of),
                        "song_slug": song,
                        "debut_date": debut.show_date,
                        "show_slug": debut.show_id,
                        "times_played_since": sum(1 for p in plays if p.show_date <= as_of),
                    }
                )
        rows.sort(key=lambda r: (-r["debut_date"].toordinal(), _slug_key(r["song_slug"])))
        return {"vertical": vertical, "period_days": days, "debuts": rows}


# -- building events -----------------------------------------------------------

BASE_TIME = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
"""occurred_at of an event built with ``at=0``."""


def _stamp(at: int | str) -> str:
    if isinstance(at, str):
        return at
    return (BASE_TIME + dt.timedelta(minutes=at)).isoformat().replace("+00:00", "Z")


def recorded(
    pid: str,
    song: str,
    show_id: str,
    show_date: dt.date | str,
    *,
    at: int | str = 0,
    eid: str | None = None,
    title: str | None = None,
    vertical: str = "band",
) -> PerformanceRecorded:
    """A validated ``performance.recorded``; ``at`` is minutes after BASE_TIME or a timestamp."""
    obj: dict[str, Any] = {
        "type": "performance.recorded",
        "event_id": eid or f"r-{vertical}-{pid}-{at}-{song}-{show_id}-{show_date}",
        "occurred_at": _stamp(at),
        "vertical": vertical,
        "performance_id": pid,
        "show_id": show_id,
        "show_date": str(show_date),
        "song": song,
    }
    if title is not None:
        obj["song_title"] = title
    event = parse_event(json.loads(json.dumps(obj)))
    assert isinstance(event, PerformanceRecorded)
    return event


def retracted(
    pid: str, *, at: int | str = 0, eid: str | None = None, vertical: str = "band"
) -> PerformanceRetracted:
    """A validated ``performance.retracted``."""
    obj = {
        "type": "performance.retracted",
        "event_id": eid or f"x-{vertical}-{pid}-{at}",
        "occurred_at": _stamp(at),
        "vertical": vertical,
        "performance_id": pid,
    }
    event = parse_event(obj)
    assert isinstance(event, PerformanceRetracted)
    return event


def dump(value: Any) -> Any:
    """A store answer (model, list of models or None) as plain data."""
    if value is None:
        return None
    if isinstance(value, list):
        return [dump(v) for v in value]
    return value.model_dump()


GAP_PARAMS = ((0, 200), (1, 200), (2, 200), (3, 200), (1, 1), (2, 2))
"""(min_plays, limit) pairs every comparison reads."""
VELOCITY_LIMITS = (1, 3, 200)
BUSTOUT_PARAMS = (
    (365, 180, None),
    (100_000, 0, None),
    (100_000, 1, 2),
    (100_000, 59, None),
    (100_000, 60, None),
    (100_000, 60, 3),
    (400, 90, 1),
    (30, 30, None),
)
"""(days, gap_threshold, gap_shows_threshold) triples every comparison reads."""
DEBUT_DAYS = (1, 30, 365, 100_000)


def check_all_reads(
    store: Any,
    oracle: SetlistOracle,
    vertical: str,
    as_of: dt.date,
    *,
    gaps: Iterable[tuple[int, int]] = GAP_PARAMS,
    velocity: Iterable[int] = VELOCITY_LIMITS,
    periods: Iterable[str] = ("month", "quarter"),
    bustouts: Iterable[tuple[int, int, int | None]] = BUSTOUT_PARAMS,
    debuts: Iterable[int] = DEBUT_DAYS,
) -> None:
    """Assert that every read of ``store`` at ``as_of`` equals the oracle's answer.

    The song read is checked for every song; the other reads for each given parameter set.
    """
    where = f"{vertical} as_of={as_of}"
    for song in [*oracle.songs(vertical), "never-played"]:
        got = dump(store.song(vertical, song, as_of))
        assert got == oracle.song(vertical, song, as_of), f"song {song} {where}"
    for min_plays, limit in gaps:
        got = dump(store.gaps(vertical, as_of, min_plays, limit))
        assert got == oracle.gaps(vertical, as_of, min_plays, limit), (
            f"gaps min_plays={min_plays} limit={limit} {where}"
        )
    for limit in velocity:
        got = dump(store.velocity(vertical, as_of, limit))
        assert got == oracle.velocity(vertical, as_of, limit), f"velocity limit={limit} {where}"
    for period in periods:
        got = dump(store.trends(vertical, as_of, period))
        assert got == oracle.trends(vertical, as_of, period), f"trends {period} {where}"
    assert dump(store.stats(vertical, as_of)) == oracle.stats(vertical, as_of), f"stats {where}"
    for days, gap, gap_shows in bustouts:
        got = dump(store.bustouts(vertical, as_of, days, gap, gap_shows))
        assert got == oracle.bustouts(vertical, as_of, days, gap, gap_shows), (
            f"bustouts days={days} gap={gap} gap_shows={gap_shows} {where}"
        )
    for days in debuts:
        got = dump(store.debuts(vertical, as_of, days))
        assert got == oracle.debuts(vertical, as_of, days), f"debuts days={days} {where}"
