"""Order does not matter: random event streams, delivered shuffled, duplicated and in
batches under a wandering clock, give every read the naive recompute gives."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.schemas import PerformanceRecorded
from stats import scripts
from stats.setlists import SetlistStore, UnknownVertical
from tests.conftest import Backend
from tests.setlist_oracle import (
    BASE_TIME,
    PerformanceEvent,
    SetlistOracle,
    check_all_reads,
    dump,
    recorded,
    retracted,
)

BASES = (
    dt.date(2023, 1, 1),
    dt.date(1968, 11, 1),
    dt.date(1999, 3, 1),
    dt.date(1900, 1, 1),
    dt.date(2098, 12, 1),
)
"""Show dates lie within about two years from one of these: across 1970-01-01 (day 0),
2000-02-29, and at both ends of the years events may carry."""
SONGS = ("a", "a-b", "a.b", "a0", "b")  # byte order: a < a-b < a.b < a0 < b
PIDS = ("p1", "p2", "p10", "p 3", "pé", "P")
SHOW_IDS = ("s1", "s2", "s1-2")
VERTICALS = ("band", "band", "band", "side")
TITLES = (None, None, "Title", "Other Title", "Ünïcode ☃")
OFFSETS = (dt.UTC, dt.timezone(dt.timedelta(hours=2)), dt.timezone(dt.timedelta(hours=-5)))
FRACTIONS = ("", "", ".000000001", ".000000002", ".000001", ".0000010")
EDGE_OFFSETS = (0, 1, 29, 30, 31, 60, 89, 90, 91, 364, 365, 366, 400, 730)
WINDOW_EDGES = (0, 29, 30, 89, 90, 364, 365)
"""as_of minus a play date: each window's last day in and first day out."""

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@contextmanager
def fresh_store(backend: Backend, name: str = "s") -> Iterator[SetlistStore]:
    """A store under a prefix of its own (one per hypothesis example), emptied afterwards."""
    prefix = f"{backend.prefix}:{name}{uuid.uuid4().hex[:8]}"
    try:
        yield SetlistStore(backend.client, prefix)
    finally:
        found = list(backend.client.scan_iter(f"{prefix}:*", count=1000))
        if found:
            backend.client.delete(*found)


@st.composite
def event_sets(draw: st.DrawFn) -> tuple[dt.date, list[PerformanceEvent]]:
    """A first day and a set of distinct events over small pools, so collisions happen."""
    base = draw(st.sampled_from(BASES))
    dates = draw(
        st.lists(
            st.one_of(st.sampled_from(EDGE_OFFSETS), st.integers(0, 760)),
            min_size=1,
            max_size=6,
            unique=True,
        )
    )
    n = draw(st.integers(1, 30))
    events: list[PerformanceEvent] = []
    for i in range(n):
        # Instants collide often; the same instant is written with different offsets, and
        # some differ below the microsecond.
        instant = BASE_TIME + dt.timedelta(minutes=draw(st.integers(0, 8)))
        written = instant.astimezone(draw(st.sampled_from(OFFSETS))).isoformat()
        at = written[:19] + draw(st.sampled_from(FRACTIONS)) + written[19:]
        eid = f"{draw(st.sampled_from(('e', 'f', 'E', 'e~')))}-{i}"
        vertical = draw(st.sampled_from(VERTICALS))
        pid = draw(st.sampled_from(PIDS))
        if draw(st.integers(0, 4)) == 0:
            events.append(retracted(pid, at=at, eid=eid, vertical=vertical))
        else:
            date = base + dt.timedelta(days=draw(st.sampled_from(dates)))
            events.append(
                recorded(
                    pid,
                    draw(st.sampled_from(SONGS)),
                    draw(st.sampled_from(SHOW_IDS)),
                    date,
                    at=at,
                    eid=eid,
                    title=draw(st.sampled_from(TITLES)),
                    vertical=vertical,
                )
            )
    return base, events


