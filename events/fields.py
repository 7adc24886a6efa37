"""Field types shared by the event models: slugs, ids, dates, timestamps, counts."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictInt,
    StrictStr,
    StringConstraints,
)

SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
SLUG_RE = re.compile(SLUG_PATTERN)
MAX_COUNT = 10**15
"""Largest count an event may carry."""
MIN_YEAR, MAX_YEAR = 1900, 2100
"""Dates outside these years are rejected."""

DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
"""A date written ``YYYY-MM-DD`` (checked for a real date apart)."""
_RFC3339_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
    re.ASCII,  # \d is 0-9 only: int() would read other scripts' digits in the fraction
)
_EPOCH0 = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


def slugify(title: str) -> str:
    """Slug of a title: NFKD, ASCII only, lower case, runs of other characters to ``-``."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:128]


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must hold printable characters only")
    return value


def strict_date(value: Any) -> dt.date:
    """A date written ``YYYY-MM-DD`` (or a ``date``), a real one, in years 1900-2100:
    pydantic's own date type would also read ``0`` or ``1719705600`` as a Unix time."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str) and DATE_RE.fullmatch(value):
        try:
            parsed = dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a real calendar date") from None
    else:
        raise ValueError("must be a date written YYYY-MM-DD")
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise ValueError(f"year must be within {MIN_YEAR}-{MAX_YEAR}")
    return parsed


class Instant(dt.datetime):
    """A timezone-aware datetime that keeps the nanoseconds below its microsecond.

    RFC 3339 allows any number of fraction digits; two events of one source may differ
    by less than a microsecond, and the later must still win.
    """

    nanos: int = 0

    def rfc3339(self) -> str:
        """The instant as written on the wire, to the nanosecond, with its own offset."""
        # isoformat is C code: YYYY-MM-DDTHH:MM:SS[.ffffff]+HH:MM (offsets are whole
        # minutes, as RFC 3339 writes them); a third of the cost of strftime.
        text = self.isoformat()
        offset = text[-6:]
        head = text[:19]
        if self.microsecond or self.nanos:
            head += f".{self.microsecond:06d}{self.nanos:03d}".rstrip("0")
        return head + ("Z" if offset == "+00:00" else offset)


def _timestamp(value: Any) -> Instant:
    if type(value) is not str:  # text, as every event from JSON has it, goes straight on
        if isinstance(value, Instant):
            return value
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.isoformat()
    match = _RFC3339_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2024-05-01T20:00:00Z")
    text = value
    if text[10] != "T" or text[-1] == "z":  # RFC 3339 allows t, a space and z as well
        text = text.replace("t", "T").replace(" ", "T").replace("z", "Z")
    nanos = 0
    frac = match.group(1)  # "." and digits, or None
    if frac is not None and len(frac) > 10:  # RFC 3339 sets no limit; the version is in ns
        if frac[10:].strip("0"):
            raise ValueError(
                f"{value!r} is finer than a nanosecond: at most 9 digits after the"
                " second's '.' (more only when they are zeros)"
            )
        text = text.replace(frac, frac[:10])
        frac = frac[:10]
    if frac is not None and len(frac) > 7:
        nanos = int(frac[7:].ljust(3, "0"))
        text = text.replace(frac, frac[:7])
    try:
        parsed = Instant.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a real instant") from None
    if parsed.year in (1, 9999):  # only these can leave datetime's range once in UTC
        try:
            parsed.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError(f"{value!r} lies outside the years 0001-9999 in UTC") from None
    if nanos:  # the class says 0 otherwise, and an instance then needs no __dict__
        parsed.nanos = nanos
    return parsed


def timestamp_text(value: dt.datetime) -> str:
    if isinstance(value, Instant):
        return value.rfc3339()
    return value.isoformat()


# The pattern is matched by pydantic-core, not by a Python call per slug;
# events.schemas words the error "must match <pattern>".
Slug = Annotated[StrictStr, StringConstraints(pattern=SLUG_PATTERN)]
MAX_ID_LENGTH = 200
"""Longest id (``event_id``, ``performance_id``, ``show_id``, ``video_id``), in characters."""

Ident = Annotated[
    StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_printable)
]
Title = Annotated[StrictStr, Field(min_length=1, max_length=200), AfterValidator(_printable)]


NO_NUL_PATTERN = "^[^\x00]*$"
"""Free text holds no U+0000: PostgreSQL's JSONB, where the log keeps bodies, cannot,
so such an event is refused by name whatever the log, rather than failing its whole
batch at the insert. Matched by pydantic-core (a Python validator cost 0.3 us a field)."""


def _free_text(max_length: int) -> Any:
    return StringConstraints(strict=True, max_length=max_length, pattern=NO_NUL_PATTERN)


# Free text: a hook or call to action, a venue, a set's name.
Text = Annotated[str, _free_text(2000)]
Venue = Annotated[str, _free_text(200)]
SetName = Annotated[str, _free_text(50)]
EventDate = Annotated[dt.date, BeforeValidator(strict_date)]
Timestamp = Annotated[
    dt.datetime, PlainValidator(_timestamp), PlainSerializer(timestamp_text, when_used="json")
]
Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]


def version_of(occurred_at: dt.datetime, event_id: str) -> str:
    """Sortable version string: fixed-width UTC nanoseconds, ``|``, then the event id.

    Byte order of two versions is the order of ``(occurred_at, event_id)``.
    """
    delta = occurred_at - _EPOCH0  # aware minus aware: in UTC, with no datetime made
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    nanos = micros * 1000 + getattr(occurred_at, "nanos", 0)
    return f"{nanos:021d}|{event_id}"


def normalize_hashtag(tag: str) -> str:
    """A hashtag without any leading ``#`` (``##x`` is the tag ``x``), case folded.

    Normalizing a tag twice gives what once does: the log stores events with their tags
    normalized, and a replay (rebuild, the sweep) validates them again."""
    return tag.lstrip("#").casefold()
