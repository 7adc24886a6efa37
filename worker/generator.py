"""A deterministic, realistic data set for the demo and the tests: bands on tour, creators posting.

Bands play tours (spring, summer, fall, a New Year's run) over many years. Each band
has a core rotation it plays most nights, regular songs, rare songs, songs it shelves
for years and then busts out, and new songs that debut along the way (played often in
their first year). Now and then a song is played twice in one show (a reprise). A few
performances are retracted after the show. Creators post videos whose metrics grow
over several snapshots; one video is deleted. The same seed gives the same events.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field
from typing import Any

from events.fields import slugify
from events.schemas import (
    Event,
    PerformanceRecorded,
    PerformanceRetracted,
    VideoDeleted,
    VideoMetricsUpdated,
    VideoPosted,
)

DEFAULT_SEED = 1977
"""Seed of the demo's data set."""

LAST_SHOW = dt.date(2024, 12, 31)
"""The date of the last show: fixed, so the data set does not depend on the clock."""

SNAPSHOT_AGES = (0.25, 1, 3, 7, 14, 30, 60)
"""Days after posting at which a video's cumulative metrics are published."""


@dataclass(frozen=True)
class Band:
    """How a generated band plays: its years, catalogue and show length."""

    name: str
    first_year: int
    catalogue: int
    shows_per_tour: tuple[int, int]
    set_lengths: tuple[int, ...]

    @property
    def slug(self) -> str:
        """The band's vertical."""
        return slugify(self.name)


@dataclass(frozen=True)
class Creator:
    """A generated creator: what they post about and how often."""

    name: str
    first_post: dt.date
    posts_per_week: float
    median_views: int
    hashtags: tuple[str, ...]
    hooks: tuple[str, ...]

    @property
    def slug(self) -> str:
        """The creator's slug."""
        return slugify(self.name)


BANDS = (
    Band("Driftwood Parade", 2012, 110, (6, 11), (7, 6, 1)),
    Band("The Lantern Assembly", 2016, 70, (5, 9), (8, 6, 1)),
    Band("Copper Kites", 2019, 45, (4, 8), (10, 1)),
)
"""The demo's bands, oldest first."""

CREATORS = (
    Creator(
        "Trailside Kitchen",
        dt.date(2024, 1, 3),
        3.0,
        40_000,
        ("#campcooking", "#castiron", "#overlanding", "#recipe", "#outdoors", "#foodtok"),
        ("You have been doing this wrong", "One pan, four ingredients", "Rain day recipe"),
    ),
    Creator(
        "Pocket Synth Lab",
        dt.date(2024, 5, 20),
        1.5,
        12_000,
        ("#synth", "#ambient", "#musicproduction", "#modular", "#beatmaking"),
        ("This patch took me a week", "Three knobs, one sound", "Listen to the end"),
    ),
)
"""The demo's creators."""

_ADJECTIVES = (
    "Blue Copper Hollow Silver Wandering Quiet Golden Broken Electric Northern Velvet "
    "Crooked Lonesome Bright Paper Restless Amber Wild Slow Hidden Burning Crimson Gentle"
).split()
_NOUNS = (
    "River Lantern Highway Morning Orchard Harbor Engine Meadow Canyon Feather Window "
    "Ghost Kingdom Satellite Compass Ladder Thunder Tide Mirror Garden Prairie Signal Bridge"
).split()
_SHAPES = ("{a} {n}", "The {a} {n}", "{n} Song", "{a} {n} Blues", "Down By The {n}", "{n} Jam")
_SEASONS = ((3, 10), (6, 15), (9, 20))  # tour starts: (month, latest start day)
_VENUES = (
    "The Capitol Theatre, Port Chester NY",
    "Red Rocks Amphitheatre, Morrison CO",
    "The Fillmore, San Francisco CA",
    "Ryman Auditorium, Nashville TN",
    "Brooklyn Bowl, Brooklyn NY",
    "The Anthem, Washington DC",
    "Salt Shed, Chicago IL",
    "The Cap, Denver CO",
    "Gorge Amphitheatre, George WA",
    "Stubb's, Austin TX",
    "The Orpheum, Boston MA",
    "Greek Theatre, Berkeley CA",
    "Tabernacle, Atlanta GA",
)
_CTAS = ("Follow for part 2", "Save this for later", "Comment what to try next", "")


@dataclass
class DataSet:
    """Generated events and what the demo needs to present them."""

    events: list[Event] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    last_show: dt.date = LAST_SHOW

    @property
    def today(self) -> dt.date:
        """The day after the last show: the date the demo reads as of."""
        return self.last_show + dt.timedelta(days=1)