def play_dates(oracle: SetlistOracle) -> list[dt.date]:
    return sorted({p.show_date for plays in oracle.plays.values() for p in plays})


@st.composite
def deliveries(
    draw: st.DrawFn, base: dt.date, events: list[PerformanceEvent], edge_days: list[dt.date]
) -> list[tuple[list[PerformanceEvent], dt.date]]:
    """The events with duplicates, shuffled, cut into batches, each with a clock reading."""
    copies = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    stream = draw(st.permutations(events + copies))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    bounds = [0, *cuts, len(stream)]
    today = st.one_of(
        st.sampled_from(edge_days),
        st.integers(-40, 1200).map(lambda n: base + dt.timedelta(days=n)),
    )
    return [(stream[lo:hi], draw(today)) for lo, hi in itertools.pairwise(bounds)]


def edge_days_of(base: dt.date, events: list[PerformanceEvent]) -> list[dt.date]:
    """Days on which some recorded play sits exactly on a window edge."""
    dates = {e.show_date for e in events if isinstance(e, PerformanceRecorded)} or {base}
    return sorted({d + dt.timedelta(days=k) for d in dates for k in WINDOW_EDGES})


GAPS = st.tuples(st.sampled_from((0, 1, 2, 3, 5)), st.sampled_from((1, 2, 3, 200)))
BUSTOUTS = st.tuples(
    st.sampled_from((1, 30, 90, 365, 100_000)),
    st.sampled_from((0, 1, 30, 59, 60, 61, 90, 180, 365)),
    st.sampled_from((None, None, 0, 1, 2, 3)),
)


def kept_day(batches: list[tuple[list[PerformanceEvent], dt.date]], vertical: str) -> dt.date:
    """The day a vertical's counters are kept for: the latest clock that came with its events."""
    return max(today for batch, today in batches if any(e.vertical == vertical for e in batch))


@given(data=st.data())
@SETTINGS
def test_every_read_equals_the_recompute(backend: Backend, data: st.DataObject) -> None:
    base, events = data.draw(event_sets(), label="events")
    edges = edge_days_of(base, events)
    batches = data.draw(deliveries(base, events, edges), label="batches")
    oracle = SetlistOracle(events)
    with fresh_store(backend) as store:
        for batch, today in batches:
            store.apply(batch, today)
        dates = play_dates(oracle) or [base]
        near = data.draw(st.sampled_from(dates), label="near")
        as_ofs = {dates[0] - dt.timedelta(days=1), dates[-1] + dt.timedelta(days=1)}
        as_ofs |= {near + dt.timedelta(days=k) for k in WINDOW_EDGES}
        for vertical in ("band", "side"):
            if vertical not in oracle.known:
                with pytest.raises(UnknownVertical):
                    store.stats(vertical, base)
                continue
            # Every parameter set where the stored counters answer, a drawn few elsewhere;
            # the second vertical is there to show the two do not mix.
            kept = kept_day(batches, vertical)
            check_all_reads(store, oracle, vertical, kept)
            for as_of in sorted(as_ofs - {kept}) if vertical == "band" else []:
                check_all_reads(
                    store,
                    oracle,
                    vertical,
                    as_of,
                    gaps=[data.draw(GAPS)],
                    velocity=[data.draw(st.sampled_from((1, 2, 200)))],
                    periods=[data.draw(st.sampled_from(("month", "quarter")))],
                    bustouts=data.draw(st.lists(BUSTOUTS, min_size=1, max_size=2)),
                    debuts=[data.draw(st.sampled_from((1, 30, 90, 365, 100_000)))],
                )
        # Moving the clock on keeps the stored ranking right at the new day.
        clock = {vertical: kept_day(batches, vertical) for vertical in oracle.known}
        for later in data.draw(st.lists(st.sampled_from(edges), max_size=2), label="rolls"):
            for vertical in sorted(clock):
                store.roll(vertical, later)
                clock[vertical] = max(clock[vertical], later)
                for limit in (1, 200):
                    got = dump(store.velocity(vertical, clock[vertical], limit))
                    want = oracle.velocity(vertical, clock[vertical], limit)
                    assert got == want, f"velocity after a roll to {later}"


