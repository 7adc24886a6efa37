"""The Grateful Dead's 35,425 performances, applied in a shuffled order, give the figures
computed here with plain Python over the CSV rows."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import random
from collections import Counter, defaultdict
from typing import Any

import pytest

from events.fields import slugify
from events.schemas import PerformanceRecorded, parse_event
from stats.setlists import SetlistStore
from tests.conftest import Backend, data_file

VERTICAL = "gd"
AS_OF = dt.date(1995, 8, 1)
"""Three weeks after the last show (1995-07-09)."""
CORNELL = dt.date(1977, 5, 8)
"""A date in the middle of the history: plays after it exist."""


def load_rows() -> list[dict[str, str]]:
    with data_file("grateful_dead_setlists.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def performance_ids(rows: list[dict[str, str]]) -> list[str]:
    """``show_id-set-position``, or the row number where that is not unique."""
    natural = [f"{r['show_id']}-{r['set_name']}-{r['position']}" for r in rows]
    seen = Counter(natural)
    return [pid if seen[pid] == 1 else f"row-{n}" for n, pid in enumerate(natural, start=2)]


def to_events(rows: list[dict[str, str]]) -> list[PerformanceRecorded]:
    events = []
    for pid, r in zip(performance_ids(rows), rows, strict=True):
        event = parse_event(
            {
                "type": "performance.recorded",
                "event_id": f"gd:{pid}",
                "occurred_at": "2024-01-01T00:00:00Z",
                "vertical": VERTICAL,
                "performance_id": pid,
                "show_id": r["show_id"],
                "show_date": r["show_date"],
                "song": slugify(r["song_title"]),
                "song_title": r["song_title"],
                "venue": r["venue"],
                "set": r["set_name"],
                "position": int(r["position"]),
            }
        )
        assert isinstance(event, PerformanceRecorded)
        events.append(event)
    return events


class Plain:
    """The figures, straight from the rows."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        self.plays: dict[str, list[tuple[dt.date, str, str]]] = defaultdict(list)
        self.titles: dict[str, tuple[tuple[dt.date, str], str]] = {}
        for pid, r in zip(performance_ids(rows), rows, strict=True):
            song, date = slugify(r["song_title"]), dt.date.fromisoformat(r["show_date"])
            self.plays[song].append((date, pid, r["show_id"]))
            key = (date, pid)
            if song not in self.titles or key > self.titles[song][0]:
                self.titles[song] = (key, r["song_title"])
        for plays in self.plays.values():
            plays.sort(key=lambda p: (p[0], p[1].encode()))
        self.shows = sorted({(dt.date.fromisoformat(r["show_date"]), r["show_id"]) for r in rows})

    def shows_between(self, after: dt.date, upto: dt.date) -> int:
        return sum(1 for date, _ in self.shows if after < date <= upto)

    def gaps(self, as_of: dt.date, min_plays: int, limit: int) -> list[dict[str, Any]]:
        rows = []
        for song, plays in self.plays.items():
            dates = [d for d, _, _ in plays if d <= as_of]
            if not dates or len(dates) < min_plays:
                continue
            first, last, n = dates[0], dates[-1], len(dates)
            rows.append(
                {
                    "song_id": song,
                    "song_title": self.titles[song][1],
                    "song_slug": song,
                    "last_played": last,
                    "days_since_played": (as_of - last).days,
                    "total_plays": n,
                    "average_gap_days": round((last - first).days / (n - 1), 1) if n > 1 else None,
                    "shows_since_played": self.shows_between(last, as_of),
                }
            )
        rows.sort(key=lambda r: (-r["days_since_played"], r["song_slug"]))
        return rows[:limit]

    def velocity(self, as_of: dt.date, limit: int) -> list[dict[str, Any]]:
        rows = []
        for song, plays in self.plays.items():
            dates = [d for d, _, _ in plays if d <= as_of]
            if not dates:
                continue
            p30, p90, p365 = (sum(1 for d in dates if (as_of - d).days < n) for n in (30, 90, 365))
            rows.append(
                {
                    "song_id": song,
                    "song_title": self.titles[song][1],
                    "song_slug": song,
                    "plays_last_30_days": p30,
                    "plays_last_90_days": p90,
                    "plays_last_year": p365,
                    "total_plays": len(dates),
                    "velocity_score": 3 * p30 + 2 * p90 + p365,
                }
            )
        rows.sort(key=lambda r: (-r["velocity_score"], r["song_slug"]))
        return rows[:limit]

    def bustouts(
        self, as_of: dt.date, days: int, gap_threshold: int, gap_shows: int | None
    ) -> list[dict[str, Any]]:
        found = []
        for song, plays in self.plays.items():
            for (prev, _, _), (date, pid, show_id) in itertools.pairwise(plays):
                gap = (date - prev).days
                if gap < gap_threshold or not 0 <= (as_of - date).days < days:
                    continue
                shows = self.shows_between(prev, date)
                if gap_shows is None or shows >= gap_shows:
                    row = {
                        "song_title": self.titles[song][1],
                        "song_slug": song,
                        "bustout_date": date,
                        "show_slug": show_id,
                        "gap_days": gap,
                        "gap_shows": shows,
                        "previous_play": prev,
                    }
                    found.append(((-gap, -date.toordinal(), song, pid.encode()), row))
        return [row for _, row in sorted(found, key=lambda item: item[0])]

    def debuts(self, as_of: dt.date, days: int) -> list[dict[str, Any]]:
        rows = []
        for song, plays in self.plays.items():
            date, _, show_id = plays[0]
            if 0 <= (as_of - date).days < days:
                rows.append(
                    {
                        "song_title": self.titles[song][1],
                        "song_slug": song,
                        "debut_date": date,
                        "show_slug": show_id,
                        "times_played_since": sum(1 for d, _, _ in plays if d <= as_of),
                    }
                )
        return sorted(rows, key=lambda r: (-r["debut_date"].toordinal(), r["song_slug"]))


