"""Answers of the creator-insight reads, named as the endpoints they replace name them."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel

DayName = Literal["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

DateRange = tuple[dt.date, dt.date]
"""First and last ``date_posted`` of what an answer covers."""


class DataPoint(BaseModel):
    """The present videos posted on one date."""

    date: dt.date
    views: int
    engagement_rate: float
    new_followers: int
    video_count: int


class TimeSeries(BaseModel):
    """One point per posting date, ascending; ``date_range`` is null without points."""

    data_points: list[DataPoint]
    date_range: DateRange | None


class OverviewMetrics(BaseModel):
    """Totals over every present video of a creator."""

    total_videos: int
    total_views: int
    total_likes: int
    total_comments: int
    total_shares: int
    total_bookmarks: int
    total_new_followers: int
    avg_engagement_rate: float
    date_range: DateRange | None


class Overview(BaseModel):
    """A creator's totals."""

    metrics: OverviewMetrics


class HashtagStats(BaseModel):
    """The present videos carrying one hashtag."""

    hashtag: str
    video_count: int
    total_views: int
    avg_views: float
    avg_engagement_rate: float


class Hashtags(BaseModel):
    """Most viewed hashtags first (ties by hashtag), and how many hashtags there are."""

    top_hashtags: list[HashtagStats]
    total_unique_hashtags: int


class WeekdayStats(BaseModel):
    """The present videos posted on one day of the week."""

    day_of_week: DayName
    video_count: int
    avg_views: float
    avg_engagement_rate: float


class PostingTime(BaseModel):
    """Per posting weekday, Monday first; days without a video are left out."""

    by_day: list[WeekdayStats]
