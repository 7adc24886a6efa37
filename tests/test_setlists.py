"""Focused tests of SetlistStore against SPEC sections 2-3, hand-computed and via the oracle."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest
import redis

from events.schemas import EventError, parse_event
from stats import keys
from stats.keys import BUSTOUT_INDEX_DAYS
from stats.setlists import ApplyResult, SetlistStore, UnknownVertical, trend_lines
from tests.conftest import Backend
from tests.log_support import as_current, make_conns
from tests.setlist_oracle import SetlistOracle, check_all_reads, dump, recorded, retracted
from worker import cli

D = dt.date(2024, 3, 10)
"""The clock of most tests."""
V = "band"
SEP = "\x1f"


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def days_before(n: int, of: dt.date = D) -> dt.date:
    return of - dt.timedelta(days=n)


@pytest.fixture
def store(backend: Backend) -> SetlistStore:
    return SetlistStore(backend.client, backend.prefix)


def show(show_id: str, date: str, *songs: str, at: int = 0) -> list[Any]:
    """One recorded performance per song, performance_id ``<show_id>-<n>``."""
    return [recorded(f"{show_id}-{n}", song, show_id, date, at=at) for n, song in enumerate(songs)]


# A small history; as_of D = 2024-03-10.
HISTORY = [
    *show("s1", "2023-01-10", "a", "b", "c"),
    *show("s2", "2023-06-01", "a", "d"),
    *show("s3", "2023-12-20", "b", "a"),
    *show("s4", "2024-02-01", "a", "c"),
    *show("s5", "2024-03-01", "b"),
    recorded("s4-title", "a", "s4", "2024-02-01", title="A Song"),
    recorded("future-1", "e", "s9", "2024-05-01", title="Not Yet"),
]


def check(store: SetlistStore, events: list[Any], *as_ofs: dt.date, vertical: str = V) -> None:
    oracle = SetlistOracle(events)
    for as_of in as_ofs:
        check_all_reads(store, oracle, vertical, as_of)


# -- each read --------------------------------------------------------------------


def test_song_figures(store: SetlistStore) -> None:
    store.apply(HISTORY, D)
    got = store.song(V, "a", D)
    assert dump(got) == {
        "song_id": "a",
        "song_slug": "a",
        "song_title": "A Song",  # the latest play by (date, performance_id): s4-title > s4-0
        "total_plays": 5,
        "first_played": day("2023-01-10"),
        "last_played": day("2024-02-01"),
        "days_since_played": 38,
        "average_gap_days": 96.8,  # 387 days / 4 gaps
        "shows_since_played": 1,  # s5
        "plays_last_30_days": 0,
        "plays_last_90_days": 3,  # 2023-12-20, 2024-02-01 twice
        "plays_last_year": 4,
        "velocity_score": 0 + 6 + 4,
    }
    assert store.song(V, "e", D) is None  # its only play is after as_of
    assert store.song(V, "nope", D) is None
    assert dump(store.song(V, "e", day("2024-05-01")))["song_title"] == "Not Yet"
    d = store.song(V, "d", D)
    assert d is not None and d.average_gap_days is None and d.song_title == "d"
    check(store, HISTORY, D, day("2023-06-01"), day("2024-05-01"))


def test_gaps(store: SetlistStore) -> None:
    store.apply(HISTORY, D)
    rows = store.gaps(V, D, 0, 50)
    assert [(r.song_slug, r.days_since_played, r.total_plays) for r in rows] == [
        ("d", (D - day("2023-06-01")).days, 1),
        ("a", 38, 5),
        ("c", 38, 2),  # tie with a, broken by slug
        ("b", 9, 3),
    ]
    assert [r.song_slug for r in store.gaps(V, D, 3, 50)] == ["a", "b"]
    assert [r.song_slug for r in store.gaps(V, D, 1, 2)] == ["d", "a"]
    assert [r.shows_since_played for r in rows] == [3, 1, 1, 0]
    # Before the last plays: figures as of that date, not as of the latest state.
    early = store.gaps(V, day("2023-12-31"), 2, 50)
    assert [(r.song_slug, r.last_played, r.total_plays) for r in early] == [
        ("a", day("2023-12-20"), 3),
        ("b", day("2023-12-20"), 2),
    ]
    check(store, HISTORY, D, day("2023-12-31"), day("2024-06-01"))


def test_velocity(store: SetlistStore) -> None:
    store.apply(HISTORY, D)
    rows = store.velocity(V, D, 50)
    assert [(r.song_slug, r.velocity_score) for r in rows] == [
        ("a", 10),
        ("b", 3 * 1 + 2 * 2 + 2),
        ("c", 2 + 1),
        ("d", 1),
    ]
    check(store, HISTORY, D, days_before(1), D + dt.timedelta(days=1))


def test_trends(store: SetlistStore) -> None:
    store.apply(HISTORY, D)
    months = store.trends(V, D, "month")
    assert months.period_type == "month"
    assert [(t.period, t.shows, t.performances) for t in months.trends] == [
        ("2023-01", 1, 3),
        ("2023-06", 1, 2),
        ("2023-12", 1, 2),
        ("2024-02", 1, 3),
        ("2024-03", 1, 1),
    ]
    quarters = store.trends(V, day("2024-02-29"), "quarter")
    assert [(t.period, t.shows, t.performances) for t in quarters.trends] == [
        ("2023-Q1", 1, 3),
        ("2023-Q2", 1, 2),
        ("2023-Q4", 1, 2),
        ("2024-Q1", 1, 3),
    ]
    check(store, HISTORY, D, day("2024-03-01"), day("2024-02-29"), day("2024-05-01"))


def test_trends_of_unchanged_history_are_cut_once_and_follow_every_write(
    store: SetlistStore,
) -> None:
    """The rows of the stored trend string are kept by the string itself: a repeated read
    reuses them, a write to an earlier month or a retraction is in the next answer."""
    store.apply(HISTORY, D)

    def months() -> list[tuple[str, int, int]]:
        return [(t.period, t.shows, t.performances) for t in store.trends(V, D, "month").trends]

    first = months()
    hits = trend_lines.cache_info().hits
    assert months() == first
    assert trend_lines.cache_info().hits == hits + 1
    later = [recorded("s2-late", "e", "s2", "2023-06-01", at=5)]
    store.apply(later, D)
    assert ("2023-06", 1, 3) in months()
    store.apply([retracted("s2-late", at=6), retracted("s1-0", at=6)], D)
    assert months() == [("2023-01", 1, 2), *first[1:]]
    check(store, [*HISTORY, *later, retracted("s2-late", at=6), retracted("s1-0", at=6)], D)


def test_stats(store: SetlistStore) -> None:
    store.apply(HISTORY, D)
    assert dump(store.stats(V, D)) == {
        "vertical_id": V,
        "vertical_name": V,
        "vertical_slug": V,
        "total_shows": 5,
        "total_songs": 4,  # not e, played only after as_of: a read sees no later play
        "total_performances": 11,
        "unique_songs_played": 4,
        "avg_songs_per_show": 2.2,
        "first_show": day("2023-01-10"),
        "last_show": day("2024-03-01"),
    }
    before = store.stats(V, day("2020-01-01"))
    assert (before.total_shows, before.avg_songs_per_show, before.first_show) == (0, 0, None)
    check(store, HISTORY, day("2020-01-01"), D)


def test_a_read_takes_the_title_of_the_latest_play_up_to_as_of(store: SetlistStore) -> None:
    """A song's title is its latest play's, among the plays a read sees: none dated after
    as_of, on every route that answers a title."""
    store.apply(
        [
            recorded("p1", "dark-star", "s1", "2024-01-10", title="Dark Star"),
            recorded("p2", "dark-star", "s2", "2024-03-10", title="Dark Star (reprise)"),
            recorded("p3", "dark-star", "s3", "2024-03-10", title="Dark Star Jam"),
            recorded("p4", "dark-star", "s4", "2024-06-01", title="Dark Star (1974)"),
        ],
        D,
    )
    early, late = day("2024-02-01"), day("2024-03-10")
    for as_of, title in ((early, "Dark Star"), (late, "Dark Star Jam")):
        song = store.song(V, "dark-star", as_of)
        assert song is not None and song.song_title == title, as_of
        assert [g.song_title for g in store.gaps(V, as_of, 1, 50)] == [title]
        assert [v.song_title for v in store.velocity(V, as_of, 50)] == [title]
        assert [d.song_title for d in store.debuts(V, as_of, 365).debuts] == [title]
    got = store.bustouts(V, late, 365, 30, None).bustouts
    assert [b.song_title for b in got] == ["Dark Star Jam"]
    assert store.stats(V, early).total_songs == 1
    assert store.stats(V, day("2024-01-01")).total_songs == 0


def test_bustouts(store: SetlistStore) -> None:
    store.apply(HISTORY, D)
    got = store.bustouts(V, D, 365, 180, None)
    assert got.threshold_days == 180
    assert [
        (b.song_slug, b.gap_days, b.gap_shows, b.previous_play, b.show_slug) for b in got.bustouts
    ] == [
        ("c", 387, 3, day("2023-01-10"), "s4"),
        ("b", 344, 2, day("2023-01-10"), "s3"),
        ("a", 202, 1, day("2023-06-01"), "s3"),
    ]
    assert [b.song_slug for b in store.bustouts(V, D, 365, 180, 2).bustouts] == ["c", "b"]
    assert [b.song_slug for b in store.bustouts(V, D, 40, 180, None).bustouts] == ["c"]
    # Below the index threshold every play of the window is a candidate.
    small = store.bustouts(V, D, 60, 1, None).bustouts
    assert [(b.song_slug, b.gap_days) for b in small] == [("c", 387), ("b", 72), ("a", 43)]
    check(store, HISTORY, D)


def test_debuts(store: SetlistStore) -> None:
    store.apply(HISTORY, D)
    got = store.debuts(V, D, 365)
    assert [(d.song_slug, d.debut_date, d.show_slug, d.times_played_since) for d in got.debuts] == [
        ("d", day("2023-06-01"), "s2", 1)
    ]
    got = store.debuts(V, D, 500)
    assert [d.song_slug for d in got.debuts] == ["d", "a", "b", "c"]
    later = store.debuts(V, day("2024-05-01"), 60)
    assert [(d.song_slug, d.song_title, d.times_played_since) for d in later.debuts] == [
        ("e", "Not Yet", 1)
    ]
    check(store, HISTORY, D, day("2024-05-01"))


# -- winners, retractions, corrections -------------------------------------------


def test_retraction_and_re_record(store: SetlistStore) -> None:
    first = recorded("p1", "a", "s1", "2024-01-01", at=1)
    gone = retracted("p1", at=2)
    again = recorded("p1", "a", "s2", "2024-02-01", at=3)
    other = recorded("p2", "b", "s1", "2024-01-01", at=1)
    store.apply([first, other], D)
    store.apply([gone], D)
    assert store.song(V, "a", D) is None
    assert store.stats(V, D).total_shows == 1  # s1 still has b
    assert store.stats(V, D).total_songs == 1
    check(store, [first, other, gone], D)
    store.apply([again], D)
    a = store.song(V, "a", D)
    assert a is not None and a.last_played == day("2024-02-01") and a.total_plays == 1
    # A recorded event older than the retraction is stale.
    assert store.apply([recorded("p1", "a", "s3", "2024-03-01", at=0)], D) == ApplyResult(0, 1)
    check(store, [first, other, gone, again], D, day("2024-01-15"))


def test_retraction_of_the_only_play_removes_show_and_month(store: SetlistStore) -> None:
    events = [recorded("p1", "a", "s1", "2024-01-01", at=1), retracted("p1", at=2)]
    store.apply(events, D)
    assert store.trends(V, D, "month").trends == []
    assert dump(store.stats(V, D))["total_shows"] == 0
    assert store.gaps(V, D, 0, 50) == [] and store.velocity(V, D, 50) == []
    check(store, events, D)


def test_corrected_song(store: SetlistStore) -> None:
    wrong = recorded("p1", "a", "s1", "2024-01-01", at=1, title="Wrong")
    right = recorded("p1", "b", "s1", "2024-01-01", at=5, title="Right")
    store.apply([wrong], D)
    store.apply([right], D)
    assert store.song(V, "a", D) is None
    b = store.song(V, "b", D)
    assert b is not None and b.song_title == "Right" and b.total_plays == 1
    assert store.stats(V, D).total_songs == 1
    assert [r.song_slug for r in store.velocity(V, D, 50)] == ["b"]
    check(store, [wrong, right], D)


def test_corrected_date_moves_bustout_and_counters(store: SetlistStore) -> None:
    base = [
        recorded("p1", "a", "s1", "2023-01-01"),
        recorded("p2", "a", "s2", "2023-02-01"),
        recorded("p3", "a", "s3", "2024-03-01"),
    ]
    moved = recorded("p2", "a", "s4", "2023-12-01", at=9)
    store.apply(base, D)
    assert [b.gap_days for b in store.bustouts(V, D, 365, 60, None).bustouts] == [394]
    store.apply([moved], D)
    assert [b.gap_days for b in store.bustouts(V, D, 500, 60, None).bustouts] == [334, 91]
    check(store, [*base, moved], D)


def test_retracting_a_play_between_two_others_exposes_a_bustout(store: SetlistStore) -> None:
    events = [
        recorded("p1", "a", "s1", "2023-01-01"),
        recorded("p2", "a", "s2", "2023-05-20"),
        recorded("p3", "a", "s3", "2023-06-01"),
    ]
    store.apply(events, D)
    assert store.bustouts(V, D, 1_000, 60, None).bustouts[0].bustout_date == day("2023-05-20")
    gone = retracted("p2", at=5)
    store.apply([gone], D)
    found = store.bustouts(V, D, 1_000, 60, None).bustouts
    assert [(b.bustout_date, b.previous_play, b.gap_days) for b in found] == [
        (day("2023-06-01"), day("2023-01-01"), 151)
    ]
    check(store, [*events, gone], D)


def test_stale_events_lose_whatever_the_order(store: SetlistStore) -> None:
    new = recorded("p1", "b", "s1", "2024-01-02", at=10)
    old = recorded("p1", "a", "s1", "2024-01-01", at=5)
    old_retraction = retracted("p1", at=7)
    assert store.apply([new], D) == ApplyResult(1, 0)
    assert store.apply([old, old_retraction, new], D) == ApplyResult(0, 3)
    check(store, [new, old, old_retraction], D)
    assert store.song(V, "b", D) is not None and store.song(V, "a", D) is None


def test_equal_instants_are_decided_by_event_id(store: SetlistStore) -> None:
    # Both at 08:00 UTC, written with different offsets: the greater event_id wins.
    low = recorded("p1", "a", "s1", "2024-01-01", at="2024-01-01T08:00:00Z", eid="e-a~")
    high = recorded("p1", "b", "s1", "2024-01-01", at="2024-01-01T10:00:00+02:00", eid="e-b")
    # 07:30 UTC although its wall clock reads later than the others.
    early = retracted("p1", at="2024-01-01T09:30:00+02:00", eid="e-z")
    store.apply([high, early], D)
    store.apply([low], D)
    oracle = SetlistOracle([low, high, early])
    assert [p.song for p in oracle.plays[V]] == ["b"]
    check(store, [low, high, early], D)


def test_two_plays_of_one_song_at_one_show(store: SetlistStore) -> None:
    events = [
        recorded("p1", "pitb", "s1", "2024-03-01"),
        recorded("p2", "drums", "s1", "2024-03-01"),
        recorded("p3", "pitb", "s1", "2024-03-01"),
        recorded("p4", "pitb", "s0", "2023-01-01"),
    ]
    store.apply(events, D)
    song = store.song(V, "pitb", D)
    assert song is not None
    assert (song.total_plays, song.plays_last_30_days, song.shows_since_played) == (3, 2, 0)
    stats = store.stats(V, D)
    assert (stats.total_shows, stats.total_performances, stats.avg_songs_per_show) == (2, 4, 2.0)
    # The second play of the night follows the first with a gap of 0 days.
    zero = store.bustouts(V, D, 30, 0, None).bustouts
    assert [(b.gap_days, b.gap_shows) for b in zero] == [(425, 1), (0, 0)]
    check(store, events, D)


def test_two_shows_on_one_date(store: SetlistStore) -> None:
    events = [
        recorded("p1", "a", "1970-02-14", "1970-02-14"),
        recorded("p2", "b", "1970-02-14", "1970-02-14"),
        recorded("p3", "a", "1970-02-14-2", "1970-02-14"),
        recorded("p4", "a", "1970-01-01", "1970-01-01"),
        recorded("p5", "c", "1970-02-14-2", "1969-12-31"),  # same show_id, other date
    ]
    as_of = day("1970-03-01")
    store.apply(events, as_of)
    stats = store.stats(V, as_of)
    assert (stats.total_shows, stats.total_performances) == (4, 5)
    assert [(t.period, t.shows) for t in store.trends(V, as_of, "month").trends] == [
        ("1969-12", 1),
        ("1970-01", 1),
        ("1970-02", 2),
    ]
    a = store.bustouts(V, as_of, 365, 0, None).bustouts
    assert [(b.song_slug, b.gap_days, b.gap_shows, b.show_slug) for b in a] == [
        ("a", 44, 2, "1970-02-14"),
        ("a", 0, 0, "1970-02-14-2"),
    ]
    check(store, events, as_of, day("1970-01-01"), day("1969-12-31"))


# -- the clock ----------------------------------------------------------------------


def window_counters(store: SetlistStore, backend: Backend, song: str) -> tuple[int, ...]:
    raw = backend.client.hget(store.keys(V).win, song)
    return tuple(int(x) for x in raw.split(SEP)) if raw else (0, 0, 0)


def spread_history() -> list[Any]:
    """Plays of three songs on days around D, including plays after D."""
    events = []
    offsets = [-400, -365, -364, -200, -90, -89, -60, -31, -30, -29, -10, 0, 5, 10, 30, 39, 40, 41]
    for n, off in enumerate(offsets):
        date = (D + dt.timedelta(days=off)).isoformat()
        events.append(recorded(f"p{n}", "abc"[n % 3], f"s{n % 5}", date))
    return events


@pytest.mark.parametrize("how", ["roll", "apply"])
def test_day_roll(store: SetlistStore, backend: Backend, how: str) -> None:
    events = spread_history()
    store.apply(events, D)
    oracle = SetlistOracle(events)
    check_all_reads(store, oracle, V, D)
    later = D + dt.timedelta(days=40)
    if how == "roll":
        store.roll(V, later)
    else:
        extra = recorded("late", "d", "s9", (D + dt.timedelta(days=20)).isoformat())
        store.apply([extra], later)
        events.append(extra)
        oracle = SetlistOracle(events)
    assert backend.client.hget(store.keys(V).meta, "today") == later.isoformat()
    for song in oracle.songs(V):
        want = oracle.song(V, song, later)
        assert want is not None
        assert window_counters(store, backend, song) == (
            want["plays_last_30_days"],
            want["plays_last_90_days"],
            want["plays_last_year"],
        ), song
    check_all_reads(store, oracle, V, later)
    # An older clock changes nothing: counters stay kept for the latest day.
    store.roll(V, D)
    assert backend.client.hget(store.keys(V).meta, "today") == later.isoformat()
    check_all_reads(store, oracle, V, later)


def test_roll_command_says_which_verticals_it_moved(
    backend: Backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A clock behind the counters' day moves nothing, and the command says so."""
    early = make_conns(backend, f"sqlite:///{tmp_path / 'log.db'}", today=D)
    early.setlists.apply([recorded("p1", "a", "s1", "2024-01-01")], D)
    later = D + dt.timedelta(days=3)
    early.setlists.apply([recorded("p2", "a", "s2", "2024-01-02", vertical="other")], later)
    with as_current(early, monkeypatch):
        assert cli.main(["roll"]) == 0
    told = capsys.readouterr().err.strip().splitlines()
    assert told == [
        f"rolled 1 vertical(s) to {D.isoformat()}",
        f"1 vertical(s) left at a later day (up to {later.isoformat()}): counters never move back",
    ], told
    assert early.setlists.roll("other", D) == later
    assert early.setlists.roll(V, later) == later
    assert backend.client.hget(early.setlists.keys(V).meta, "today") == later.isoformat()