def test_the_data_set_is_the_one_described() -> None:
    rows = load_rows()
    assert len(rows) == 35_425
    assert len({(r["show_id"], r["show_date"]) for r in rows}) == 1_822
    assert len({slugify(r["song_title"]) for r in rows}) == 435
    ids = performance_ids(rows)
    assert len(set(ids)) == len(ids)
    assert not any(i.startswith("row-") for i in ids)  # show_id-set-position is unique here
    shows_on: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        shows_on[r["show_date"]].add(r["show_id"])
    assert sum(len(ids) > 1 for ids in shows_on.values()) == 15  # dates with two shows
    # "Playing In The Band" sandwiches: a song twice in one show.
    twice = Counter((r["show_id"], slugify(r["song_title"])) for r in rows)
    assert sum(n > 1 for n in twice.values()) == 550


@pytest.mark.slow
def test_grateful_dead(backend: Backend) -> None:
    rows = load_rows()
    events = to_events(rows)
    random.Random(1995).shuffle(events)
    store = SetlistStore(backend.client, backend.prefix)
    result = store.apply(events, AS_OF)
    assert (result.applied, result.stale) == (35_425, 0)
    plain = Plain(rows)

    stats = store.stats(VERTICAL, AS_OF)
    assert (stats.total_shows, stats.total_performances) == (1_822, 35_425)
    assert (stats.total_songs, stats.unique_songs_played) == (435, 435)
    assert (stats.first_show, stats.last_show) == (dt.date(1966, 1, 5), dt.date(1995, 7, 9))
    assert stats.avg_songs_per_show == round(35_425 / 1_822, 1) == 19.4

    trends = store.trends(VERTICAL, AS_OF, "quarter").trends
    assert sum(t.shows for t in trends) == 1_822
    assert sum(t.performances for t in trends) == 35_425

    for as_of in (AS_OF, CORNELL):
        got = [row.model_dump() for row in store.gaps(VERTICAL, as_of, 5, 10)]
        assert got == plain.gaps(as_of, 5, 10), f"gaps as of {as_of}"
        got = [row.model_dump() for row in store.velocity(VERTICAL, as_of, 10)]
        assert got == plain.velocity(as_of, 10), f"velocity as of {as_of}"
        for days, gap, gap_shows in ((1_095, 365, None), (365, 30, None), (3_650, 180, 150)):
            got = store.bustouts(VERTICAL, as_of, days, gap, gap_shows).model_dump()["bustouts"]
            want = plain.bustouts(as_of, days, gap, gap_shows)
            assert got == want, f"bustouts {days} {gap} {gap_shows} as of {as_of}"
        got = store.debuts(VERTICAL, as_of, 365).model_dump()["debuts"]
        assert got == plain.debuts(as_of, 365), f"debuts as of {as_of}"
    # Songs played 500 times or more were mostly played lately: far down the walk by last play.
    got = [row.model_dump() for row in store.gaps(VERTICAL, AS_OF, 500, 50)]
    assert got == plain.gaps(AS_OF, 500, 50)
    # The whole stored ranking, down to the songs with a score of 0 (ordered by slug).
    got = [row.model_dump() for row in store.velocity(VERTICAL, AS_OF, 200)]
    assert got == plain.velocity(AS_OF, 200)

    # The longest-absent songs at the end (two tie, broken by slug), and two famous returns.
    gaps = store.gaps(VERTICAL, AS_OF, 5, 10)
    assert (gaps[0].song_title, gaps[0].last_played, gaps[0].days_since_played) == (
        "New Potato Caboose",
        dt.date(1969, 6, 8),
        9_550,
    )
    assert [g.song_slug for g in gaps[4:6]] == ["green-green-grass-of-home", "seasons-of-my-heart"]
    bustouts = store.bustouts(VERTICAL, AS_OF, 1_095, 365, None).bustouts
    sunshine = next(b for b in bustouts if b.song_slug == "here-comes-sunshine")
    assert (sunshine.bustout_date, sunshine.previous_play, sunshine.gap_days) == (
        dt.date(1992, 12, 6),
        dt.date(1974, 2, 23),
        6_861,
    )
    assert sunshine.gap_shows == plain.shows_between(dt.date(1974, 2, 23), dt.date(1992, 12, 6))
    johanna = next(b for b in bustouts if b.song_slug == "visions-of-johanna")
    assert (johanna.bustout_date, johanna.previous_play) == (
        dt.date(1995, 2, 21),
        dt.date(1986, 4, 22),
    )
