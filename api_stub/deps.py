"""Request dependencies: the process's connections and validated common parameters."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from fastapi import Path, Query, Request
from pydantic import BaseModel, BeforeValidator

from events.fields import SLUG_PATTERN, strict_date
from worker.connections import Connections


class Detail(BaseModel):
    """An error answer that is not about one parameter: what went wrong, in words."""

    detail: str


def error(description: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry of a :class:`Detail` answer."""
    return {"model": Detail, "description": description}


READ_ERRORS: dict[int | str, dict[str, Any]] = {
    404: error("unknown vertical or creator (or a song with no play by as_of)"),
    503: error("Redis is unreachable, or holds state that needs `statsworker rebuild`"),
}
"""The answers besides 200 and 422 that every read route documents."""


def or_detail(schema_ref: str, description: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry whose body is the schema at ``schema_ref`` or a
    :class:`Detail` (``Detail`` is in the components once :data:`READ_ERRORS` is used)."""
    refs = [{"$ref": schema_ref}, {"$ref": "#/components/schemas/Detail"}]
    return {
        "description": description,
        "content": {"application/json": {"schema": {"anyOf": refs}}},
    }


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
"""Put in the ``Annotated`` of every integer query parameter, after its ``Query``:
before it, FastAPI writes pydantic's ``ge``/``le`` into the OpenAPI schema instead of
JSON Schema's ``minimum``/``maximum``."""
SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN, description="a slug")]
DateQuery = Annotated[dt.date | None, BeforeValidator(optional_date)]
"""An optional ``YYYY-MM-DD`` query parameter; empty means not given."""
DATE_PATTERN = r"^(19[0-9]{2}|20[0-9]{2}|2100)-[0-9]{2}-[0-9]{2}$"
"""A date's form and years (1900-2100) for OpenAPI; :func:`strict_date` checks it."""


def date_query(description: str) -> Any:
    """``Query`` of a :data:`DateQuery` parameter, its form and years in the schema."""
    return Query(description=description, json_schema_extra={"pattern": DATE_PATTERN})


AsOf = Annotated[DateQuery, date_query("the date to read as of (YYYY-MM-DD); default today")]
