"""Replay of real YouTube trending snapshots, checked against each video's winning snapshot.

Per (creator, video) the earliest snapshot is the ``video.posted`` and the later ones
are ``video.metrics_updated`` at their ``snapshot_date`` (SPEC section 4, ``import
videos``). One video can trend in two countries on the same day with different counts;
each row's event_id carries its row number, so the winner is the row with the greatest
``(snapshot_date, event_id)``, in the store and in the recompute alike.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections import Counter, defaultdict
from fractions import Fraction
from typing import Any

import pytest

from events.fields import slugify
from events.schemas import VideoEvent, parse_event
from stats.videos import VideoStore
from tests.conftest import data_file
from tests.test_videos_property import (
    COUNTS,
    Video,
    assert_same,
    expected_hashtags,
    expected_overview,
    expected_posting,
    expected_series,
)

DATA = "youtube_trending_snapshots.csv"
UNSLUGGABLE_CHANNELS = 11
"""Channels whose name has no ASCII letter or digit (Arabic, Hebrew, CJK names): their
slug would be empty, so they have no creator to file under and are skipped, not guessed."""


class Replay:
    """The data set as events, and the winning snapshot of every video."""

    def __init__(self) -> None:
        self.skipped_channels: set[str] = set()
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        with data_file(DATA).open(encoding="utf-8", newline="") as f:
            for rowno, row in enumerate(csv.DictReader(f), start=2):  # line 1 is the header
                creator = slugify(row["channel_or_creator"])
                if not creator:
                    self.skipped_channels.add(row["channel_or_creator"])
                    continue
                row["event_id"] = f"yt-{rowno:06d}"
                for name in COUNTS:
                    row[name] = int(row[name] or 0)
                groups[(creator, row["video_id"])].append(row)
        self.events: list[dict[str, Any]] = []
        self.videos: dict[str, list[Video]] = defaultdict(list)
        for (creator, video_id), rows in groups.items():
            rows.sort(key=lambda r: (r["snapshot_date"], r["event_id"]))
            for i, row in enumerate(rows):
                event: dict[str, Any] = {
                    "type": "video.metrics_updated" if i else "video.posted",
                    "event_id": row["event_id"],
                    "occurred_at": f"{row['snapshot_date']}T00:00:00Z",
                    "creator": creator,
                    "video_id": video_id,
                    **{name: row[name] for name in COUNTS},
                }
                if not i:
                    event["date_posted"] = row["date_posted"]
                self.events.append(event)
            win = max(rows, key=lambda r: (r["snapshot_date"], r["event_id"]))
            engaged = win["likes"] + win["comments"] + win["shares"] + win["bookmarks"]
            self.videos[creator].append(
                Video(
                    date=dt.date.fromisoformat(rows[0]["date_posted"]),
                    tags=(),
                    counts={name: win[name] for name in COUNTS},
                    rate=Fraction(engaged * 100, win["views"]) if win["views"] else Fraction(0),
                )
            )

    def parsed(self) -> list[VideoEvent]:
        return [parse_event(e) for e in self.events]  # type: ignore[misc]


@pytest.fixture(scope="module")
def replay() -> tuple[Replay, list[VideoEvent]]:
    r = Replay()
    return r, r.parsed()


def test_replay_matches_winning_snapshots(
    backend: Any, replay: tuple[Replay, list[VideoEvent]]
) -> None:
    data, parsed = replay
    assert len(data.skipped_channels) == UNSLUGGABLE_CHANNELS, sorted(data.skipped_channels)
    rng = random.Random(2017)
    stream = parsed + rng.sample(parsed, len(parsed) // 10)  # some delivered twice
    rng.shuffle(stream)
    store = VideoStore(backend.client, backend.prefix)
    total_applied = 0
    for start in range(0, len(stream), 2500):
        total_applied += store.apply(stream[start : start + 2500]).applied
    assert total_applied <= len(parsed)

    assert store.creators() == sorted(data.videos)
    for creator, videos in data.videos.items():
        assert_same(store.overview(creator).model_dump(), expected_overview(videos), creator)

    # Busiest creators, a slug two channel names share ("tv"), and every creator with a
    # video seen twice on one day, read in full.
    by_size = sorted(data.videos, key=lambda c: (-len(data.videos[c]), c))
    seen = Counter((e["creator"], e["video_id"], e["occurred_at"]) for e in data.events)
    same_day = {creator for (creator, _, _), n in seen.items() if n > 1}
    assert same_day, "the data set has videos trending twice on one day"
    window = (dt.date(2017, 11, 10), dt.date(2017, 11, 20))
    for creator in [*by_size[:5], "tv", *sorted(same_day)]:
        videos = data.videos[creator]
        assert_same(store.time_series(creator).model_dump(), expected_series(videos, None, None))
        assert_same(
            store.time_series(creator, *window).model_dump(), expected_series(videos, *window)
        )
        assert_same(store.posting_time(creator).model_dump(), expected_posting(videos))
        assert_same(store.hashtags(creator, 20).model_dump(), expected_hashtags(videos, 20))
