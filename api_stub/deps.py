"""Request dependencies: the process's connections and validated common parameters."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import HTTPException, Path, Query, Request

from events.fields import MAX_YEAR, MIN_YEAR, SLUG_PATTERN
from worker.connections import Connections


async def connections(request: Request) -> Connections:
    """The connections the app was created with.

    ``async`` because it does no I/O: FastAPI runs a plain ``def`` dependency in its
    thread pool, a hop that cost more than many reads.
    """
    conns: Connections = request.app.state.conns
    return conns


def resolve_as_of(conns: Connections, as_of: dt.date | None) -> dt.date:
    """``as_of`` when given (years 1900-2100), else today."""
    if as_of is None:
        return conns.settings.current_date()
    if not MIN_YEAR <= as_of.year <= MAX_YEAR:
        raise HTTPException(422, detail=f"as_of: year must be within {MIN_YEAR}-{MAX_YEAR}")
    return as_of


SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN, description="a slug")]
AsOf = Annotated[dt.date | None, Query(description="the date to read as of; default today")]
