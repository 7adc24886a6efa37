"""Request dependencies: the process's connections and validated common parameters."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from fastapi import HTTPException, Path, Query, Request
from pydantic import BeforeValidator

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


def blank_is_absent(value: Any) -> Any:
    """A query parameter sent empty (``?as_of=``, as the SPEC's route templates write
    it) means the parameter was not given."""
    return None if value == "" else value


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def date_written_iso(value: Any) -> Any:
    """A date parameter as ``YYYY-MM-DD`` only: pydantic would also take a Unix time
    (``0``, ``1719705600``) or a datetime and quietly read it as some date."""
    value = blank_is_absent(value)
    if value is None or isinstance(value, dt.date):
        return value
    if isinstance(value, str) and _DATE.fullmatch(value):
        return value
    raise ValueError("must be a date written YYYY-MM-DD")


SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN, description="a slug")]
DateQuery = Annotated[dt.date | None, BeforeValidator(date_written_iso)]
"""An optional ``YYYY-MM-DD`` query parameter; empty means not given."""
AsOf = Annotated[DateQuery, Query(description="the date to read as of (YYYY-MM-DD); default today")]
