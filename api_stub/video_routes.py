"""Creator insights: daily time series, overview, hashtags and posting weekday."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from api_stub.deps import (
    READ_ERRORS,
    DateQuery,
    SlugPath,
    Whole,
    connections,
    date_query,
    or_detail,
)
from stats.video_models import Hashtags, Overview, PostingTime, TimeSeries
from stats.videos import UnknownCreator
from worker.connections import Connections

router = APIRouter(prefix="/analytics/insights", tags=["videos"], responses=READ_ERRORS)
Conns = Annotated[Connections, Depends(connections)]


def _unknown(creator: str) -> HTTPException:
    return HTTPException(404, detail=f"unknown creator {creator!r}")


@router.get(
    "/{creator}/time-series",
    response_model=TimeSeries,
    responses={
        422: or_detail(
            "#/components/schemas/HTTPValidationError",
            "a bad parameter, or start after end",
        )
    },
)
def time_series(
    conns: Conns,
    creator: SlugPath,
    start: Annotated[DateQuery, date_query("the first posting date (YYYY-MM-DD)")] = None,
    end: Annotated[DateQuery, date_query("the last posting date (YYYY-MM-DD)")] = None,
) -> TimeSeries:
    """One point per posting date in [start, end]: O(log n + days returned)."""
    if start is not None and end is not None and start > end:
        raise HTTPException(422, detail="start must not be after end")
    try:
        return conns.videos.time_series(creator, start, end)
    except UnknownCreator:
        raise _unknown(creator) from None


@router.get("/{creator}/overview", response_model=Overview)
def overview(conns: Conns, creator: SlugPath) -> Overview:
    """Totals over every present video."""
    try:
        return conns.videos.overview(creator)
    except UnknownCreator:
        raise _unknown(creator) from None


@router.get("/{creator}/hashtags", response_model=Hashtags)
def hashtags(
    conns: Conns, creator: SlugPath, limit: Annotated[int, Query(ge=1, le=200), Whole] = 20
) -> Hashtags:
    """Most viewed hashtags."""
    try:
        return conns.videos.hashtags(creator, limit)
    except UnknownCreator:
        raise _unknown(creator) from None


@router.get("/{creator}/posting-time", response_model=PostingTime)
def posting_time(conns: Conns, creator: SlugPath) -> PostingTime:
    """Videos, views and engagement by posting weekday, Monday first."""
    try:
        return conns.videos.posting_time(creator)
    except UnknownCreator:
        raise _unknown(creator) from None
