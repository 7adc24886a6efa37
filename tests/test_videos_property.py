"""Order does not matter: video state and reads against a naive recompute from the contract.

The recompute below is written from SPEC sections 2 and 3 alone: it keeps every event,
picks the winners per video with Python tuples and exact fractions, and never calls
the store's code.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.schemas import VideoEvent, parse_event
from stats.videos import UnknownCreator, VideoStore

CREATORS = ("ann", "bo")
VIDEOS = ("v1", "v2", "v3")
DATES = ("2023-12-31", "2024-05-05", "2024-05-06", "2024-05-08")
RAW_TAGS = ("A", "#a", "b", "Café", "CAFÉ", "x", "x:views", "##Zed", "Zed")
COUNTS = ("views", "likes", "comments", "shares", "bookmarks", "new_followers")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


# -- the recompute, from the contract ------------------------------------------


@dataclass(frozen=True)
class Video:
    date: dt.date
    tags: tuple[str, ...]
    counts: dict[str, int]
    rate: Fraction


def _rank(e: dict[str, Any]) -> tuple[dt.datetime, str]:
    """SPEC: "latest" and "greater" compare (occurred_at, event_id)."""
    return dt.datetime.fromisoformat(e["occurred_at"]), e["event_id"]


def _tags(raw: list[str]) -> tuple[str, ...]:
    """SPEC: a hashtag counts once per video, without a leading #, case folded."""
    out: list[str] = []
    for tag in raw:
        clean = tag.lstrip("#").casefold()
        if clean not in out:
            out.append(clean)
    return tuple(out)


def present_videos(events: list[dict[str, Any]]) -> dict[str, list[Video]]:
    """Per creator, its present videos with their winning fields."""
    per_video: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in {e["event_id"]: e for e in events}.values():
        per_video[(e["creator"], e["video_id"])].append(e)
    out: dict[str, list[Video]] = defaultdict(list)
    for (creator, _), evs in per_video.items():
        posts = [e for e in evs if e["type"] == "video.posted"]
        if not posts:
            continue
        post = max(posts, key=_rank)
        if any(_rank(d) > _rank(post) for d in evs if d["type"] == "video.deleted"):
            continue
        metrics = max((e for e in evs if e["type"] != "video.deleted"), key=_rank)
        counts = {name: metrics[name] for name in COUNTS}
        engaged = counts["likes"] + counts["comments"] + counts["shares"] + counts["bookmarks"]
        rate = Fraction(engaged, counts["views"]) * 100 if counts["views"] else Fraction(0)
        out[creator].append(
            Video(
                dt.date.fromisoformat(post["date_posted"]),
                _tags(post.get("hashtags", [])),
                counts,
                rate,
            )
        )
    return out


def _mean(values: list[Fraction]) -> float:
    return float(sum(values, Fraction(0)) / len(values)) if values else 0.0


def expected_series(
    videos: list[Video], start: dt.date | None, end: dt.date | None
) -> dict[str, Any]:
    by_date: dict[dt.date, list[Video]] = defaultdict(list)
    for v in videos:
        if (start is None or v.date >= start) and (end is None or v.date <= end):
            by_date[v.date].append(v)
    points = [
        {
            "date": d,
            "views": sum(v.counts["views"] for v in vs),
            "engagement_rate": _mean([v.rate for v in vs]),
            "new_followers": sum(v.counts["new_followers"] for v in vs),
            "video_count": len(vs),
        }
        for d, vs in sorted(by_date.items())
    ]
    return {
        "data_points": points,
        "date_range": (points[0]["date"], points[-1]["date"]) if points else None,
    }


def expected_overview(videos: list[Video]) -> dict[str, Any]:
    metrics: dict[str, Any] = {"total_videos": len(videos)}
    for name in COUNTS:
        metrics[f"total_{name}"] = sum(v.counts[name] for v in videos)
    metrics["avg_engagement_rate"] = _mean([v.rate for v in videos])
    dates = [v.date for v in videos]
    metrics["date_range"] = (min(dates), max(dates)) if dates else None
    return {"metrics": metrics}


