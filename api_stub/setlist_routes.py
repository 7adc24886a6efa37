"""Setlist reads: gaps, velocity, trends, stats, bustouts, debuts and one song.

Each route answers the JSON bytes of its response model itself: given a model, FastAPI
validates it again and dumps it in a second trip through its thread pool, which took
about as long as the read. ``response_model`` still documents each answer in OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, BeforeValidator, Field, TypeAdapter

from api_stub.deps import (
    READ_ERRORS,
    AsOf,
    SlugPath,
    Whole,
    connections,
    optional_whole,
    resolve_as_of,
)
from stats.setlist_models import (
    Bustouts,
    Debuts,
    GapRow,
    SongFigures,
    Trends,
    VelocityRow,
    VerticalStats,
    trends_json,
)
from stats.setlists import UnknownVertical
from worker.connections import Connections

router = APIRouter(prefix="/analytics", tags=["setlists"], responses=READ_ERRORS)
Conns = Annotated[Connections, Depends(connections)]
Limit = Annotated[int, Query(ge=1, le=200), Whole]
Days = Annotated[int, Query(ge=1, le=100_000), Whole]

_GAP_ROWS = TypeAdapter(list[GapRow])
_VELOCITY_ROWS = TypeAdapter(list[VelocityRow])


def _json(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


def _model(answer: BaseModel) -> Response:
    return _json(answer.model_dump_json().encode())


def _rows(adapter: TypeAdapter[Any], rows: list[Any]) -> Response:
    return _json(adapter.dump_json(rows))


def _unknown(vertical: str) -> HTTPException:
    return HTTPException(404, detail=f"unknown vertical {vertical!r}")


@router.get("/gaps/{vertical}", response_model=list[GapRow])
def gaps(
    conns: Conns,
    vertical: SlugPath,
    as_of: AsOf = None,
    min_plays: Annotated[int, Query(ge=0, le=10**9), Whole] = 5,
    limit: Limit = 50,
) -> Response:
    """Songs not played for the longest time (O(log n + k) as of the latest show)."""
    try:
        found = conns.setlists.gaps(vertical, resolve_as_of(conns, as_of), min_plays, limit)
    except UnknownVertical:
        raise _unknown(vertical) from None
    return _rows(_GAP_ROWS, found)


@router.get("/velocity/{vertical}", response_model=list[VelocityRow])
def velocity(conns: Conns, vertical: SlugPath, as_of: AsOf = None, limit: Limit = 50) -> Response:
    """What is hot: plays in the last 30, 90 and 365 days, weighted 3/2/1."""
    try:
        found = conns.setlists.velocity(vertical, resolve_as_of(conns, as_of), limit)
    except UnknownVertical:
        raise _unknown(vertical) from None
    return _rows(_VELOCITY_ROWS, found)


@router.get("/trends/{vertical}", response_model=Trends)
def trends(
    conns: Conns,
    vertical: SlugPath,
    as_of: AsOf = None,
    period: Literal["month", "quarter"] = "month",
) -> Response:
    """Shows and performances per month or quarter."""
    try:
        rows = conns.setlists.trend_rows(vertical, resolve_as_of(conns, as_of), period)
    except UnknownVertical:
        raise _unknown(vertical) from None
    return _json(trends_json(vertical, period, rows))


@router.get("/stats/{vertical}", response_model=VerticalStats)
def stats(conns: Conns, vertical: SlugPath, as_of: AsOf = None) -> Response:
    """Band totals."""
    try:
        return _model(conns.setlists.stats(vertical, resolve_as_of(conns, as_of)))
    except UnknownVertical:
        raise _unknown(vertical) from None


@router.get("/bustouts/{vertical}", response_model=Bustouts)
def bustouts(
    conns: Conns,
    vertical: SlugPath,
    as_of: AsOf = None,
    days: Days = 365,
    gap_threshold: Annotated[int, Query(ge=0, le=100_000), Whole] = 180,
    gap_shows_threshold: Annotated[
        Annotated[int, Field(ge=0, le=10**9)] | None, BeforeValidator(optional_whole), Query()
    ] = None,
) -> Response:
    """Songs back after a long absence."""
    try:
        found = conns.setlists.bustouts(
            vertical, resolve_as_of(conns, as_of), days, gap_threshold, gap_shows_threshold
        )
    except UnknownVertical:
        raise _unknown(vertical) from None
    return _model(found)


@router.get("/debut-songs/{vertical}", response_model=Debuts)
def debut_songs(conns: Conns, vertical: SlugPath, as_of: AsOf = None, days: Days = 365) -> Response:
    """Songs first played in the last ``days`` days."""
    try:
        return _model(conns.setlists.debuts(vertical, resolve_as_of(conns, as_of), days))
    except UnknownVertical:
        raise _unknown(vertical) from None


@router.get("/songs/{vertical}/{song}", response_model=SongFigures)
def song(conns: Conns, vertical: SlugPath, song: SlugPath, as_of: AsOf = None) -> Response:
    """Every figure of one song."""
    try:
        found = conns.setlists.song(vertical, song, resolve_as_of(conns, as_of))
    except UnknownVertical:
        raise _unknown(vertical) from None
    if found is None:
        raise HTTPException(404, detail=f"song {song!r} has no play in {vertical!r} by that date")
    return _model(found)
