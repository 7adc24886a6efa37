"""Request dependencies: the process's connections and validated common parameters."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from fastapi import Path, Query, Request
from pydantic import BeforeValidator

from events.fields import SLUG_PATTERN, strict_date
from worker.connections import Connections


async def connections(request: Request) -> Connections:
    """The connections the app was created with.

    ``async`` because it does no I/O: FastAPI runs a plain ``def`` dependency in its
    thread pool, a hop that cost more than many reads.
    """
    conns: Connections = request.app.state.conns
    return conns


def resolve_as_of(conns: Connections, as_of: dt.date | None) -> dt.date:
    """``as_of`` when given, else today."""
    return conns.settings.current_date() if as_of is None else as_of


def blank_is_absent(value: Any) -> Any:
    """A query parameter sent empty (``?as_of=``, as the SPEC's route templates write
    it) means the parameter was not given."""
    return None if value == "" else value


_WHOLE = re.compile(r"-?[0-9]+", re.ASCII)


def whole_number(value: Any) -> Any:
    """A whole-number parameter as digits only (a minus sign allowed, for the range check
    to name): pydantic's lax mode would take ``+5``, `` 5``, ``5.0`` and ``1_0`` (ten)."""
    if isinstance(value, str) and not _WHOLE.fullmatch(value):
        raise ValueError("must be a whole number written in digits")
    return value


def optional_whole(value: Any) -> Any:
    """:func:`whole_number`, or empty for not given."""
    value = blank_is_absent(value)
    return None if value is None else whole_number(value)


def optional_date(value: Any) -> dt.date | None:
    """A date parameter: ``YYYY-MM-DD`` as events write dates, or empty for none."""
    value = blank_is_absent(value)
    return None if value is None else strict_date(value)


Whole = BeforeValidator(whole_number)
"""Put in the ``Annotated`` of every integer query parameter."""
SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN, description="a slug")]
DateQuery = Annotated[dt.date | None, BeforeValidator(optional_date)]
"""An optional ``YYYY-MM-DD`` query parameter; empty means not given."""
AsOf = Annotated[DateQuery, Query(description="the date to read as of (YYYY-MM-DD); default today")]