def raw_state(client: Any, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` (without it) and its whole content."""
    state: dict[str, Any] = {}
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        kind = client.type(key)
        if kind == "hash":
            value: Any = client.hgetall(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(client.smembers(key))
        else:
            value = client.get(key)
        state[key[len(prefix) :]] = (kind, value)
    return state


@given(data=st.data())
@SETTINGS
def test_shuffled_duplicated_stream_leaves_the_same_state(
    backend: Backend, data: st.DataObject
) -> None:
    base, events = data.draw(event_sets(), label="events")
    batches = data.draw(deliveries(base, events, edge_days_of(base, events)), label="batches")
    ordered = sorted(set(events), key=lambda e: e.version)
    with fresh_store(backend, "x") as shuffled, fresh_store(backend, "y") as in_order:
        for batch, today in batches:
            shuffled.apply(batch, today)
        for vertical in sorted({e.vertical for e in events}):
            mine = [e for e in ordered if e.vertical == vertical]
            in_order.apply(mine, kept_day(batches, vertical))
        assert raw_state(backend.client, shuffled.prefix) == raw_state(
            backend.client, in_order.prefix
        )


@given(data=st.data(), per_call=st.integers(1, 4))
@SETTINGS
def test_calls_cut_anywhere_leave_the_same_state(
    backend: Backend, data: st.DataObject, per_call: int
) -> None:
    """A batch is sent as calls of ``EVENTS_PER_CALL`` events per vertical, each sent as
    soon as it is full: where the calls are cut, and how the verticals interleave in a
    batch, changes nothing."""
    base, events = data.draw(event_sets(), label="events")
    batches = data.draw(deliveries(base, events, edge_days_of(base, events)), label="batches")
    with fresh_store(backend, "c") as cut, fresh_store(backend, "w") as whole:
        with mock.patch("stats.setlists.EVENTS_PER_CALL", per_call):
            for batch, today in batches:
                cut.apply(batch, today)
        for batch, today in batches:
            whole.apply(batch, today)
        assert raw_state(backend.client, cut.prefix) == raw_state(backend.client, whole.prefix)


NATIVE_ORDER = "local less = BYTE_ORDER and native_less or byte_less"


@contextmanager
def byte_by_byte_order(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The setlist scripts as they run where the server's collation is not byte order:
    comparing strings byte by byte in Lua instead of with ``<``."""
    native = scripts.lua_source

    def forced(name: str) -> str:
        text = native(name)
        if name.startswith("setlist"):
            assert NATIVE_ORDER in text
            text = text.replace(NATIVE_ORDER, "BYTE_ORDER = false\nlocal less = byte_less")
        return text

    with monkeypatch.context() as m:
        m.setattr(scripts, "lua_source", forced)
        m.setattr(scripts, "_registered", type(scripts._registered)())
        yield


@given(data=st.data())
@SETTINGS
def test_byte_by_byte_comparison_leaves_the_state_and_reads_of_the_native_one(
    backend: Backend, data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, events = data.draw(event_sets(), label="events")
    edges = edge_days_of(base, events)
    batches = data.draw(deliveries(base, events, edges), label="batches")
    oracle = SetlistOracle(events)
    with fresh_store(backend, "n") as native, fresh_store(backend, "b") as by_bytes:
        for batch, today in batches:
            native.apply(batch, today)
        with byte_by_byte_order(monkeypatch):
            for batch, today in batches:
                by_bytes.apply(batch, today)
            assert raw_state(backend.client, by_bytes.prefix) == raw_state(
                backend.client, native.prefix
            )
            for vertical in sorted(oracle.known):
                check_all_reads(by_bytes, oracle, vertical, kept_day(batches, vertical))