def test_clock_jump_of_more_than_a_year(store: SetlistStore, backend: Backend) -> None:
    events = spread_history()
    store.apply(events, D - dt.timedelta(days=500))
    for jump in (D, D + dt.timedelta(days=366), D + dt.timedelta(days=731)):
        store.roll(V, jump)
        check_all_reads(store, SetlistOracle(events), V, jump)
    late = [recorded("late", "a", "s1", (D + dt.timedelta(days=1200)).isoformat())]
    store.apply(late, D + dt.timedelta(days=1200))
    check_all_reads(store, SetlistOracle(events + late), V, D + dt.timedelta(days=1200))


def test_window_edges(store: SetlistStore) -> None:
    events = [
        recorded(f"p{n}", f"s{n}", f"show{n}", days_before(n).isoformat())
        for n in (0, 29, 30, 89, 90, 364, 365)
    ]
    store.apply(events, D)
    figures = {n: store.song(V, f"s{n}", D) for n in (0, 29, 30, 89, 90, 364, 365)}
    windows = {
        n: (f.plays_last_30_days, f.plays_last_90_days, f.plays_last_year)
        for n, f in figures.items()
        if f is not None
    }
    assert windows == {
        0: (1, 1, 1),
        29: (1, 1, 1),
        30: (0, 1, 1),
        89: (0, 1, 1),
        90: (0, 0, 1),
        364: (0, 0, 1),
        365: (0, 0, 0),
    }
    check(store, events, D, days_before(1), D + dt.timedelta(days=1))


