"""Pydantic models of the five event types and the parser that names what is wrong."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
)

from events.fields import (
    NO_NUL_PATTERN,
    SLUG_PATTERN,
    Count,
    EventDate,
    Ident,
    SetName,
    Slug,
    Text,
    Timestamp,
    Title,
    Venue,
    normalize_hashtag,
    timestamp_text,
    version_of,
)

MAX_HASHTAGS = 100
"""Hashtags a single video may carry."""


class EventError(ValueError):
    """An event was rejected; ``where`` names it (line or event_id), ``reason`` says why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


T = TypeVar("T")


class computed_once(Generic[T]):
    """A property computed on first use and then kept in the instance, as
    ``functools.cached_property`` does but without its lock: Python 3.11's takes a
    lock on every first use (0.6 us against 0.3 in a one-off timing, once per event
    published). Events are not shared between threads while they are built; at worst
    two threads compute the same value twice."""

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> T:
        if instance is None:
            return self  # type: ignore[return-value]
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ignored_types=(computed_once,))

    event_id: Ident
    occurred_at: Timestamp

    @computed_once
    def version(self) -> str:
        """Sortable ``(occurred_at, event_id)``: the greater version wins."""
        return version_of(self.occurred_at, self.event_id)

    def logged_body(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``raw``, the JSON object this event was validated from, as the event log keeps
        it: equal to :meth:`to_json_dict` but for how ``occurred_at`` is written (a test
        holds it to that), at a fraction of the cost of dumping the event again.
        Readers of the log's bodies in SQL (``statsworker verify``) rely on it."""
        if None in raw.values():
            return {key: value for key, value in raw.items() if value is not None}
        return raw

    def to_json_dict(self) -> dict[str, Any]:
        """The event as plain JSON data, as the log stores it.

        Equal to ``model_dump(mode="json", exclude_none=True)`` (a test holds it to
        that), at a fifth of its cost: every publish makes one per event.
        """
        out: dict[str, Any] = {}
        values = self.__dict__
        for name in _field_names(type(self)):
            value = values[name]
            if value is None:
                continue
            if isinstance(value, dt.datetime):
                value = timestamp_text(value)
            elif isinstance(value, dt.date):
                value = value.isoformat()
            elif isinstance(value, list):
                value = list(value)
            out[name] = value
        return out


@cache
def _field_names(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(model.model_fields)


def _hashtags(tags: list[str]) -> list[str]:
    clean: list[str] = []
    for raw in tags:
        tag = normalize_hashtag(raw)
        if not tag or len(tag) > 100 or not tag.isprintable() or any(c.isspace() for c in tag):
            raise ValueError(f"hashtag {raw!r} must be 1-100 printable characters without spaces")
        if tag not in clean:
            clean.append(tag)
    return clean


Number = Annotated[StrictInt | StrictFloat, Field(ge=0, le=1e15, allow_inf_nan=False)]
Hashtags = Annotated[
    list[Annotated[str, Field(strict=True)]],
    Field(max_length=MAX_HASHTAGS),
    AfterValidator(_hashtags),
]


class PerformanceRecorded(_Event):
    """A song was played at a show."""

    type: Literal["performance.recorded"]
    vertical: Slug
    performance_id: Ident
    show_id: Ident
    show_date: EventDate
    song: Slug
    song_title: Title | None = None
    venue: Venue | None = None
    set: SetName | None = None
    position: Annotated[StrictInt, Field(ge=0, le=10**6)] | None = None

    @property
    def title(self) -> str:
        """The song title, the slug when none was given."""
        return self.song_title or self.song


class PerformanceRetracted(_Event):
    """A performance recorded earlier did not happen (or was entered by mistake)."""

    type: Literal["performance.retracted"]
    vertical: Slug
    performance_id: Ident


class _Metrics(_Event):
    creator: Slug
    video_id: Ident
    views: Count
    likes: Count
    comments: Count
    shares: Count
    bookmarks: Count
    new_followers: Count

    def rate_units(self) -> int:
        """Engagement rate in exact units of 1e-7 percent, rounded half to even."""
        engaged = self.likes + self.comments + self.shares + self.bookmarks
        if self.views == 0:
            return 0
        num, den = engaged * 100 * 10**7, self.views
        q, r = divmod(num, den)
        if 2 * r > den or (2 * r == den and q % 2 == 1):
            q += 1
        return q


class VideoPosted(_Metrics):
    """A creator posted a video; carries its first metrics."""

    type: Literal["video.posted"]
    date_posted: EventDate
    hook: Text | None = None
    cta: Text | None = None
    hashtags: Hashtags | None = None
    length_seconds: Number | None = None
    avg_watch_time: Number | None = None
    watched_full_video_percentage: (
        Annotated[StrictInt | StrictFloat, Field(ge=0, le=100, allow_inf_nan=False)] | None
    ) = None

    def logged_body(self, raw: dict[str, Any]) -> dict[str, Any]:
        """As :meth:`_Event.logged_body`, with the hashtags as validation normalized them."""
        body = super().logged_body(raw)
        if self.hashtags is not None and body.get("hashtags") != self.hashtags:
            body = {**body, "hashtags": list(self.hashtags)}
        return body


class VideoMetricsUpdated(_Metrics):
    """Cumulative metrics of a video at ``occurred_at``."""

    type: Literal["video.metrics_updated"]


class VideoDeleted(_Event):
    """A video was deleted."""

    type: Literal["video.deleted"]
    creator: Slug
    video_id: Ident


Event = (
    PerformanceRecorded | PerformanceRetracted | VideoPosted | VideoMetricsUpdated | VideoDeleted
)
PerformanceEvent = PerformanceRecorded | PerformanceRetracted
VideoEvent = VideoPosted | VideoMetricsUpdated | VideoDeleted

EVENT_TYPES: dict[str, type[_Event]] = {
    "performance.recorded": PerformanceRecorded,
    "performance.retracted": PerformanceRetracted,
    "video.posted": VideoPosted,
    "video.metrics_updated": VideoMetricsUpdated,
    "video.deleted": VideoDeleted,
}


def _describe(obj: Any, fallback: str) -> str:
    if isinstance(obj, dict):
        event_id = obj.get("event_id")
        if isinstance(event_id, str) and event_id and len(event_id) <= 200:
            return f"event_id {event_id!r}"
    return fallback


MAX_NAME_IN_ERROR = 60
"""Longest field name an error repeats (an unknown one may be any length)."""

_NUMBER_TAGS = ("int", "float")
"""The members of :data:`Number` as pydantic names them in an error's location."""


def _name(part: str | int) -> str:
    text = str(part)
    return text if len(text) <= MAX_NAME_IN_ERROR else text[:MAX_NAME_IN_ERROR] + "..."


def _first_error(exc: ValidationError) -> str:
    parts: list[str] = []
    for err in exc.errors(include_url=False)[:5]:
        where = err["loc"]
        msg = err["msg"].removeprefix("Value error, ")
        if isinstance(err.get("input"), NotJson):
            if where[-1:] and where[-1] in _NUMBER_TAGS:
                where = where[:-1]
            msg = err["input"].reason
        elif err["type"] in ("int_type", "float_type") and where[-1:] and where[-1] in _NUMBER_TAGS:
            where, msg = where[:-1], "Input should be a number"  # once, not once per member
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "string_pattern_mismatch":
            if err.get("ctx", {}).get("pattern") == NO_NUL_PATTERN:
                msg = "must not contain the NUL character (U+0000)"
            else:
                msg = f"must match {SLUG_PATTERN}"
        elif err["type"] == "string_unicode":
            msg = "not UTF-8 text"
        part = f"{'.'.join(_name(p) for p in where) or 'event'}: {msg}"
        if part not in parts:
            parts.append(part)
    return "; ".join(parts)


def parse_event(obj: Any, where: str | None = None) -> Event:
    """Validate one decoded JSON object as an event.

    Args:
        obj: the decoded JSON value.
        where: how to name the event in an error (e.g. ``line 7``); by default its
            event_id, else ``event``.

    Raises:
        EventError: naming the event, the field and the reason.
    """
    if not isinstance(obj, dict):
        raise EventError(where or "event", f"event must be a JSON object, got {_kind(obj)}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise EventError(
            where or _describe(obj, "event"),
            "type: required string field is missing or not a string",
        )
    model = EVENT_TYPES.get(kind)
    if model is None:
        raise EventError(
            where or _describe(obj, "event"), f"type: unknown event type {kind[:60]!r}"
        )
    try:
        return model.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as exc:
        # Named only on failure: building the name costs more than a valid event's check.
        raise EventError(where or _describe(obj, "event"), _first_error(exc)) from None


def without_bom(line: str | bytes) -> str | bytes:
    """``line`` without a byte order mark at its start (editors on Windows write one)."""
    if isinstance(line, bytes):
        return line.removeprefix(b"\xef\xbb\xbf")
    return line.removeprefix("\ufeff")


class NotJson:
    """``NaN``, ``Infinity`` or ``-Infinity`` where a value stood: not JSON (RFC 8259),
    though Python's decoder reads them. :func:`loads` leaves this marker in their place,
    which no field accepts, so the event holding one is rejected by name, and the valid
    events beside it in a request body are still taken."""

    __slots__ = ("reason", "word")

    def __init__(self, word: str, reason: str | None = None) -> None:
        self.word = word
        self.reason = reason or f"{word} is not a JSON number"

    def __repr__(self) -> str:
        return self.word


def _whole(digits: str) -> Any:
    """An integer, or :class:`NotJson` for one longer than Python converts (4,300 digits)."""
    try:
        return int(digits)
    except ValueError:
        return NotJson("an integer", f"an integer of {len(digits):,} characters is out of range")


def loads(text: str | bytes) -> Any:
    """Decode JSON, with :class:`NotJson` for ``NaN`` and ``Infinity`` (``json.loads``
    calls the hook for those words only, so valid input costs nothing more), and for an
    integer too long to convert: on the first, the text is decoded again with a hook per
    integer, so that only the event holding it is rejected."""
    try:
        return json.loads(text, parse_constant=NotJson)
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
        return json.loads(text, parse_constant=NotJson, parse_int=_whole)


def _kind(obj: Any) -> str:
    return obj.word if isinstance(obj, NotJson) else type(obj).__name__


def parse_json_line(line: str | bytes, lineno: int) -> Any:
    """Decode one JSON Lines line; errors are named ``line N``. A byte order mark before
    the first line (editors on Windows write one) is not part of it."""
    if lineno == 1:
        line = without_bom(line)
    try:
        return loads(line)
    except (ValueError, RecursionError) as exc:
        raise EventError(f"line {lineno}", f"not valid JSON ({exc})") from None


def show_month(day: dt.date) -> str:
    """``YYYY-MM`` of a date."""
    return f"{day.year:04d}-{day.month:02d}"
