"""Wire records: the compact form in which a validated event travels on the queue.

A publisher validates every event with the pydantic models of ``events.schemas``
once, then queues each as a *wire record*: a list of strings holding what the state
needs of it, its version already computed. A worker checks the records' shape (one
regular expression over the whole batch, about a microsecond a record) instead of
validating each event again (five to ten times that), and hands them to the store as
they are. The shape check is what keeps a
record from a faulty producer out of the Lua scripts; the full rules of SPEC
section 1 are the publisher's.

===========================  ===============================================================
type                         record
===========================  ===============================================================
``performance.recorded``     ``R, vertical, performance_id, version, song, show_id,
                             show_date, song_title``
``performance.retracted``    ``X, vertical, performance_id, version``
``video.posted``             ``P, creator, video_id, version, date_posted, hashtags,
                             views, likes, comments, shares, bookmarks, new_followers,
                             rh, rl``
``video.metrics_updated``    ``M, creator, video_id, version, "", "", views, likes,
                             comments, shares, bookmarks, new_followers, rh, rl``
``video.deleted``            ``D, creator, video_id, version``
===========================  ===============================================================

``version`` is ``events.fields.version_of`` of the event; ``hashtags`` are joined by
:data:`HASHTAG_SEP`; ``rh * RATE_SPLIT + rl`` is the engagement rate in units of
1e-7 percent (``_Metrics.rate_units``). Counts are decimal strings.
"""

from __future__ import annotations

import re
from typing import Any

from events.fields import MAX_YEAR, MIN_YEAR, SLUG_PATTERN
from events.schemas import (
    Event,
    PerformanceRecorded,
    PerformanceRetracted,
    VideoDeleted,
    VideoPosted,
)

Record = list[str]

HASHTAG_SEP = "\x1e"
"""Joins a video's hashtags (hashtags are printable, so never hold it)."""

RATE_SPLIT = 10**12
"""Rate units travel as ``rh * RATE_SPLIT + rl`` so each part stays a small integer."""

TYPE_OF: dict[str, str] = {
    "R": "performance.recorded",
    "X": "performance.retracted",
    "P": "video.posted",
    "M": "video.metrics_updated",
    "D": "video.deleted",
}
"""The event type of each record's first field."""

SETLIST_OPS = frozenset("RX")
"""Record kinds the setlist store applies; the others are the video store's."""


def record_of(event: Event) -> Record:
    """The wire record of a validated event."""
    if isinstance(event, PerformanceRecorded):
        return [
            "R",
            event.vertical,
            event.performance_id,
            event.version,
            event.song,
            event.show_id,
            event.show_date.isoformat(),
            event.song_title or event.song,
        ]
    if isinstance(event, PerformanceRetracted):
        return ["X", event.vertical, event.performance_id, event.version]
    if isinstance(event, VideoDeleted):
        return ["D", event.creator, event.video_id, event.version]
    rh, rl = divmod(event.rate_units(), RATE_SPLIT)
    if isinstance(event, VideoPosted):
        head = ["P", event.creator, event.video_id, event.version, event.date_posted.isoformat()]
        head.append(HASHTAG_SEP.join(event.hashtags or ()))
    else:
        head = ["M", event.creator, event.video_id, event.version, "", ""]
    counts = (
        event.views,
        event.likes,
        event.comments,
        event.shares,
        event.bookmarks,
        event.new_followers,
        rh,
        rl,
    )
    return head + [str(n) for n in counts]


# -- the shape check ------------------------------------------------------------------

_SLUG = SLUG_PATTERN.strip("^$")
_DATE = r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
_COUNT = r"(?:0|[1-9]\d{0,14}|10{15})"  # 0 to 10^15
_COUNTS = "\x1f".join([_COUNT] * 8)


