"""Answers of the setlist reads, named as the endpoints they replace name them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel


class SongFigures(BaseModel):
    """Every figure of one song as of a date."""

    song_id: str
    song_slug: str
    song_title: str
    total_plays: int
    first_played: dt.date
    last_played: dt.date
    days_since_played: int
    average_gap_days: float | None
    shows_since_played: int
    plays_last_30_days: int
    plays_last_90_days: int
    plays_last_year: int
    velocity_score: int


class GapRow(BaseModel):
    """A song and how long it has not been played."""

    song_id: str
    song_title: str
    song_slug: str
    last_played: dt.date
    days_since_played: int
    total_plays: int
    average_gap_days: float | None
    shows_since_played: int


class VelocityRow(BaseModel):
    """A song and how often it was played lately."""

    song_id: str
    song_title: str
    song_slug: str
    plays_last_30_days: int
    plays_last_90_days: int
    plays_last_year: int
    total_plays: int
    velocity_score: int


class TrendPeriod(BaseModel):
    """Shows and performances in one month or quarter."""

    period: str
    shows: int
    performances: int


class Trends(BaseModel):
    """Per-period totals of a vertical, oldest first."""

    vertical: str
    period_type: Literal["month", "quarter"]
    trends: list[TrendPeriod]


class VerticalStats(BaseModel):
    """Totals of a vertical as of a date."""

    vertical_id: str
    vertical_name: str
    vertical_slug: str
    total_shows: int
    total_songs: int
    total_performances: int
    unique_songs_played: int
    avg_songs_per_show: float
    first_show: dt.date | None
    last_show: dt.date | None


class Bustout(BaseModel):
    """A song played again after a long absence."""

    song_title: str
    song_slug: str
    bustout_date: dt.date
    show_slug: str
    gap_days: int
    gap_shows: int
    previous_play: dt.date


class Bustouts(BaseModel):
    """Bustouts of a vertical, biggest gap first; ``threshold_days`` is the gap threshold."""

    vertical: str
    threshold_days: int
    bustouts: list[Bustout]


class Debut(BaseModel):
    """A song first played recently."""

    song_title: str
    song_slug: str
    debut_date: dt.date
    show_slug: str
    times_played_since: int


class Debuts(BaseModel):
    """Songs that debuted in the last ``period_days`` days, newest first."""

    vertical: str
    period_days: int
    debuts: list[Debut]


def trends_json(
    vertical: str, period_type: Literal["month", "quarter"], rows: Iterable[tuple[str, int, int]]
) -> bytes:
    """The bytes of ``Trends(...).model_dump_json()`` for ``(period, shows, performances)`` rows.

    The answer has a row per month of history (thousands for a long one); building and
    dumping a model per row cost several microseconds each, a formatted row a fraction
    of one. Periods are ``YYYY-MM`` or ``YYYY-Qn`` and the counts integers, so no row
    needs escaping; the head (the vertical) is dumped by the model itself.
    """
    head = Trends(vertical=vertical, period_type=period_type, trends=[]).model_dump_json()
    body = ",".join([f'{{"period":"{p}","shows":{s:d},"performances":{n:d}}}' for p, s, n in rows])
    return f"{head[:-2]}{body}]}}".encode()