def test_the_ends_of_the_calendar(store: SetlistStore) -> None:
    """1900 and 2100 are not leap years, 2000 is; day arithmetic must agree with Python's."""
    dates = ["1900-01-01", "1900-02-28", "1900-03-01", "1900-03-30", "1999-12-31", "2000-02-29"]
    dates += ["2000-03-01", "2100-02-28", "2100-03-01", "2100-12-31"]
    events = [recorded(f"p{n}", "ab"[n % 2], f"s{n}", date) for n, date in enumerate(dates)]
    clocks = ["1900-03-01", "1900-03-30", "1901-02-28", "2000-03-30", "2100-03-30", "2101-01-01"]
    oracle = SetlistOracle(events)
    for n, clock in enumerate(day(c) for c in clocks):
        if n == 0:
            store.apply(events, clock)
        else:
            store.roll(V, clock)
        check_all_reads(store, oracle, V, clock)
    small = store.bustouts(V, day("1900-03-01"), 10, 0, None).bustouts
    assert [(b.previous_play, b.gap_days) for b in small] == [(day("1900-01-01"), 59)]


# -- unknown verticals and the key schema ------------------------------------------


def test_unknown_vertical(store: SetlistStore) -> None:
    store.roll("ghost", D)  # a clock alone makes nothing known
    reads = [
        lambda v: store.song(v, "a", D),
        lambda v: store.gaps(v, D, 0, 10),
        lambda v: store.velocity(v, D, 10),
        lambda v: store.trends(v, D, "month"),
        lambda v: store.stats(v, D),
        lambda v: store.bustouts(v, D, 365, 180, None),
        lambda v: store.debuts(v, D, 365),
    ]
    for read in reads:
        with pytest.raises(UnknownVertical):
            read("ghost")
    # A retraction is a performance event: its vertical is known, and empty.
    store.apply([retracted("p1", vertical="quiet")], D)
    assert store.stats("quiet", D).total_shows == 0
    assert store.song("quiet", "a", D) is None
    check(store, [retracted("p1", vertical="quiet")], D, vertical="quiet")
    # Verticals do not see each other's plays.
    store.apply([recorded("p1", "a", "s1", "2024-01-01", vertical="other")], D)
    assert store.stats("quiet", D).total_performances == 0
    assert store.verticals() == ["other", "quiet"]


