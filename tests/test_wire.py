"""Wire records: every valid event passes the worker's shape check, malformed ones do not,
and the publisher's fast dumps equal pydantic's."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from events import wire
from events.fields import SLUG_PATTERN, SLUG_RE, Instant, _timestamp
from events.schemas import Event, EventError, parse_event
from tests.log_support import random_stream
from worker.generator import generate


def _events() -> list[Event]:
    return [*random_stream(seed=11, performances=300, videos=60), *generate(seed=5).events]


EVENTS = _events()


def test_every_valid_event_makes_a_well_formed_record() -> None:
    kinds = set()
    for event in EVENTS:
        record = wire.record_of(event)
        assert wire.problem(record) is None, (event, record)
        assert wire.TYPE_OF[record[0]] == event.type
        kinds.add(record[0])
    assert kinds == set(wire.TYPE_OF)


# A bad value for each field of each kind of record; any one of them makes it malformed.
_BAD_ID = ["", "x" * 201, "a\x1fb", "a\x00b", "tab\there"]
_BAD_SLUG = ["", "Not A Slug", "-lead", "a" * 129, "ünï"]
_BAD_VERSION = ["", "123|e", "0" * 21, "0" * 21 + "|", "x" * 21 + "|e"]
_BAD_DATE = ["", "2024-13-01", "2024-1-01", "1899-12-31", "2101-01-01", "2024-01-32"]
_BAD_COUNT = ["", "-1", "01", "1000000000000001", "1.5", "x"]
_FIELDS: dict[str, list[list[str]]] = {
    "R": [_BAD_SLUG, _BAD_ID, _BAD_VERSION, _BAD_SLUG, _BAD_ID, _BAD_DATE, _BAD_ID],
    "X": [_BAD_SLUG, _BAD_ID, _BAD_VERSION],
    "D": [_BAD_SLUG, _BAD_ID, _BAD_VERSION],
    "P": [
        _BAD_SLUG,
        _BAD_ID,
        _BAD_VERSION,
        _BAD_DATE,
        ["a\x1fb", "a\x1e\x1eb", "\x1e", "a b\x00"],
        *[_BAD_COUNT] * 8,
    ],
    "M": [_BAD_SLUG, _BAD_ID, _BAD_VERSION, ["x"], ["x"], *[_BAD_COUNT] * 8],
}


@settings(max_examples=400, deadline=None, database=None)
@given(seed=st.integers(0, 2**32))
def test_any_bad_field_makes_a_record_malformed(seed: int) -> None:
    rng = random.Random(seed)
    record = wire.record_of(rng.choice(EVENTS))
    field = rng.randrange(1, len(record))
    bad = list(record)
    bad[field] = rng.choice(_FIELDS[record[0]][field - 1])
    assert wire.problem(bad) is not None, bad


def test_records_of_the_wrong_shape_are_malformed() -> None:
    record = wire.record_of(EVENTS[0])
    cases: list[Any] = [
        None,
        "R",
        [],
        record[:-1],
        [*record, "extra"],
        ["Q", *record[1:]],
        [*record[:-1], 7],
        {"record": record},
    ]
    for case in cases:
        assert wire.problem(case) is not None, case


def test_the_fast_json_dict_equals_pydantics_dump() -> None:
    for event in EVENTS:
        assert event.to_json_dict() == event.model_dump(mode="json", exclude_none=True)


def _strftime_rfc3339(value: Instant) -> str:
    """The instant as written before isoformat took over from strftime."""
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond or value.nanos:
        text += f".{value.microsecond:06d}{value.nanos:03d}".rstrip("0")
    delta = value.utcoffset() or dt.timedelta(0)
    if not delta:
        return text + "Z"
    sign = "-" if delta < dt.timedelta(0) else "+"
    minutes = abs(int(delta.total_seconds())) // 60
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@settings(max_examples=500, deadline=None, database=None)
@given(
    moment=st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 12, 31)),
    nanos=st.sampled_from([0, 0, 1, 500, 999]),
    offset_minutes=st.sampled_from([0, 0, 1, -1, 330, -210, 14 * 60, -(23 * 60 + 59)]),
    micros=st.sampled_from([None, 0, 1, 999_999]),
)
def test_rfc3339_writes_what_it_reads(
    moment: dt.datetime, nanos: int, offset_minutes: int, micros: int | None
) -> None:
    if micros is not None:
        moment = moment.replace(microsecond=micros)
    zone = dt.timezone(dt.timedelta(minutes=offset_minutes))
    base = moment.replace(tzinfo=zone).isoformat()
    if nanos:
        head, tail = base[:19], base[19:]
        frac = f".{moment.microsecond:06d}" if moment.microsecond else ".000000"
        if tail.startswith("."):
            tail = tail[7:]
        base = f"{head}{frac}{nanos:03d}{tail}"
    parsed = _timestamp(base)
    text = parsed.rfc3339()
    assert text == _strftime_rfc3339(parsed)
    again = _timestamp(text)
    assert (again, again.nanos, again.utcoffset()) == (parsed, parsed.nanos, parsed.utcoffset())
    assert (
        parse_event(
            {
                "type": "performance.retracted",
                "event_id": "e",
                "occurred_at": text,
                "vertical": "v",
                "performance_id": "p",
            }
        ).to_json_dict()["occurred_at"]
        == text
    )


@settings(max_examples=600, deadline=None, database=None)
@given(
    slug=st.one_of(
        st.from_regex(SLUG_RE, fullmatch=True),
        st.text(alphabet="az09._-A\n \x00é", max_size=130),
    )
)
def test_models_accept_exactly_the_slugs_the_pattern_describes(slug: str) -> None:
    obj = {
        "type": "performance.retracted",
        "event_id": "e",
        "occurred_at": "2024-01-01T00:00:00Z",
        "vertical": slug,
        "performance_id": "p",
    }
    try:
        parse_event(obj)
        accepted = True
    except EventError as exc:
        assert exc.reason == f"vertical: must match {SLUG_PATTERN}"
        accepted = False
    assert accepted == (SLUG_RE.fullmatch(slug) is not None), slug


_OPTIONAL = {
    "performance.recorded": ("song_title", "venue", "set", "position"),
    "video.posted": ("hook", "cta", "hashtags", "length_seconds", "avg_watch_time"),
}


@settings(max_examples=400, deadline=None, database=None)
@given(seed=st.integers(0, 2**32))
def test_a_logged_body_is_the_canonical_dump_whatever_the_source_wrote(seed: int) -> None:
    rng = random.Random(seed)
    event = rng.choice(EVENTS)
    raw = event.to_json_dict()
    raw["occurred_at"] = event.occurred_at.isoformat()
    for name in _OPTIONAL.get(event.type, ()):
        if name not in raw and rng.random() < 0.5:
            raw[name] = None
    if raw.get("hashtags"):
        tags = raw["hashtags"]
        raw["hashtags"] = [rng.choice(("#", "##", "")) + t.upper() for t in tags if t.isascii()]
        raw["hashtags"] += rng.sample(tags, k=len(tags))
    assert parse_event(raw) == event
    body = event.logged_body(raw)
    canonical = event.to_json_dict()
    assert {k: v for k, v in body.items() if k != "occurred_at"} == {
        k: v for k, v in canonical.items() if k != "occurred_at"
    }
    assert parse_event(body) == event