@dataclass
class _Song:
    title: str
    weight: float
    debut: dt.date
    shelved: tuple[dt.date, dt.date] | None = None

    def weight_on(self, day: dt.date) -> float:
        if day < self.debut or (self.shelved and self.shelved[0] <= day < self.shelved[1]):
            return 0.0
        fresh = (day - self.debut).days < 365
        return self.weight * (3.0 if fresh else 1.0)


def _titles(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        shape = rng.choice(_SHAPES)
        title = shape.format(a=rng.choice(_ADJECTIVES), n=rng.choice(_NOUNS))
        if title not in taken:
            taken.add(title)
            out.append(title)
    return out


def _catalogue(rng: random.Random, band: Band, start: dt.date, end: dt.date) -> list[_Song]:
    titles = _titles(rng, band.catalogue, set())
    span = (end - start).days
    songs: list[_Song] = []
    for i, title in enumerate(titles):
        early = i < band.catalogue // 3
        debut = start if early else start + dt.timedelta(days=rng.randrange(span))
        tier = rng.random()
        weight = 9.0 if tier < 0.2 else 3.0 if tier < 0.7 else 0.35
        songs.append(_Song(title, weight, debut))
    # Shelved songs come back late in the data (bustouts); retired ones never do (overdue).
    for song in rng.sample(songs[: band.catalogue // 3], 6):
        begin = start + dt.timedelta(days=rng.randrange(max(1, span - 900)))
        back = end - dt.timedelta(days=rng.randrange(20, 300))
        song.shelved = (begin, max(back, begin + dt.timedelta(days=200)))
    for song in rng.sample(songs[: band.catalogue // 3], 3):
        song.shelved = (end - dt.timedelta(days=rng.randrange(400, 1500)), end + dt.timedelta(1))
    # Two songs debut on the last tours, so a year's debuts are never empty.
    for song in songs[-2:]:
        song.debut = end - dt.timedelta(days=rng.randrange(0, 120))
    return songs


def _tour_dates(rng: random.Random, band: Band, end: dt.date) -> list[dt.date]:
    dates: list[dt.date] = []
    for year in range(band.first_year, end.year + 1):
        for month, latest in _SEASONS:
            if rng.random() < 0.25:  # a season off the road
                continue
            day = dt.date(year, month, rng.randint(1, latest))
            for n in range(rng.randint(*band.shows_per_tour)):
                dates.append(day)
                day += dt.timedelta(days=1 if n % 3 != 2 else 2)
        run = [dt.date(year, 12, d) for d in (28, 29, 30, 31)]
        dates.extend(run[rng.randint(0, 2) :])
    dates.append(end)  # every band plays the last night of the data
    return sorted({d for d in dates if d <= end})


def _setlist(
    rng: random.Random, band: Band, songs: list[_Song], day: dt.date, recent: list[set[str]]
) -> list[list[str]]:
    avoid = set().union(*recent)
    pool = [(s.title, s.weight_on(day) * (0.15 if s.title in avoid else 1.0)) for s in songs]
    pool = [(t, w) for t, w in pool if w > 0]
    chosen: list[str] = []
    want = min(sum(band.set_lengths), len(pool))
    while len(chosen) < want:
        titles = [t for t, _ in pool]
        pick = rng.choices(titles, [w for _, w in pool])[0]
        chosen.append(pick)
        pool = [(t, w) for t, w in pool if t != pick]
    sets: list[list[str]] = []
    for length in band.set_lengths:
        sets.append(chosen[:length])
        chosen = chosen[length:]
    if len(sets) > 1 and len(sets[1]) > 3 and rng.random() < 0.06:
        sets[1].append(sets[1][1])  # a reprise closes the set: two plays in one show
    return sets


def _band_events(rng: random.Random, band: Band, end: dt.date, out: DataSet) -> None:
    dates = _tour_dates(rng, band, end)
    songs = _catalogue(rng, band, dates[0], end)
    recent: list[set[str]] = []
    recorded: list[PerformanceRecorded] = []
    for day in dates:
        show_id = f"{band.slug}-{day.isoformat()}"
        venue = rng.choice(_VENUES)
        sets = _setlist(rng, band, songs, day, recent[-2:])
        recent.append({t for s in sets for t in s})
        start = dt.datetime.combine(day, dt.time(20, 0), dt.UTC)
        n = 0
        for set_no, titles in enumerate(sets, start=1):
            set_name = "encore" if set_no == len(sets) and len(titles) <= 2 else f"set{set_no}"
            for position, title in enumerate(titles, start=1):
                n += 1
                recorded.append(
                    PerformanceRecorded(
                        type="performance.recorded",
                        event_id=f"gen:{band.slug}:{day.isoformat()}:{n:02d}",
                        occurred_at=start + dt.timedelta(minutes=7 * n),
                        vertical=band.slug,
                        performance_id=f"{show_id}:{set_name}:{position}",
                        show_id=show_id,
                        show_date=day,
                        song=slugify(title),
                        song_title=title,
                        venue=venue,
                        set=set_name,
                        position=position,
                    )
                )
    out.events.extend(recorded)
    # A few setlist corrections: a song listed by mistake is retracted two days later.
    for wrong in rng.sample(recorded[:-200], 3):
        out.events.append(
            PerformanceRetracted(
                type="performance.retracted",
                event_id=f"{wrong.event_id}:retracted",
                occurred_at=wrong.occurred_at + dt.timedelta(days=2),
                vertical=band.slug,
                performance_id=wrong.performance_id,
            )
        )
    out.names[band.slug] = band.name


def _metrics(views: int, rates: tuple[float, ...]) -> dict[str, int]:
    names = ("likes", "comments", "shares", "bookmarks", "new_followers")
    return {"views": views, **{k: int(views * r) for k, r in zip(names, rates, strict=True)}}


def _next_post_day(rng: random.Random, creator: Creator, day: dt.date) -> dt.date:
    # Weekends are busier: a creator posts on Saturday and Sunday twice as readily.
    base = creator.posts_per_week / 9
    while True:
        day += dt.timedelta(days=1)
        if rng.random() < base * (2.0 if day.weekday() >= 5 else 1.0):
            return day


def _creator_events(rng: random.Random, creator: Creator, end: dt.date, out: DataSet) -> None:
    last_moment = dt.datetime.combine(end, dt.time(23, 59), dt.UTC)
    day, n = creator.first_post, 0
    posted: list[VideoPosted] = []
    while day <= end:
        n += 1
        video_id = f"{creator.slug[:2]}{n:05d}"
        at = dt.datetime.combine(day, dt.time(rng.randint(12, 21), rng.choice((0, 15, 30))), dt.UTC)
        potential = creator.median_views * math.exp(rng.gauss(0, 1.1))
        tau = rng.uniform(1.5, 6.0)  # days until most of its views are in
        rates = (
            rng.uniform(0.03, 0.09),
            rng.uniform(0.002, 0.008),
            rng.uniform(0.002, 0.012),
            rng.uniform(0.003, 0.015),
            rng.uniform(0.0005, 0.004),
        )
        for i, age in enumerate(SNAPSHOT_AGES):
            when = at + dt.timedelta(days=age)
            if when > last_moment:
                break
            views = int(potential * (1 - math.exp(-age / tau)))
            common: dict[str, Any] = {
                "event_id": f"gen:{creator.slug}:{video_id}:{i}",
                "occurred_at": when,
                "creator": creator.slug,
                "video_id": video_id,
                **_metrics(views, rates),
            }
            if i == 0:
                length = rng.randint(15, 90)
                posted.append(
                    VideoPosted(
                        type="video.posted",
                        date_posted=day,
                        hook=rng.choice(creator.hooks),
                        cta=rng.choice(_CTAS) or None,
                        hashtags=rng.sample(creator.hashtags, rng.randint(1, 3)),
                        length_seconds=length,
                        avg_watch_time=round(length * rng.uniform(0.3, 0.8), 1),
                        watched_full_video_percentage=round(rng.uniform(5, 45), 1),
                        **common,
                    )
                )
                out.events.append(posted[-1])
            else:
                out.events.append(VideoMetricsUpdated(type="video.metrics_updated", **common))
        day = _next_post_day(rng, creator, day)
    gone = posted[len(posted) // 2]
    out.events.append(
        VideoDeleted(
            type="video.deleted",
            event_id=f"gen:{creator.slug}:{gone.video_id}:deleted",
            occurred_at=gone.occurred_at + dt.timedelta(days=5),
            creator=creator.slug,
            video_id=gone.video_id,
        )
    )
    out.names[creator.slug] = creator.name


def generate(seed: int = DEFAULT_SEED, last_show: dt.date = LAST_SHOW) -> DataSet:
    """Every event of the demo's bands and creators; the same seed gives the same events.

    Args:
        seed: seed of the random choices.
        last_show: the date of the last show; videos are posted up to that date too.
    """
    rng = random.Random(seed)
    out = DataSet(last_show=last_show)
    for band in BANDS:
        _band_events(random.Random(rng.random()), band, last_show, out)
    for creator in CREATORS:
        _creator_events(random.Random(rng.random()), creator, last_show, out)
    return out
