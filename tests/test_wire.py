"""Wire records: every valid event passes the worker's shape check, malformed ones do not,
and the publisher's fast dumps equal pydantic's."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
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


# What a faulty producer could put in a field: separators, controls, characters that are
# not printable beyond ASCII (line separator, NEL, a format character), and some that are.
_ODD = ["\x1f", "\x1e", "\n", "\x7f", "\t", "\x00", "\u2028", "\x85", "\U000e0001", "é", "中", " "]


def _mangled(rng: random.Random, record: list[str]) -> Any:
    """``record`` spoiled in one of many ways, some of which leave it well formed."""
    bad: Any = list(record)
    field = rng.randrange(len(bad))
    how = rng.randrange(8)
    if how == 0 and field > 0:
        bad[field] = rng.choice(_FIELDS[record[0]][field - 1])
    elif how == 1:  # a character inserted somewhere
        at = rng.randrange(len(bad[field]) + 1)
        bad[field] = bad[field][:at] + rng.choice(_ODD) + bad[field][at:]
    elif how == 2 and field + 1 < len(bad):  # two fields run together by a separator
        bad[field : field + 2] = [bad[field] + rng.choice("\x1f\n\x1e") + bad[field + 1]]
    elif how == 3:  # a field split in two, or one dropped or added
        text = bad[field]
        bad[field : field + 1] = rng.choice([[text[:1], text[1:]], [], [text, text]])
    elif how == 4:
        bad[field] = rng.choice([7, None, ["x"], b"R"])
    elif how == 5:
        bad = rng.choice(["\x1f".join(record), tuple(record), dict.fromkeys(record, 1), None])
    elif how == 6:  # another kind's letter
        bad[0] = rng.choice(["R", "X", "P", "M", "D", "Q", "RX"])
    return bad


@settings(max_examples=500, deadline=None, database=None)
@given(seed=st.integers(0, 2**32))
def test_the_batch_check_agrees_with_the_check_of_each_record(seed: int) -> None:
    rng = random.Random(seed)
    batch: list[Any] = [wire.record_of(rng.choice(EVENTS)) for _ in range(rng.randrange(0, 12))]
    for at in rng.sample(range(len(batch)), k=min(len(batch), rng.choice([0, 0, 1, 1, 2]))):
        batch[at] = _mangled(rng, batch[at])
    expected = all(wire.problem(record) is None for record in batch)
    assert wire.all_well_formed(batch) == expected, batch


def test_the_batch_check_takes_every_record_of_the_real_data() -> None:
    records = [wire.record_of(event) for event in EVENTS]
    assert wire.all_well_formed(records)
    for at in (0, len(records) // 2, len(records) - 1):
        spoiled = list(records)
        spoiled[at] = [*records[at][:-1], records[at][-1] + "\x00"]
        assert not wire.all_well_formed(spoiled)


def test_the_batch_check_is_not_fooled_by_separators_inside_fields() -> None:
    gone = wire.record_of(next(e for e in EVENTS if e.type == "performance.retracted"))
    kind, *rest = gone
    cases = [
        # Each text below would read as well-formed records if a separator held in a
        # field were taken for one between fields or records.
        [[f"{kind}\x1f{rest[0]}", *rest[1:]]],
        [[*gone[:-1], f"{gone[-1]}\n{gone[0]}", *gone[1:]], gone],
        [[*gone[:-1], f"{gone[-1]}\n{gone[0]}\x1f{gone[1]}", *gone[2:]]],
    ]
    for batch in cases:
        assert any(wire.problem(record) is not None for record in batch), batch
        assert not wire.all_well_formed(batch), batch


def test_the_batch_check_takes_the_years_the_record_check_takes() -> None:
    played = wire.record_of(next(e for e in EVENTS if e.type == "performance.recorded"))
    for year in ("0000", "1000", "1899", "1900", "1999", "2000", "2099", "2100", "2101", "9999"):
        record = [*played[:6], f"{year}{played[6][4:]}", played[7]]
        assert wire.all_well_formed([record]) == (wire.problem(record) is None), year
        assert wire.all_well_formed([record]) == ("1900" <= year <= "2100"), year


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


@settings(max_examples=300, deadline=None, database=None)
@given(
    moment=st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 12, 31)),
    fraction=st.sampled_from(["", ".5", ".123456", ".123456789"]),
    zeros=st.sampled_from(["", "0", "000000"]),  # RFC 3339 sets no limit on the digits
    separator=st.sampled_from("Tt "),
    zone=st.sampled_from(["Z", "z", "+00:00", "-03:30"]),
)
def test_a_timestamp_reads_the_same_whichever_way_rfc_3339_lets_it_be_written(
    moment: dt.datetime, fraction: str, zeros: str, separator: str, zone: str
) -> None:
    padded = (fraction or ".") + zeros if zeros else fraction
    text = f"{moment:%Y-%m-%d}{separator}{moment:%H:%M:%S}{padded}{zone}"
    canonical = f"{moment:%Y-%m-%dT%H:%M:%S}{fraction}{zone.upper()}"
    parsed, expected = _timestamp(text), _timestamp(canonical)
    assert (parsed, parsed.nanos, parsed.utcoffset()) == (
        expected,
        expected.nanos,
        expected.utcoffset(),
    )
    assert parsed.rfc3339() == expected.rfc3339()


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
        raw["hashtags"] = [rng.choice(("##", "#", "")) + t.upper() for t in tags if t.isascii()]
        raw["hashtags"] += rng.sample(tags, k=len(tags))
    assert parse_event(raw) == event
    body = event.logged_body(raw)
    canonical = event.to_json_dict()
    assert {k: v for k, v in body.items() if k != "occurred_at"} == {
        k: v for k, v in canonical.items() if k != "occurred_at"
    }
    assert parse_event(body) == event


@pytest.mark.parametrize("fraction", [".0000000001", ".1234567891", ".123456789000001"])
def test_a_timestamp_finer_than_a_nanosecond_is_refused_by_name(fraction: str) -> None:
    with pytest.raises(ValueError, match="finer than a nanosecond: at most 9 digits"):
        _timestamp(f"2025-01-01T00:00:00{fraction}Z")


@pytest.mark.parametrize("fraction", [".1234567\u0663", ".\u0661", ".123456789\u0660"])
def test_a_fraction_with_digits_of_another_script_is_no_timestamp(fraction: str) -> None:
    with pytest.raises(ValueError, match="must be an RFC 3339 timestamp"):
        _timestamp(f"2025-01-01T00:00:00{fraction}Z")
