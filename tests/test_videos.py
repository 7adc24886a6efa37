"""Creator-video state: each rule of SPEC section 2 for videos, and each insight read."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import redis

from events.schemas import VideoEvent, parse_event
from stats.videos import UnknownCreator, VideoStore

COUNTS = ("views", "likes", "comments", "shares", "bookmarks", "new_followers")


def _at(hour: int) -> str:
    return f"2024-06-01T{hour:02d}:00:00Z"


def posted(
    video: str,
    hour: int,
    *,
    eid: str | None = None,
    date: str = "2024-05-06",
    tags: list[str] | None = None,
    creator: str = "bob",
    **counts: int,
) -> VideoEvent:
    obj: dict[str, Any] = {
        "type": "video.posted",
        "event_id": eid or f"p-{video}-{hour}",
        "occurred_at": _at(hour),
        "creator": creator,
        "video_id": video,
        "date_posted": date,
        **{name: counts.get(name, 0) for name in COUNTS},
    }
    if tags is not None:
        obj["hashtags"] = tags
    return parse_event(obj)  # type: ignore[return-value]


def updated(
    video: str, hour: int, *, eid: str | None = None, creator: str = "bob", **counts: int
) -> VideoEvent:
    return parse_event(  # type: ignore[return-value]
        {
            "type": "video.metrics_updated",
            "event_id": eid or f"m-{video}-{hour}",
            "occurred_at": _at(hour),
            "creator": creator,
            "video_id": video,
            **{name: counts.get(name, 0) for name in COUNTS},
        }
    )


def deleted(video: str, hour: int, *, eid: str | None = None, creator: str = "bob") -> VideoEvent:
    return parse_event(  # type: ignore[return-value]
        {
            "type": "video.deleted",
            "event_id": eid or f"d-{video}-{hour}",
            "occurred_at": _at(hour),
            "creator": creator,
            "video_id": video,
        }
    )


@pytest.fixture
def store(backend: Any) -> VideoStore:
    return VideoStore(backend.client, backend.prefix)


def _raw_keys(backend: Any, creator: str = "bob") -> dict[str, Any]:
    """Every key of a creator, by name, as plain Redis data (absent keys left out)."""
    out: dict[str, Any] = {}
    c = backend.client
    for key in c.scan_iter(f"{backend.prefix}:{{c:{creator}}}:*"):
        name = key.rsplit(":", 1)[1]
        kind = c.type(key)
        out[name] = c.hgetall(key) if kind == "hash" else c.zrange(key, 0, -1, withscores=True)
    return out


def test_posted_video_counts_everywhere(store: VideoStore) -> None:
    result = store.apply(
        [posted("v1", 1, views=200, likes=10, comments=5, shares=3, bookmarks=2, new_followers=7)]
    )
    assert (result.applied, result.stale) == (1, 0)
    m = store.overview("bob").metrics
    assert (m.total_videos, m.total_views, m.total_likes, m.total_comments) == (1, 200, 10, 5)
    assert (m.total_shares, m.total_bookmarks, m.total_new_followers) == (3, 2, 7)
    assert m.avg_engagement_rate == pytest.approx(10.0)  # (10+5+3+2)/200*100
    assert m.date_range == (dt.date(2024, 5, 6), dt.date(2024, 5, 6))
    ts = store.time_series("bob")
    assert [p.model_dump() for p in ts.data_points] == [
        {
            "date": dt.date(2024, 5, 6),
            "views": 200,
            "engagement_rate": 10.0,
            "new_followers": 7,
            "video_count": 1,
        }
    ]
    assert store.creators() == ["bob"]


def test_update_replaces_metrics_and_keeps_static_fields(store: VideoStore) -> None:
    store.apply([posted("v1", 1, views=100, likes=1, tags=["a"])])
    store.apply([updated("v1", 2, views=400, likes=20)])
    m = store.overview("bob").metrics
    assert (m.total_videos, m.total_views, m.total_likes) == (1, 400, 20)
    assert m.avg_engagement_rate == pytest.approx(5.0)
    assert m.date_range == (dt.date(2024, 5, 6), dt.date(2024, 5, 6))
    [tag] = store.hashtags("bob").top_hashtags
    assert (tag.hashtag, tag.video_count, tag.total_views) == ("a", 1, 400)


def test_stale_update_changes_nothing(store: VideoStore, backend: Any) -> None:
    store.apply([posted("v1", 1, views=100), updated("v1", 5, views=500)])
    before = _raw_keys(backend)
    result = store.apply([updated("v1", 3, views=300), updated("v1", 5, views=500)])
    assert (result.applied, result.stale) == (0, 2)
    assert _raw_keys(backend) == before
    assert store.overview("bob").metrics.total_views == 500


def test_newer_posted_beats_older_update_but_not_newer_one(store: VideoStore) -> None:
    store.apply([updated("v1", 2, views=222), posted("v1", 1, views=111)])
    assert store.overview("bob").metrics.total_views == 222
    store.apply([posted("v1", 3, views=333, date="2024-05-07")])
    m = store.overview("bob").metrics
    assert (m.total_videos, m.total_views) == (1, 333)
    assert m.date_range == (dt.date(2024, 5, 7), dt.date(2024, 5, 7))


def test_delete_removes_video_and_leaves_no_zero_fields(store: VideoStore, backend: Any) -> None:
    store.apply(
        [
            posted("v1", 1, views=100, likes=3, tags=["a", "b"], date="2024-05-06"),
            posted("v2", 1, views=50, tags=["b"], date="2024-05-08"),
        ]
    )
    store.apply([deleted("v1", 2)])
    m = store.overview("bob").metrics
    assert (m.total_videos, m.total_views, m.total_likes) == (1, 50, 0)
    assert m.date_range == (dt.date(2024, 5, 8), dt.date(2024, 5, 8))
    tags = store.hashtags("bob")
    assert tags.total_unique_hashtags == 1
    assert [t.hashtag for t in tags.top_hashtags] == ["b"]
    store.apply([deleted("v2", 9)])
    raw = _raw_keys(backend)
    assert set(raw) == {"video"}, "aggregates of zero are deleted, not kept as 0"
    m = store.overview("bob").metrics
    assert (m.total_videos, m.total_views, m.avg_engagement_rate, m.date_range) == (0, 0, 0.0, None)
    assert store.time_series("bob").model_dump() == {"data_points": [], "date_range": None}
    assert store.hashtags("bob").model_dump() == {"top_hashtags": [], "total_unique_hashtags": 0}
    assert store.posting_time("bob").by_day == []


def test_repost_after_delete_uses_the_new_posting(store: VideoStore) -> None:
    store.apply(
        [
            posted("v1", 1, views=10, tags=["old"], date="2024-05-06"),
            deleted("v1", 2),
            posted("v1", 3, views=30, tags=["new"], date="2024-05-09"),
        ]
    )
    m = store.overview("bob").metrics
    assert (m.total_videos, m.total_views) == (1, 30)
    assert m.date_range == (dt.date(2024, 5, 9), dt.date(2024, 5, 9))
    assert [t.hashtag for t in store.hashtags("bob").top_hashtags] == ["new"]
    # A deletion later than the re-post removes it again; an older one does not.
    store.apply([deleted("v1", 2, eid="d-again")])
    assert store.overview("bob").metrics.total_videos == 1
    store.apply([deleted("v1", 4)])
    assert store.overview("bob").metrics.total_videos == 0


def test_delete_before_posted_arrives(store: VideoStore) -> None:
    store.apply([deleted("v1", 5)])
    assert store.overview("bob").metrics.total_videos == 0  # the creator is known
    store.apply([posted("v1", 1, views=10)])
    assert store.overview("bob").metrics.total_videos == 0
    store.apply([posted("v1", 6, views=60)])
    assert store.overview("bob").metrics.total_views == 60


def test_metrics_before_posted_are_kept_until_it_arrives(store: VideoStore) -> None:
    store.apply([updated("v1", 4, views=400, likes=40), updated("v1", 2, views=200)])
    m = store.overview("bob").metrics
    assert (m.total_videos, m.total_views) == (0, 0)
    assert store.time_series("bob").data_points == []
    store.apply([posted("v1", 1, views=100, likes=1)])
    m = store.overview("bob").metrics
    assert (m.total_videos, m.total_views, m.total_likes) == (1, 400, 40)
    assert m.avg_engagement_rate == pytest.approx(10.0)


def test_equal_occurred_at_is_decided_by_event_id(store: VideoStore) -> None:
    store.apply([posted("v1", 1, eid="b", views=2), updated("v1", 1, eid="a", views=1)])
    assert store.overview("bob").metrics.total_views == 2
    store.apply([updated("v1", 1, eid="c", views=3)])
    assert store.overview("bob").metrics.total_views == 3
    store.apply([deleted("v1", 1, eid="ba")])
    assert store.overview("bob").metrics.total_videos == 0


def test_hashtag_counts_once_per_video_case_folded(store: VideoStore) -> None:
    store.apply(
        [
            posted("v1", 1, views=100, likes=10, tags=["#Dance", "dance", "DANCE", "Fun"]),
            posted("v2", 1, views=300, likes=3, tags=["dance", "#Straße"]),
            posted("v3", 1, views=100, tags=["zz", "aa", "##AA"]),
        ]
    )
    tags = store.hashtags("bob")
    assert tags.total_unique_hashtags == 5
    rows = [(t.hashtag, t.video_count, t.total_views) for t in tags.top_hashtags]
    # most views first, ties by hashtag
    assert rows == [
        ("dance", 2, 400),
        ("strasse", 1, 300),
        ("aa", 1, 100),  # every leading # is dropped: "##AA" is "aa", once in v3
        ("fun", 1, 100),
        ("zz", 1, 100),
    ]
    dance = tags.top_hashtags[0]
    assert dance.avg_views == 200.0
    assert dance.avg_engagement_rate == pytest.approx((10.0 + 1.0) / 2)
    assert [t.hashtag for t in store.hashtags("bob", limit=2).top_hashtags] == ["dance", "strasse"]
    with pytest.raises(ValueError):
        store.hashtags("bob", limit=0)


def test_hashtags_past_2_to_the_53_views_keep_their_exact_order(store: VideoStore) -> None:
    # 10^16 and 10^16 + 1 are one double: the sorted set alone would put "a" first.
    big = 10**15
    store.apply([posted(f"v{i}", 1, views=big, tags=["a", "b", "c"]) for i in range(10)])
    store.apply([posted("w", 1, views=1, tags=["b"]), posted("x", 1, views=2, tags=["c"])])
    rows = [(t.hashtag, t.total_views) for t in store.hashtags("bob").top_hashtags]
    assert rows == [("c", 10 * big + 2), ("b", 10 * big + 1), ("a", 10 * big)]
    for limit in (1, 2):
        got = [t.hashtag for t in store.hashtags("bob", limit=limit).top_hashtags]
        assert got == ["c", "b"][:limit]


def test_time_series_window_is_inclusive(store: VideoStore) -> None:
    store.apply(
        [
            posted("v1", 1, date="2024-05-01", views=10, likes=1, new_followers=1),
            posted("v2", 1, date="2024-05-03", views=20, likes=1, new_followers=2),
            posted("v3", 1, date="2024-05-03", views=40, likes=4, new_followers=3),
            posted("v4", 1, date="2024-05-09", views=5),
        ]
    )
    ts = store.time_series("bob", dt.date(2024, 5, 3), dt.date(2024, 5, 9))
    assert [
        (p.date.isoformat(), p.views, p.video_count, p.new_followers) for p in ts.data_points
    ] == [
        ("2024-05-03", 60, 2, 5),
        ("2024-05-09", 5, 1, 0),
    ]
    assert ts.data_points[0].engagement_rate == pytest.approx(7.5)  # mean of 5% and 10%
    assert ts.date_range == (dt.date(2024, 5, 3), dt.date(2024, 5, 9))
    assert len(store.time_series("bob", start=dt.date(2024, 5, 2)).data_points) == 2
    assert len(store.time_series("bob", end=dt.date(2024, 5, 2)).data_points) == 1
    empty = store.time_series("bob", dt.date(2024, 5, 4), dt.date(2024, 5, 8))
    assert (empty.data_points, empty.date_range) == ([], None)


def test_posting_time_monday_first_without_empty_days(store: VideoStore) -> None:
    store.apply(
        [
            posted("sun", 1, date="2024-05-05", views=10),  # a Sunday
            posted("mon", 1, date="2024-05-06", views=30, likes=3),
            posted("mon2", 1, date="2024-05-13", views=10),
            posted("old", 1, date="1969-12-31", views=1),  # a Wednesday before day 0
        ]
    )
    rows = [
        (d.day_of_week, d.video_count, d.avg_views, d.avg_engagement_rate)
        for d in store.posting_time("bob").by_day
    ]
    assert rows == [
        ("Monday", 2, 20.0, pytest.approx(5.0)),
        ("Wednesday", 1, 1.0, 0.0),
        ("Sunday", 1, 10.0, 0.0),
    ]


def test_zero_views_rate_is_zero(store: VideoStore) -> None:
    store.apply([posted("v1", 1, views=0, likes=5), posted("v2", 1, views=10, likes=1)])
    assert store.overview("bob").metrics.avg_engagement_rate == pytest.approx(5.0)


def test_unknown_creator(store: VideoStore) -> None:
    store.apply([posted("v1", 1, views=1)])
    with pytest.raises(UnknownCreator):
        store.overview("alice")
    with pytest.raises(UnknownCreator):
        store.time_series("alice")
    with pytest.raises(UnknownCreator):
        store.hashtags("alice")
    with pytest.raises(UnknownCreator):
        store.posting_time("alice")
    assert store.creators() == ["bob"]


def test_empty_batch_changes_nothing(store: VideoStore) -> None:
    result = store.apply([])
    assert (result.applied, result.stale) == (0, 0)
    assert store.creators() == []
    with pytest.raises(UnknownCreator):
        store.overview("bob")


def test_creators_are_kept_apart(store: VideoStore) -> None:
    store.apply([posted("v1", 1, views=1), posted("v1", 1, views=7, creator="carol")])
    assert store.overview("bob").metrics.total_views == 1
    assert store.overview("carol").metrics.total_views == 7
    assert store.creators() == ["bob", "carol"]


def test_documented_key_schema(store: VideoStore, backend: Any) -> None:
    """The keys and fields README and stats/keys.py promise, read with a plain client."""
    store.apply(
        [
            posted(
                "v1", 1, eid="e1", date="2024-05-06", tags=["x"], views=100, likes=7, comments=3
            ),
            updated("v0", 1, eid="e0", views=5),
        ]
    )
    c, p = backend.client, backend.prefix
    assert c.smembers(f"{p}:creators") == {"bob"}
    version = "063852800400000000000|e1"  # 2024-06-01T01:00Z in nanoseconds since 0001-01-01
    assert c.hget(f"{p}:{{c:bob}}:video", "v1") == "\x1f".join(
        [version, "", version, "2024-05-06", "x", "100", "7", "3", "0", "0", "0", "0", "100000000"]
    )
    assert c.hget(f"{p}:{{c:bob}}:video", "v0").split("\x1f")[:4] == [
        "",
        "",
        "063852800400000000000|e0",
        "",
    ]
    assert c.zrange(f"{p}:{{c:bob}}:days", 0, -1, withscores=True) == [("2024-05-06", 20240506.0)]
    day = {"n": "1", "views": "100", "likes": "7", "comments": "3", "rl": "100000000"}
    assert c.hgetall(f"{p}:{{c:bob}}:day") == {f"2024-05-06:{k}": v for k, v in day.items()}
    assert c.hgetall(f"{p}:{{c:bob}}:totals") == day
    assert c.hgetall(f"{p}:{{c:bob}}:dow") == {f"0:{k}": v for k, v in day.items()}
    assert c.hgetall(f"{p}:{{c:bob}}:tags") == {f"x:{k}": v for k, v in day.items()}
    assert c.zrange(f"{p}:{{c:bob}}:tagviews", 0, -1, withscores=True) == [("x", -100.0)]


def test_big_counts_stay_exact(store: VideoStore) -> None:
    big = 10**15
    store.apply(
        [posted(f"v{i}", 1, views=big - i, likes=big, new_followers=big) for i in range(20)]
    )
    m = store.overview("bob").metrics
    assert m.total_views == 20 * big - sum(range(20))
    assert (m.total_likes, m.total_new_followers) == (20 * big, 20 * big)
    store.apply([updated(f"v{i}", 2, views=i, likes=1) for i in range(20)])
    m = store.overview("bob").metrics
    assert (m.total_views, m.total_likes, m.total_new_followers) == (sum(range(20)), 20, 0)


def test_overflowing_batch_is_refused_whole(store: VideoStore, backend: Any) -> None:
    big = 10**15
    store.apply(posted(f"v{i}", 1, views=big) for i in range(9000))
    before = _raw_keys(backend)
    with pytest.raises(redis.ResponseError, match=r"creator 'bob': .*overflow"):
        store.apply(posted(f"w{i}", 1, views=big) for i in range(300))
    assert _raw_keys(backend) == before
    assert store.overview("bob").metrics.total_views == 9000 * big