def expected_hashtags(videos: list[Video], limit: int) -> dict[str, Any]:
    by_tag: dict[str, list[Video]] = defaultdict(list)
    for v in videos:
        for tag in v.tags:
            by_tag[tag].append(v)
    rows = [
        {
            "hashtag": tag,
            "video_count": len(vs),
            "total_views": sum(v.counts["views"] for v in vs),
            "avg_views": sum(v.counts["views"] for v in vs) / len(vs),
            "avg_engagement_rate": _mean([v.rate for v in vs]),
        }
        for tag, vs in by_tag.items()
    ]
    rows.sort(key=lambda r: (-r["total_views"], r["hashtag"]))
    return {"top_hashtags": rows[:limit], "total_unique_hashtags": len(rows)}


def expected_posting(videos: list[Video]) -> dict[str, Any]:
    by_day: dict[int, list[Video]] = defaultdict(list)
    for v in videos:
        by_day[v.date.weekday()].append(v)
    return {
        "by_day": [
            {
                "day_of_week": WEEKDAYS[d],
                "video_count": len(vs),
                "avg_views": sum(v.counts["views"] for v in vs) / len(vs),
                "avg_engagement_rate": _mean([v.rate for v in vs]),
            }
            for d, vs in sorted(by_day.items())
        ]
    }


def assert_same(actual: Any, expected: Any, path: str = "") -> None:
    """Equal, floats within 1e-6 (or 1e-12 relative, past what a double holds to 1e-6)."""
    if isinstance(expected, float):
        assert isinstance(actual, float), path
        assert math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-6), (path, actual, expected)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), (path, actual, expected)
        for k in expected:
            assert_same(actual[k], expected[k], f"{path}.{k}")
    elif isinstance(expected, list | tuple):
        assert isinstance(actual, list | tuple) and len(actual) == len(expected), (path, actual)
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, (path, actual, expected)


# -- the streams -----------------------------------------------------------------

counts_st = st.one_of(
    st.integers(0, 60), st.sampled_from([10**15, 10**15 - 1, 7]), st.integers(0, 10**15)
)


@st.composite
def event_specs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["video.posted", "video.posted", "video.metrics_updated", "video.deleted"])
    )
    e: dict[str, Any] = {
        "type": kind,
        # few instants, so that ties are decided by event_id (unique, random order)
        "occurred_at": f"2024-06-01T0{draw(st.integers(0, 3))}:00:00+00:00",
        "creator": draw(st.sampled_from(CREATORS)),
        "video_id": draw(st.sampled_from(VIDEOS)),
    }
    if kind != "video.deleted":
        for name in COUNTS:
            e[name] = draw(counts_st)
    if kind == "video.posted":
        e["date_posted"] = draw(st.sampled_from(DATES))
        e["hashtags"] = draw(st.lists(st.sampled_from(RAW_TAGS), max_size=4))
    return e


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]:
    """Distinct events, the delivered stream (shuffled, with duplicates) and its batch cuts."""
    specs = draw(st.lists(event_specs(), min_size=1, max_size=30))
    # Unique ids, many of them prefixes of others and some beyond ASCII, so that ties on
    # occurred_at exercise the byte order of event_id.
    events = [
        {**e, "event_id": draw(st.sampled_from(["a", "ab", "B", "a-", "é"])) + "." * i}
        for i, e in enumerate(specs)
    ]
    dups = draw(st.lists(st.sampled_from(events), max_size=10))
    delivered = draw(st.permutations(events + dups))
    cuts = sorted(draw(st.lists(st.integers(0, len(delivered)), max_size=5)))
    return events, delivered, cuts


def _state(store: VideoStore, creator: str) -> dict[str, Any]:
    c = store.client
    out: dict[str, Any] = {}
    for key in store.keys(creator):
        kind = c.type(key)
        out[key.rsplit(":", 1)[1]] = (
            c.hgetall(key) if kind == "hash" else c.zrange(key, 0, -1, withscores=True)
        )
    return out


