"""Setlist reads: gaps, velocity, trends, stats, bustouts, debuts and one song."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query

from api_stub.deps import AsOf, SlugPath, connections, resolve_as_of
from stats.setlist_models import (
    Bustouts,
    Debuts,
    GapRow,
    SongFigures,
    Trends,
    VelocityRow,
    VerticalStats,
)
from stats.setlists import UnknownVertical
from worker.connections import Connections

router = APIRouter(prefix="/analytics", tags=["setlists"])
Conns = Annotated[Connections, Depends(connections)]
Limit = Annotated[int, Query(ge=1, le=200)]
Days = Annotated[int, Query(ge=1, le=100_000)]


def _unknown(vertical: str) -> HTTPException:
    return HTTPException(404, detail=f"unknown vertical {vertical!r}")


@router.get("/gaps/{vertical}", response_model=list[GapRow])
def gaps(
    conns: Conns,
    vertical: SlugPath,
    as_of: AsOf = None,
    min_plays: Annotated[int, Query(ge=0, le=10**9)] = 5,
    limit: Limit = 50,
) -> list[GapRow]:
    """Songs not played for the longest time (O(log n + k) as of the latest show)."""
    try:
        return conns.setlists.gaps(vertical, resolve_as_of(conns, as_of), min_plays, limit)
    except UnknownVertical:
        raise _unknown(vertical) from None


@router.get("/velocity/{vertical}", response_model=list[VelocityRow])
def velocity(
    conns: Conns, vertical: SlugPath, as_of: AsOf = None, limit: Limit = 50
) -> list[VelocityRow]:
    """What is hot: plays in the last 30, 90 and 365 days, weighted 3/2/1."""
    try:
        return conns.setlists.velocity(vertical, resolve_as_of(conns, as_of), limit)
    except UnknownVertical:
        raise _unknown(vertical) from None


@router.get("/trends/{vertical}", response_model=Trends)
def trends(
    conns: Conns,
    vertical: SlugPath,
    as_of: AsOf = None,
    period: Literal["month", "quarter"] = "month",
) -> Trends:
    """Shows and performances per month or quarter."""
    try:
        return conns.setlists.trends(vertical, resolve_as_of(conns, as_of), period)
    except UnknownVertical:
        raise _unknown(vertical) from None


@router.get("/stats/{vertical}", response_model=VerticalStats)
def stats(conns: Conns, vertical: SlugPath, as_of: AsOf = None) -> VerticalStats:
    """Band totals."""
    try:
        return conns.setlists.stats(vertical, resolve_as_of(conns, as_of))
    except UnknownVertical:
        raise _unknown(vertical) from None


@router.get("/bustouts/{vertical}", response_model=Bustouts)
def bustouts(
    conns: Conns,
    vertical: SlugPath,
    as_of: AsOf = None,
    days: Days = 365,
    gap_threshold: Annotated[int, Query(ge=0, le=100_000)] = 180,
    gap_shows_threshold: Annotated[int | None, Query(ge=0, le=10**9)] = None,
) -> Bustouts:
    """Songs back after a long absence."""
    try:
        return conns.setlists.bustouts(
            vertical, resolve_as_of(conns, as_of), days, gap_threshold, gap_shows_threshold
        )
    except UnknownVertical:
        raise _unknown(vertical) from None


@router.get("/debut-songs/{vertical}", response_model=Debuts)
def debut_songs(conns: Conns, vertical: SlugPath, as_of: AsOf = None, days: Days = 365) -> Debuts:
    """Songs first played in the last ``days`` days."""
    try:
        return conns.setlists.debuts(vertical, resolve_as_of(conns, as_of), days)
    except UnknownVertical:
        raise _unknown(vertical) from None


@router.get("/songs/{vertical}/{song}", response_model=SongFigures)
def song(conns: Conns, vertical: SlugPath, song: SlugPath, as_of: AsOf = None) -> SongFigures:
    """Every figure of one song."""
    try:
        found = conns.setlists.song(vertical, song, resolve_as_of(conns, as_of))
    except UnknownVertical:
        raise _unknown(vertical) from None
    if found is None:
        raise HTTPException(404, detail=f"song {song!r} has no play in {vertical!r} by that date")
    return found