def test_raw_keys_follow_the_documented_schema(store: SetlistStore, backend: Backend) -> None:
    """The key schema of stats/keys.py, read with the plain client."""
    events = [
        recorded("p1", "a", "s1", "2024-01-01", title="Song A"),
        recorded("p2", "a", "s2", "2024-03-09", title="Song A!"),
        recorded("p3", "b", "s2", "2024-03-09"),
        recorded("p4", "b", "s3", "2024-04-01"),
        retracted("p5", at=3),
    ]
    store.apply(events, D)
    c, p = backend.client, backend.prefix
    k = f"{p}:{{v:{V}}}:"
    # Date scores are YYYYMMDD numbers.
    d = {"2024-01-01": 20240101, "2024-03-09": 20240309, "2024-04-01": 20240401}
    assert c.sismember(f"{p}:verticals", V)
    # version: UTC nanoseconds since 0001-01-01 in 21 digits, "|", event_id.
    assert events[1].version == "063839664000000000000|" + events[1].event_id
    # Five records fit one bucket: each 'pid 0x1F version 0x1F date\0show_id' (or no
    # show for a retracted one), in performance_id order, joined by 0x1E.
    assert keys.perf_buckets(5) == 1
    shows = ["2024-01-01\x00s1", "2024-03-09\x00s2", "2024-03-09\x00s2", "2024-04-01\x00s3"]
    assert c.hgetall(k + "perf") == {
        "0": "\x1e".join(
            [
                SEP.join([e.performance_id, keys.stored_version(e.version), show])
                for e, show in zip(events[:4], shows, strict=True)
            ]
            + [SEP.join(["p5", keys.stored_version(events[4].version)])]
        )
    }
    assert c.hget(k + "meta", "records") == "5"
    # A show's plays, each 'song\0performance_id\0title', sorted; the title is left out
    # when it is the song's least (titles), which the slug is when an event has none.
    pin = {keys.PIN_FIELD: keys.PIN_TEXT}  # keeps songs, win and titles hash tables
    assert c.hgetall(k + "titles") == {"a": "Song A", "b": "b", **pin}
    assert c.hgetall(k + "showplays") == {
        "2024-01-01\x00s1": "a\x00p1\x00",
        "2024-03-09\x00s2": "a\x00p2\x00Song A!\x1fb\x00p3\x00",
        "2024-04-01\x00s3": "b\x00p4\x00",
    }
    # A song's play days per year, MMDD each; its years with a 6-digit count each.
    assert c.hgetall(k + "songplays") == {"a\x002024": "01010309", "b\x002024": "03090401"}
    assert c.hgetall(k + "songyears") == {"a": "2024000002", "b": "2024000002"}
    assert c.zrange(k + "shows", 0, -1, withscores=True) == [
        ("2024-01-01\x00s1", d["2024-01-01"]),
        ("2024-03-09\x00s2", d["2024-03-09"]),
        ("2024-04-01\x00s3", d["2024-04-01"]),
    ]
    assert c.hgetall(k + "months") == {
        "p:2024-01": "1",
        "s:2024-01": "1",
        "p:2024-03": "2",
        "s:2024-03": "1",
        "p:2024-04": "1",
        "s:2024-04": "1",
        "y:2024": "4",
    }
    # Months with a show, 21 bytes each: YYYYMM, shows (6 digits), performances (9).
    assert c.get(k + "trend") == "202401000001000000001202403000001000000002202404000001000000001"
    assert c.hgetall(k + "songs") == {"a": "2" + SEP + "Song A!", "b": "2" + SEP + "b", **pin}
    assert c.zscore(k + "bylast", "a") == d["2024-03-09"]
    assert c.zscore(k + "bylast", "b") == d["2024-04-01"]
    assert c.zscore(k + "byfirst", "b") == d["2024-03-09"]
    assert c.hget(k + "meta", "today") == "2024-03-10"
    assert c.hgetall(k + "win") == {
        "a": SEP.join(["1", "2", "2"]),
        "b": SEP.join(["1", "1", "1"]),  # p4 is after today
        **pin,
    }
    assert c.zrange(k + "vel", 0, -1, withscores=True) == [("a", -(3 + 4 + 2)), ("b", -6)]
    # p2 follows p1 by 68 days: indexed only when that reaches the index's threshold.
    indexed = [("a\x00s2\x00p2\x002024-01-01", d["2024-03-09"])] if 68 >= BUSTOUT_INDEX_DAYS else []
    assert c.zrange(k + "bust", 0, -1, withscores=True) == indexed