def _parse(events: list[dict[str, Any]]) -> list[VideoEvent]:
    return [parse_event(e) for e in events]  # type: ignore[misc]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stream=streams(),
    window=st.tuples(st.sampled_from([None, *DATES]), st.sampled_from([None, *DATES])),
    limit=st.integers(1, 6),
)
def test_reads_match_recompute_in_any_order(
    backend: Any,
    stream: tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]],
    window: tuple[str | None, str | None],
    limit: int,
) -> None:
    events, delivered, cuts = stream
    run = uuid.uuid4().hex[:8]
    shuffled = VideoStore(backend.client, f"{backend.prefix}:{run}s")
    for lo, hi in zip([0, *cuts], [*cuts, len(delivered)], strict=True):
        shuffled.apply(_parse(delivered[lo:hi]))
    ordered = VideoStore(backend.client, f"{backend.prefix}:{run}o")
    ordered.apply(_parse(sorted(events, key=_rank)))

    start, end = (None if d is None else dt.date.fromisoformat(d) for d in window)
    truth = present_videos(events)
    known = {e["creator"] for e in events}
    assert shuffled.creators() == sorted(known)
    for creator in CREATORS:
        if creator not in known:
            try:
                shuffled.overview(creator)
            except UnknownCreator:
                continue
            raise AssertionError(f"{creator} has no events yet is known")
        assert _state(shuffled, creator) == _state(ordered, creator)
        videos = truth.get(creator, [])
        assert_same(
            shuffled.time_series(creator, start, end).model_dump(),
            expected_series(videos, start, end),
        )
        assert_same(shuffled.overview(creator).model_dump(), expected_overview(videos))
        assert_same(
            shuffled.hashtags(creator, limit).model_dump(), expected_hashtags(videos, limit)
        )
        assert_same(shuffled.posting_time(creator).model_dump(), expected_posting(videos))


@pytest.fixture(scope="module")
def drift_events() -> tuple[list[dict[str, Any]], list[VideoEvent]]:
    """40 videos posted on one day, then 100,000 metric updates in random order.

    Built once for both backends: generating and validating them takes seconds.
    """
    rng = random.Random(20240601)
    base = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    events: list[dict[str, Any]] = []
    for v in range(40):
        events.append(
            {
                "type": "video.posted",
                "event_id": f"p{v}",
                "occurred_at": base.isoformat(),
                "creator": "drift",
                "video_id": f"v{v}",
                "date_posted": "2024-05-31",
                **dict.fromkeys(COUNTS, 0),
            }
        )
    for i in range(100_000):
        views = rng.choice([0, rng.randint(1, 97), rng.randint(1, 10**9), rng.randint(1, 10**15)])
        e = {
            "type": "video.metrics_updated",
            "event_id": f"m{i}",
            "occurred_at": (base + dt.timedelta(seconds=rng.randint(1, 10**7))).isoformat(),
            "creator": "drift",
            "video_id": f"v{rng.randrange(40)}",
            "views": views,
        }
        for name in ("likes", "comments", "shares", "bookmarks"):
            e[name] = rng.randint(0, max(views // 3, 11))
        e["new_followers"] = rng.randint(0, 1000)
        events.append(e)
    return events, _parse(events)


def test_mean_rate_does_not_drift_over_many_updates(
    backend: Any, drift_events: tuple[list[dict[str, Any]], list[VideoEvent]]
) -> None:
    """100,000 metric updates to one day's videos: the day's mean equals a fresh recompute."""
    events, parsed = drift_events
    store = VideoStore(backend.client, backend.prefix)
    for start in range(0, len(parsed), 10_000):
        store.apply(parsed[start : start + 10_000])

    [videos] = present_videos(events).values()
    day = dt.date(2024, 5, 31)
    [point] = store.time_series("drift", day, day).data_points
    want = expected_series(videos, day, day)["data_points"][0]
    assert point.video_count == want["video_count"] == 40
    assert point.views == want["views"]
    assert abs(point.engagement_rate - want["engagement_rate"]) <= 1e-6
    assert (
        abs(store.overview("drift").metrics.avg_engagement_rate - want["engagement_rate"]) <= 1e-6
    )