def _shapes(field: str, date: str, tags: str) -> dict[str, str]:
    """The pattern of each kind of record, its fields joined by 0x1F, from the pattern
    of one character of a text field, of a date and of the hashtags field."""
    ident = field + "{1,200}"
    version = r"\d{21}\|" + ident
    fields = {
        "R": ["R", _SLUG, ident, version, _SLUG, ident, date, ident],
        "X": ["X", _SLUG, ident, version],
        "P": ["P", _SLUG, ident, version, date, tags, _COUNTS],
        "M": ["M", _SLUG, ident, version, "", "", _COUNTS],
        "D": ["D", _SLUG, ident, version],
    }
    return {kind: "\x1f".join(parts) for kind, parts in fields.items()}


# One record at a time: any character but the separator; printability, empty hashtags
# and the year range are checked after the match, each with its own reason.
_SHAPES: dict[str, re.Pattern[str]] = {
    kind: re.compile(shape) for kind, shape in _shapes("[^\x1f]", _DATE, "[^\x1f]*").items()
}
_DATE_FIELD = {"R": 6, "P": 4}


# -- the same check, a batch at a time ------------------------------------------------

RECORD_SEP = "\n"
"""Joins the records of a batch for :func:`all_well_formed`; it is not printable, so no
well-formed field holds it."""

_B_FIELD = "[^\x00-\x1f\x7f]"  # no ASCII control character: no separator either
# Years MIN_YEAR-MAX_YEAR (1900-2100): tests/test_wire.py holds the two checks equal.
_B_DATE = r"(?:19\d\d|20\d\d|2100)-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
_B_TAGS = f"(?:{_B_FIELD}+(?:\x1e{_B_FIELD}+)*)?"  # no empty hashtag
_B_RECORD = "(?:" + "|".join(_shapes(_B_FIELD, _B_DATE, _B_TAGS).values()) + ")"
_BATCH = re.compile(f"{_B_RECORD}(?:\n{_B_RECORD})*")


def all_well_formed(records: list[Any]) -> bool:
    """Whether :func:`problem` finds nothing wrong with any of ``records``: the same
    answer (a property test holds it to that) from one regular expression over the whole
    batch, instead of a few Python steps a record."""
    if not records:
        return True
    if not all(isinstance(record, list) for record in records):
        return False
    try:
        text = RECORD_SEP.join(map("\x1f".join, records))
    except TypeError:  # a field that is not a string
        return False
    # No field holds a record or field separator: each record is then exactly its own
    # stretch of the text, and its first field alone picks the shape it must match.
    if text.count(RECORD_SEP) != len(records) - 1:
        return False
    if text.count("\x1f") != sum(map(len, records)) - len(records):
        return False
    if not _BATCH.fullmatch(text):
        return False
    if text.isascii():  # the pattern let no field hold an ASCII character that is not printable
        return True
    # Only separators are left to take out: the pattern let no field hold one.
    return text.replace("\x1f", "").replace("\x1e", "").replace(RECORD_SEP, "").isprintable()


def problem(record: Any) -> str | None:
    """Why ``record`` is not a well-formed wire record, or None when it is."""
    if not isinstance(record, list) or not record or not all(isinstance(f, str) for f in record):
        return "a wire record is a non-empty list of strings"
    shape = _SHAPES.get(record[0])
    if shape is None:
        return f"unknown record kind {str(record[0])[:20]!r}"
    if not shape.fullmatch("\x1f".join(record)):
        return f"malformed {TYPE_OF[record[0]]} record"
    if record[0] == "P":
        if record[5] and "" in record[5].split(HASHTAG_SEP):
            return "an empty hashtag"
        printable = "".join(record[:5]) + record[5].replace(HASHTAG_SEP, "") + "".join(record[6:])
    else:
        printable = "".join(record)
    if not printable.isprintable():
        return "a field holds a character that is not printable"
    at = _DATE_FIELD.get(record[0])
    if at is not None and not MIN_YEAR <= int(record[at][:4]) <= MAX_YEAR:
        return f"year must be within {MIN_YEAR}-{MAX_YEAR}"
    return None