def test_the_per_song_hashes_stay_hash_tables(real_backend: Backend) -> None:
    """songs, win and titles are read song by song: a listpack would be searched field
    by field. The pin keeps each a hash table, and the first write pins state that was
    stored without it."""
    c = real_backend.client
    store = SetlistStore(c, real_backend.prefix)
    events = [
        recorded(f"p{i}", f"song-{i % 7}", f"s{i // 3}", f"2024-0{1 + i % 3}-0{1 + i % 9}")
        for i in range(30)
    ]
    store.apply(events[:20], D)
    k = store.keys(V)
    pinned = (k.songs, k.win, k.titles)
    assert [c.object("encoding", key) for key in pinned] == ["hashtable"] * 3
    before = dump(store.stats(V, D))
    for key in pinned:  # as an earlier version stored them: small hashes are listpacks
        fields = c.hgetall(key)
        del fields[keys.PIN_FIELD]
        c.delete(key)
        c.hset(key, mapping=fields)
        assert c.object("encoding", key) == "listpack"
    assert dump(store.stats(V, D)) == before
    store.apply(events[20:], D)
    assert [c.object("encoding", key) for key in pinned] == ["hashtable"] * 3
    oracle = SetlistOracle(events)
    check_all_reads(store, oracle, V, D)


# -- what reaches the store from the event boundary --------------------------------


def raw_event(kind: str, eid: str, occurred_at: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": eid, "occurred_at": occurred_at, "vertical": V, **fields}


def test_sub_microsecond_order_of_occurred_at_decides(store: SetlistStore) -> None:
    """SPEC 2: the greatest (occurred_at, event_id) wins, at the precision the source wrote.

    Both instants fall in the same microsecond; the later one must win although its
    event_id is smaller.
    """
    later = parse_event(
        raw_event(
            "performance.recorded",
            "a",
            "2024-01-01T00:00:00.0000002Z",
            performance_id="p1",
            show_id="s1",
            show_date="2024-01-01",
            song="a",
        )
    )
    earlier = parse_event(
        raw_event("performance.retracted", "b", "2024-01-01T00:00:00.0000001Z", performance_id="p1")
    )
    store.apply([later, earlier], D)
    song = store.song(V, "a", D)
    assert song is not None, "the retraction at .0000001 s beat the recording at .0000002 s"


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_an_accepted_event_can_be_applied(store: SetlistStore, occurred_at: str) -> None:
    """SPEC 1: an event is either rejected with a reason, or applied with its batch."""
    obj = raw_event("performance.retracted", "edge", occurred_at, performance_id="p9")
    try:
        edge = parse_event(obj)
    except EventError:
        return  # rejected at the boundary, with a reason: what SPEC allows
    valid = recorded("p1", "a", "s1", "2024-01-01")
    store.apply([valid, edge], D)  # must not fail the whole batch
    assert store.song(V, "a", D) is not None


def test_both_scripts_keep_the_layout_of_stats_keys() -> None:
    """The scripts refuse state in another layout: theirs must be the one of stats/keys.py."""
    for name in ("setlist_lib.lua",):
        text = (Path(keys.__file__).parent / name).read_text()
        assert f"local LAYOUT = '{keys.SETLIST_LAYOUT}'" in text, name
        assert f"local PIN_FIELD = '{keys.PIN_FIELD}'" in text, name
        assert f"local PIN_TEXT = '{keys.PIN_TEXT}'" in text, name


def test_each_record_lies_in_the_bucket_perf_bucket_names(
    store: SetlistStore, backend: Backend
) -> None:
    """stats/keys.py perf_bucket and the apply script place records alike, non-ASCII ids
    (hashed as UTF-8 bytes), ids of every length from 1 to 24 bytes (the script reads
    them eight, four and one byte at a time) and buckets split while one batch is
    applied included."""
    pids = [f"{name}-{i}" for i in range(40) for name in ("p", "пьеса", "曲")]
    pids += ["z" * k + chr(ord("a") + k) for k in range(24)]
    events = [recorded(p, f"s{i % 7}", f"show{i % 9}", "2024-01-05") for i, p in enumerate(pids)]
    store.apply(events[:50], D)
    store.apply([*events[50:], retracted(pids[3], at=5)], D)
    perf = backend.client.hgetall(f"{backend.prefix}:{{v:{V}}}:perf")
    assert len(perf) == keys.perf_buckets(len(pids)) > 4
    placed = {r.split(SEP)[0]: int(b) for b, records in perf.items() for r in records.split("\x1e")}
    assert placed == {pid: keys.perf_bucket(pid, len(pids)) for pid in pids}
    assert store.stats(V, D).total_performances == len(pids) - 1


def test_stored_versions_keep_the_order_of_versions() -> None:
    """perf keeps versions shortened; the byte order of any two must not change."""
    rng = random.Random(7)
    top = 10**21 - 1  # the 21 digits of version_of
    stamps = [0, 1, 63, 64, top, top - 1, *(rng.randrange(top) for _ in range(300))]
    ids = ["a", "ab", "b", "a-1", "~", "Z", "é", "0"]
    versions = [f"{s:021d}|{rng.choice(ids)}" for s in stamps for _ in range(2)]
    versions += [f"{stamps[5]:021d}|{i}" for i in ids]
    stored = [keys.stored_version(v) for v in versions]
    assert all(len(s) == 12 + len(v) - 22 for s, v in zip(stored, versions, strict=True))
    by_stored = sorted(range(len(versions)), key=lambda i: stored[i].encode())
    by_version = sorted(range(len(versions)), key=lambda i: versions[i].encode())
    assert [versions[i] for i in by_stored] == [versions[i] for i in by_version]
    assert all(s.isprintable() and "\x1f" not in s for s in stored)


def test_a_script_error_names_its_vertical(store: SetlistStore, backend: Backend) -> None:
    today = dt.date(2024, 6, 1)
    store.apply([recorded("p1", "song-a", "s1", dt.date(2024, 5, 1), vertical="va")], today)
    store.apply([recorded("p1", "song-a", "s1", dt.date(2024, 5, 1), vertical="vb")], today)
    backend.client.delete(store.keys("vb").songs)
    backend.client.set(store.keys("vb").songs, "not a hash")  # WRONGTYPE for the script
    events = [recorded("p2", "song-b", "s2", dt.date(2024, 5, 2), vertical=v) for v in ("va", "vb")]
    with pytest.raises(redis.ResponseError, match=r"vertical 'vb': .*WRONGTYPE"):
        store.apply(events, today)
    assert store.song("va", "song-b", today) is not None  # the other vertical's call ran
