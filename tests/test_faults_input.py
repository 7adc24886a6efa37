"""Poison jobs and bad input: rejected with a reason that names the field, never half applied.

The property-based part fuzzes ``POST /events`` and ``Publisher.publish_lines`` with
valid events, events with exactly one known defect, and garbage, on the in-process
``memory://`` backend: 10,000 cases in all.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from api_stub.app import create_app
from events.publisher import APPLY_BATCH, APPLY_RECORDS, Publisher
from events.schemas import EventError, parse_event
from events.wire import record_of
from stats.settings import get_settings
from tests.conftest import REAL_REDIS_URL, Backend
from tests.faults_support import TODAY, FaultEnv, Workers, statsworker_command
from worker import cli, context, publishing
from worker.connections import MEMORY_URL, Connections
from worker.runner import failed_jobs, retry_failed, run_worker

POST_CASES = 2_000
LINE_CASES = 8_000
"""Fuzz cases of ``POST /events`` and of ``publish_lines``: 10,000 in all."""

# -- poison jobs ---------------------------------------------------------------------

GOOD = {
    "type": "performance.recorded",
    "event_id": "good-1",
    "occurred_at": "2024-05-01T20:00:00Z",
    "vertical": "band",
    "performance_id": "p1",
    "show_id": "s1",
    "show_date": "2024-05-01",
    "song": "tune",
}
BAD_SLUG = {**GOOD, "event_id": "bad-slug", "performance_id": "p2", "vertical": "Not A Slug"}


def enqueue_raw(queue: Queue, payload: Any) -> str:
    """Put a job straight on the queue, bypassing validation, as a buggy producer might."""
    job = queue.enqueue_call(APPLY_BATCH, args=(payload,), result_ttl=0, failure_ttl=3600)
    return str(job.id)


@pytest.fixture
def conns(backend: Backend, tmp_path: Path) -> Connections:
    url = MEMORY_URL if backend.name == "fakeredis" else REAL_REDIS_URL
    env = FaultEnv(url, backend.prefix, backend.queue, f"sqlite:///{tmp_path / 'log.db'}")
    return Connections(env.settings(), backend.client, backend.raw)


def test_poison_jobs_fail_with_a_reason_and_the_worker_goes_on(conns: Connections) -> None:
    """Invalid events, a payload of the wrong shape: failed, reasons readable, the rest applied."""
    bad_events = enqueue_raw(conns.queue, [GOOD, BAD_SLUG, {"type": "nope"}])
    wrong_shape = enqueue_raw(conns.queue, "not a list of events")
    good = enqueue_raw(conns.queue, [{**GOOD, "event_id": "good-2", "performance_id": "p3"}])
    run_worker(conns, burst=True, with_scheduler=False)

    reasons = dict(failed_jobs(conns))
    assert set(reasons) == {bad_events, wrong_shape}
    assert "2 invalid event(s)" in reasons[bad_events]
    assert "vertical: must match" in reasons[bad_events]
    assert "type: unknown event type 'nope'" in reasons[bad_events]
    assert "must be a JSON object" in reasons[wrong_shape]
    assert good not in reasons
    # The valid events of the poison batch and the good job after it were applied.
    stats = conns.setlists.stats("band", TODAY)
    assert stats.total_performances == 2
    assert len(conns.queue) == 0
    # Bad data stays bad: a poison job is not retried on its own.
    assert Job.fetch(bad_events, connection=conns.raw, serializer=JSONSerializer).retries_left == 0

    assert retry_failed(conns) == 2
    assert failed_jobs(conns) == []
    assert set(conns.queue.get_job_ids()) == {bad_events, wrong_shape}
    run_worker(conns, burst=True, with_scheduler=False)
    assert dict(failed_jobs(conns)) == reasons
    assert conns.setlists.stats("band", TODAY).total_performances == 2


def test_malformed_wire_records_fail_with_a_reason_and_the_rest_is_applied(
    conns: Connections,
) -> None:
    """A records job from a faulty producer: its good records applied, the bad ones named."""
    good = record_of(parse_event(GOOD))
    bad_date = [*good[:6], "2024-13-01", good[7]]
    bad_date[2] = "p2"
    unprintable = [*good[:2], "p\x003", *good[3:]]
    short = good[:5]
    job = conns.queue.enqueue_call(
        APPLY_RECORDS,
        args=([good, bad_date, unprintable, short, "R", ["Q", "x"]],),
        result_ttl=0,
        failure_ttl=3600,
    )
    run_worker(conns, burst=True, with_scheduler=False)
    reasons = dict(failed_jobs(conns))
    assert set(reasons) == {job.id}
    assert "5 invalid event(s)" in reasons[job.id]
    for index in (1, 2, 3, 4, 5):
        assert f"record {index}:" in reasons[job.id]
    assert "record 0:" not in reasons[job.id]
    assert "unknown record kind 'Q'" in reasons[job.id]
    assert conns.setlists.stats("band", TODAY).total_performances == 1
    assert Job.fetch(job.id, connection=conns.raw, serializer=JSONSerializer).retries_left == 0


def test_a_creator_whose_sums_would_overflow_fails_at_once_naming_it(
    conns: Connections,
) -> None:
    """The refusal is for good: the job fails without retries, and says which creator."""
    big = {
        "type": "video.posted",
        "occurred_at": "2024-05-01T12:00:00Z",
        "creator": "bob",
        "date_posted": "2024-05-01",
        "views": 10**15,
        "likes": 0,
        "comments": 0,
        "shares": 0,
        "bookmarks": 0,
        "new_followers": 0,
    }
    records = [
        record_of(parse_event({**big, "event_id": f"b{i}", "video_id": f"v{i}"}))
        for i in range(9300)
    ]
    job = conns.queue.enqueue_call(
        APPLY_RECORDS,
        args=([record_of(parse_event(GOOD)), *records],),
        result_ttl=0,
        failure_ttl=3600,
        retry=Retry(max=3, interval=[60]),
    )
    run_worker(conns, burst=True, with_scheduler=False)
    reasons = dict(failed_jobs(conns))
    assert set(reasons) == {job.id}
    assert "creator 'bob'" in reasons[job.id] and "overflow" in reasons[job.id]
    assert Job.fetch(job.id, connection=conns.raw, serializer=JSONSerializer).retries_left == 0
    assert conns.setlists.stats("band", TODAY).total_performances == 1  # the rest applied


def run_cli(
    env: FaultEnv, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``statsworker ARGS`` in a child process with the test's settings."""
    return subprocess.run(
        [*statsworker_command(), *args],
        env=env.environ(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_publish_failed_and_retry_failed_beside_a_running_worker(
    real_backend: Backend, tmp_path: Path
) -> None:
    """``publish`` reports bad lines and applies good ones; ``failed`` and ``retry-failed``."""
    env = FaultEnv(
        REAL_REDIS_URL, real_backend.prefix, real_backend.queue, f"sqlite:///{tmp_path / 'l.db'}"
    )
    conns = env.connections()
    workers = Workers(env, tmp_path)
    workers.start(1)
    try:
        poison = enqueue_raw(conns.queue, [{**GOOD, "event_id": "px", "song": "Bad Song"}])
        lines = [
            json.dumps({**GOOD, "event_id": "a", "performance_id": "a"}),
            "{not json",
            json.dumps({**GOOD, "event_id": "b", "performance_id": "b", "show_date": "2024-02-30"}),
            "",
            json.dumps({**GOOD, "event_id": "c", "performance_id": "c", "extra": 1}),
            json.dumps({**GOOD, "event_id": "d", "performance_id": "d"}),
        ]
        source = tmp_path / "events.jsonl"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        published = run_cli(env, "publish", str(source))
        assert published.returncode == 1, published.stderr
        reported = [line for line in published.stderr.splitlines() if line.startswith("line ")]
        assert [r.split(":")[0] for r in reported] == ["line 2", "line 3", "line 5"]
        assert "show_date" in reported[1] and "extra: unknown field" in reported[2]
        assert "published 2 event(s)" in published.stderr

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = conns.setlists.verticals() and failed_jobs(conns)
            if done and conns.setlists.stats("band", TODAY).total_performances == 2:
                break
            workers.check_alive()
            time.sleep(0.1)
        assert conns.setlists.stats("band", TODAY).total_performances == 2  # a and d
        workers.check_alive()  # the poison job did not stop the worker

        listed = run_cli(env, "failed")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.startswith(f"{poison}\t")
        assert "song: must match" in listed.stdout
        assert "1 failed job(s)" in listed.stderr

        retried = run_cli(env, "retry-failed")
        assert retried.returncode == 0 and "re-enqueued 1 failed job(s)" in retried.stderr
        deadline = time.monotonic() + 60
        while conns.raw.hget(Job.key_for(poison), "status") != b"failed":
            assert time.monotonic() < deadline, "the retried job never ran again"
            time.sleep(0.1)
        assert [job_id for job_id, _ in failed_jobs(conns)] == [poison]
        workers.check_alive()
    finally:
        workers.stop()


# -- fuzzing ---------------------------------------------------------------------------

# Hypothesis draws what the property is about (which type, which defect) and a seed;
# the seed fills the fields from lists of valid edge cases and picks the field to
# break. A case stays cheap enough for 10,000 of them in well under a minute.


def _date(rng: random.Random) -> str:
    edges = ["1900-01-01", "2100-12-31", "2024-02-29", "2000-01-01"]
    if rng.random() < 0.3:
        return rng.choice(edges)
    return (dt.date(1900, 1, 1) + dt.timedelta(rng.randrange(73_414))).isoformat()


def _choice(*values: Any) -> Callable[[random.Random], Any]:
    return lambda rng: rng.choice(values)


COUNT_FIELDS = ("views", "likes", "comments", "shares", "bookmarks", "new_followers")
HASHTAGS = ("a", "#A", "Café", "x" * 100, "##z", "tour")
SLUG = _choice("a", "0", "band", "a.b_c-d", "x" * 128, "9lives", "the-band")
IDENT = _choice("p1", "é", "x" * 200, "a b", "ü🎸", "#1", "1", "id:with:colons")
COUNT = _choice(0, 1, 7, 123_456_789, 10**15 - 1, 10**15)
VALID_VALUES: dict[str, Callable[[random.Random], Any]] = {
    "event_id": IDENT,
    "occurred_at": _choice(
        "2024-05-01T20:00:00Z",
        "2024-05-01t20:00:00z",
        "2024-05-01 20:00:00+05:30",
        "1999-12-31T23:59:59.123456789-08:00",
        "2100-01-01T00:00:00.5Z",
        "1900-01-01T00:00:00+00:00",
    ),
    "vertical": SLUG,
    "song": SLUG,
    "creator": SLUG,
    "performance_id": IDENT,
    "show_id": IDENT,
    "video_id": IDENT,
    "show_date": _date,
    "date_posted": _date,
    **dict.fromkeys(COUNT_FIELDS, COUNT),
    "song_title": IDENT,
    "venue": _choice("", "The Venue", "x" * 200),
    "set": _choice("", "1", "encore", "x" * 50),
    "position": _choice(0, 3, 10**6),
    "hook": _choice("", "look!", "x" * 2000),
    "cta": _choice("", "follow"),
    "hashtags": lambda rng: rng.sample(HASHTAGS, rng.randrange(5)),
    "length_seconds": _choice(0, 1, 10**15, 0.5),
    "avg_watch_time": _choice(0, 2.5, 10**15),
    "watched_full_video_percentage": _choice(0, 99.9, 100),
}
COMMON = ("type", "event_id", "occurred_at")
FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "performance.recorded": (
        (*COMMON, "vertical", "performance_id", "show_id", "show_date", "song"),
        ("song_title", "venue", "set", "position"),
    ),
    "performance.retracted": ((*COMMON, "vertical", "performance_id"), ()),
    "video.posted": (
        (*COMMON, "creator", "video_id", "date_posted", *COUNT_FIELDS),
        (
            "hook",
            "cta",
            "hashtags",
            "length_seconds",
            "avg_watch_time",
            "watched_full_video_percentage",
        ),
    ),
    "video.metrics_updated": ((*COMMON, "creator", "video_id", *COUNT_FIELDS), ()),
    "video.deleted": ((*COMMON, "creator", "video_id"), ()),
}
"""Per event type: its required fields and its optional fields."""
KINDS = tuple(FIELDS)

_ID_BAD = ["", "x" * 201, "a\nb", "\x00", 5, None, ["x"], True]
_SLUG_BAD = ["Not A Slug", "", "-lead", "UPPER", "a" * 129, "é", 7, None, {"a": 1}]
_DATE_BAD = ["2024-02-30", "1899-12-31", "2101-01-01", "20240101", "2024-1-1", 20240101, None]
_STAMP_BAD = ["2024-01-01T00:00:00", "2024-01-01", "yesterday", "2024-13-01T00:00:00Z", 0, None]
_COUNT_BAD = [-1, 10**15 + 1, "1", 1.5, True, None, [], float("nan")]
BAD_VALUES: dict[str, list[Any]] = {
    "type": ["performance", "video.created", "", 5, None, ["video.posted"]],
    "event_id": _ID_BAD,
    "occurred_at": _STAMP_BAD,
    "vertical": _SLUG_BAD,
    "song": _SLUG_BAD,
    "creator": _SLUG_BAD,
    "performance_id": _ID_BAD,
    "show_id": _ID_BAD,
    "video_id": _ID_BAD,
    "show_date": _DATE_BAD,
    "date_posted": _DATE_BAD,
    **dict.fromkeys(COUNT_FIELDS, _COUNT_BAD),
    "song_title": ["", "x" * 201, "\t", 5],
    "venue": ["x" * 201, 5, []],
    "set": ["x" * 51, 5],
    "position": [-1, 10**6 + 1, "1", 1.5, True],
    "hook": [5, "x" * 2001],
    "cta": [5, []],
    "hashtags": ["music", [5], ["a b"], [""], ["#"], ["x"] * 101],
    "length_seconds": [-1, "x", 1e16, True, float("inf")],
    "avg_watch_time": [-0.5, "1"],
    "watched_full_video_percentage": [100.5, -1, "50"],
}
"""Per field, values it must refuse."""
UNKNOWN_FIELDS = ("extra", "Vertical", "song_id", "views_total", "id")
GARBAGE: list[Any] = [1, "text", None, [], [GOOD], True, 1.5]


def make_item(how: str, kind: str, seed: int) -> tuple[str, Any, str]:
    """``(how, value, field)``: a valid event, one with a defect in ``field``, or garbage."""
    rng = random.Random(seed)
    if how == "garbage":
        return how, rng.choice(GARBAGE), ""
    required, optional = FIELDS[kind]
    event: dict[str, Any] = {"type": kind}
    for name in required[1:]:
        event[name] = VALID_VALUES[name](rng)
    for name in optional:
        if rng.random() < 0.4:
            event[name] = VALID_VALUES[name](rng)
    if how == "valid":
        return how, event, ""
    if how == "drop":
        name = rng.choice(required)
        del event[name]
    elif how == "extra":
        name = rng.choice(UNKNOWN_FIELDS)
        event[name] = rng.choice([0, "x", None])
    else:
        name = rng.choice([*required, *optional])
        event[name] = rng.choice(BAD_VALUES[name])
    return "defect", event, name


ITEM_HOWS = ("valid", "valid", "drop", "extra", "bad", "bad", "garbage", "valid")


def _decode(n: int, hows: tuple[str, ...]) -> tuple[str, str, int]:
    """One drawn integer as (how, event type, seed): a single draw keeps a case cheap, and
    shrinking it towards 0 gives the simplest case (a valid event of the first type)."""
    return hows[n % 8], KINDS[(n >> 3) % len(KINDS)], n >> 6


CASE_INTS = st.integers(0, 2**48)
ITEMS = CASE_INTS.map(lambda n: make_item(*_decode(n, ITEM_HOWS)))


@pytest.fixture(scope="module")
def memory_conns() -> Iterator[Connections]:
    tag = f"tfuzz{uuid.uuid4().hex[:8]}"
    env = FaultEnv(MEMORY_URL, tag, f"{tag}-q", "sqlite://")
    yield env.connections()


@pytest.fixture(scope="module")
def api(memory_conns: Connections) -> TestClient:
    return TestClient(create_app(memory_conns), raise_server_exceptions=False)


def take_queued(conns: Connections) -> list[list[str]]:
    """The wire records of every queued job, in queue order; the queue is left empty."""
    events: list[list[str]] = []
    ids = [i.decode() for i in conns.raw.lrange(conns.queue.key, 0, -1)]
    for job_id in ids:
        job = Job.fetch(job_id, connection=conns.raw, serializer=JSONSerializer)
        events.extend(job.args[0])
    if ids:
        conns.raw.delete(conns.queue.key, *(Job.key_for(i) for i in ids))
    return events


def canonical(obj: dict[str, Any]) -> list[str]:
    """The event as it travels on the queue once validated: its wire record."""
    return record_of(parse_event(obj))


def names_field(reason: str, field: str) -> bool:
    """Whether the rejection reason names ``field`` as the place of the defect."""
    return (
        reason.startswith(f"{field}:")
        or f"; {field}:" in reason
        or (
            reason.startswith(f"{field}.")  # an item of a list field, e.g. hashtags.0
        )
    )


@settings(
    max_examples=POST_CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(items=st.lists(ITEMS, max_size=5), single=st.booleans())
def test_fuzz_post_events(
    memory_conns: Connections, api: TestClient, items: list[Any], single: bool
) -> None:
    """Never a 5xx; accepted events all queued, rejected ones never; each reason names its field."""
    objects = [obj for _, obj, _ in items]
    lone = single and len(objects) == 1 and isinstance(objects[0], dict)
    body = objects[0] if lone else objects  # one event may come without the array
    response = api.post("/events", content=json.dumps(body))
    assert response.status_code < 500, response.text
    answer = response.json()
    valid = [obj for how, obj, _ in items if how == "valid"]
    assert response.status_code == (202 if valid or not items else 422)
    assert answer["accepted"] == [obj["event_id"] for obj in valid]
    rejected = {r["index"]: r["error"] for r in answer["rejected"]}
    assert set(rejected) == {i for i, (kind, _, _) in enumerate(items) if kind != "valid"}
    for index, (kind, _, field) in enumerate(items):
        if kind == "defect":
            assert names_field(rejected[index], field), (field, rejected[index])
    assert take_queued(memory_conns) == [canonical(obj) for obj in valid]


JUNK = (
    "{",
    "}",
    "[",
    "]",
    '"',
    ":",
    ",",
    " ",
    "\t",
    "\x00",
    "a",
    "1",
    "é",
    "\u2028",
    "\x1c",
    "null",
    "NaN",
    "\\",
    "-",
    "e",
    "🎸",
    '"type"',
    '"event_id"',
)


def make_line(how: str, kind: str, seed: int) -> tuple[str, str | bytes, str]:
    """A JSON Lines line: an item as JSON, a line of junk text, or junk bytes."""
    if how == "text":
        rng = random.Random(seed)
        return how, "".join(rng.choice(JUNK) for _ in range(rng.randrange(12))), ""
    if how == "bytes":
        return how, random.Random(seed).randbytes(seed % 13).replace(b"\n", b""), ""
    how, value, field = make_item(how, kind, seed)
    return how, json.dumps(value), field


class RecordingQueue:
    """Stands in for the queue in the line fuzz: keeps the events of every job enqueued.

    The line fuzz is about reading, validating and reporting lines; the way to Redis is
    the same as in the ``POST /events`` fuzz above, and leaving it (and the event log,
    covered by ``tests/test_eventlog.py``) out makes a case several times cheaper.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def enqueue_many(self, jobs: list[Any]) -> None:
        for job in jobs:
            self.events.extend(job.args[0])


LINE_HOWS = ("valid", "valid", "drop", "extra", "bad", "garbage", "text", "bytes")
LINES = CASE_INTS.map(lambda n: make_line(*_decode(n, LINE_HOWS)))


@settings(
    max_examples=LINE_CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(lines=st.lists(LINES, max_size=8))
def test_fuzz_publish_lines(lines: list[Any]) -> None:
    """Bad lines reported as ``line N: reason`` naming the field; every good line queued."""
    queue = RecordingQueue()
    report = Publisher(queue, batch_size=3).publish_lines(line for _, line, _ in lines)  # type: ignore[arg-type]
    expected_good: list[dict[str, Any]] = []
    expected_bad: dict[int, str] = {}
    for number, (kind, line, field) in enumerate(lines, start=1):
        if kind == "valid":
            expected_good.append(canonical(json.loads(line)))
        elif kind == "defect":
            expected_bad[number] = field
        elif line.strip():
            try:  # garbage may happen to be a valid event
                expected_good.append(canonical(json.loads(line)))
            except ValueError:
                expected_bad[number] = ""
    errors = {int(str(e).split(":")[0].removeprefix("line ")): e for e in report.rejected}
    assert set(errors) == set(expected_bad)
    for number, field in expected_bad.items():
        assert str(errors[number]).startswith(f"line {number}: ")
        if field:
            assert names_field(errors[number].reason, field), (field, errors[number].reason)
    assert report.accepted == len(expected_good)
    assert queue.events == expected_good
    assert report.jobs == -(-len(expected_good) // 3)


def main_afresh(argv: list[str]) -> int:
    """``cli.main`` on settings read again from the environment, as a new process reads
    them (and cleared after, for the tests that follow)."""
    get_settings.cache_clear()
    try:
        return cli.main(argv)
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("STATSWORKER_REDIS_URL", "notaurl", "must start with one of redis://"),
        (
            "STATSWORKER_REDIS_URL",
            "http://u:s3cret@h",
            "redis://, rediss://, unix://, memory://: 'http://u:***@h'",
        ),
        ("STATSWORKER_DATABASE_URL", "pg://u:s3cret@h:x/db", "'pg://u:***@h:x/db'"),
        ("STATSWORKER_DATABASE_URL", "garbage", "not a database URL"),
        ("STATSWORKER_TODAY", "0", "must be a date written YYYY-MM-DD"),
        ("STATSWORKER_TODAY", "1719705600", "must be a date written YYYY-MM-DD"),
        (
            "STATSWORKER_TODAY",
            "\u0662\u0660\u0662\u0664-\u0660\u0661-\u0660\u0661",
            "written YYYY-MM-DD",
        ),
        ("STATSWORKER_TODAY", "2024-02-30", "STATSWORKER_TODAY"),
        ("STATSWORKER_BATCH_SIZE", "0", "greater than or equal to 1"),
        # redis-py would read these as database 0, or fail later with a traceback.
        ("STATSWORKER_REDIS_URL", "redis://127.0.0.1:6379/abc", "database must be a number"),
        ("STATSWORKER_REDIS_URL", "redis://127.0.0.1:port/0", "port must be a number"),
        (
            "STATSWORKER_REDIS_URL",
            "redis://:s3cret/x@redis:6379/0",  # as docker-compose.yml writes a password in
            "a password holding '/', '#' or '?' must be percent-encoded in the URL",
        ),
        (  # read as port 12 and database 's3cret@redis...': neither may be shown
            "STATSWORKER_REDIS_URL",
            "redis://:12/s3cret@redis:6379/0",
            "no host before the '@' (a password holding '/', '#' or '?' must be",
        ),
        ("STATSWORKER_REDIS_URL", "redis://:12#s3cret@redis:6379/0", "no host before the '@'"),
        ("STATSWORKER_REDIS_URL", "redis://u:12#s3cret@redis:6379/0", "an '@' after a '#'"),
        (
            "STATSWORKER_REDIS_URL",
            "redis://user:12/s3cret@redis:6379/0",
            "the database must be a number (a password holding",
        ),
        (
            "STATSWORKER_DATABASE_URL",
            "postgresql+psycopg://u:s3cret@x@postgres:5432/db",
            "the host holds '@': a password holding '@' must be percent-encoded in the URL",
        ),
        ("STATSWORKER_DATABASE_URL", "foo://x/y", "SQLAlchemy knows no database 'foo'"),
        ("STATSWORKER_DATABASE_URL", "mysql://u@h/db", "driver of 'mysql' is not installed"),
        # Options redis-py reads only when it makes the first client.
        ("STATSWORKER_REDIS_URL", "redis://h:6379/0?db=abc", "Invalid value for 'db'"),
        ("STATSWORKER_REDIS_URL", "redis://h/0?socket_timeout=x", "'socket_timeout'"),
        ("STATSWORKER_QUEUE", "", "at least 1 character"),
    ],
)
def test_a_bad_setting_is_named_with_exit_code_2_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    reason: str,
) -> None:
    monkeypatch.setenv(variable, value)
    assert main_afresh(["failed"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"statsworker: bad configuration: {variable}: "), err
    assert reason in err and "Traceback" not in err
    assert "s3cret" not in err
    assert "Value error" not in err  # pydantic's wording, not the user's concern


@pytest.mark.parametrize(
    ("variable", "value", "command", "reason"),
    [
        (
            "STATSWORKER_REDIS_URL",
            REAL_REDIS_URL.rsplit("/", 1)[0] + "/99",
            ["failed"],
            "refused the database: DB index is out of range",
        ),
        (
            "STATSWORKER_DATABASE_URL",
            "sqlite:////nonexistent-dir/events.db",
            ["publish", "EVENTS"],
            "cannot open the event log at sqlite:////nonexistent-dir/events.db:",
        ),
        (
            "STATSWORKER_DATABASE_URL",
            "sqlite:///TMP/garbage.db",  # a file that is not a database
            ["publish", "EVENTS"],
            "garbage.db: file is not a database",
        ),
    ],
)
def test_a_server_that_cannot_be_used_ends_the_command_with_one_line_and_exit_code_3(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    variable: str,
    value: str,
    command: list[str],
    reason: str,
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(_event(0)) + "\n")
    monkeypatch.setenv("STATSWORKER_REDIS_URL", REAL_REDIS_URL)
    monkeypatch.setenv("STATSWORKER_DATABASE_URL", f"sqlite:///{tmp_path / 'log.db'}")
    (tmp_path / "garbage.db").write_text("not a database\n")
    monkeypatch.setenv(variable, value.replace("TMP", str(tmp_path)))
    monkeypatch.setattr(context, "_current", None)
    code = main_afresh([str(events) if part == "EVENTS" else part for part in command])
    err = capsys.readouterr().err
    assert code == 3, err
    assert reason in err and "Traceback" not in err


def test_a_password_in_a_redis_url_is_not_printed() -> None:
    exc = redis.ConnectionError("Error 111 connecting to h:6379. Connection refused.")
    told = cli.unreachable(exc, "redis://user:s3cret@h:6379/2", "sqlite://")
    assert told == (
        "cannot reach Redis at redis://user:***@h:6379/2: "
        "Error 111 connecting to h:6379. Connection refused."
    )
    assert cli.unreachable(redis.ResponseError("WRONGTYPE"), "redis://h", "sqlite://") is None


def test_a_log_behind_its_migrations_is_told_once_not_inside_another_sentence() -> None:
    from worker.migrations import SchemaNotReady

    reason = "the event log at sqlite:///x.db is at revision none: run `statsworker migrate`"
    assert cli.unreachable(SchemaNotReady(reason), "redis://h", "sqlite:///x.db") == reason


@pytest.mark.parametrize(
    ("exc", "told"),
    [
        (
            redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
            "Redis at redis://:***@h:6379/0 refuses writes: command not allowed when used",
        ),
        (
            redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
            "Redis at redis://:***@h:6379/0 refuses writes: You can't write against",
        ),
        (
            redis.ResponseError("MISCONF Redis is configured to save RDB snapshots, but..."),
            "Redis at redis://:***@h:6379/0 refuses writes: MISCONF",
        ),
        (
            redis.exceptions.NoPermissionError("this user has no permissions to run 'evalsha'"),
            "Redis at redis://:***@h:6379/0 refused a command to this user: this user has no",
        ),
        (
            redis.exceptions.InvalidResponse('Protocol error, got "H" as reply type byte'),
            "the server at redis://:***@h:6379/0 does not answer as Redis does: Protocol error",
        ),
    ],
)
def test_a_redis_that_refuses_or_is_no_redis_is_told_in_one_line(exc: Exception, told: str) -> None:
    said = cli.unreachable(exc, "redis://:s3cret@h:6379/0", "sqlite://")
    assert said is not None and said.startswith(told), said
    assert isinstance(exc, cli.UNREACHABLE)


def test_a_server_that_is_not_redis_ends_a_command_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An HTTP server where Redis was expected (a wrong port) gave a traceback, exit 1."""
    import socketserver
    import threading

    class Http(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(4096)
            self.request.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Http) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        monkeypatch.setenv("STATSWORKER_REDIS_URL", f"redis://127.0.0.1:{port}/0")
        monkeypatch.setenv("STATSWORKER_DATABASE_URL", f"sqlite:///{tmp_path / 'log.db'}")
        monkeypatch.setattr(context, "_current", None)
        try:
            code = main_afresh(["failed"])
        finally:
            server.shutdown()
    err = capsys.readouterr().err
    assert code == 3, err
    assert f"the server at redis://127.0.0.1:{port}/0 does not answer as Redis does" in err
    assert "Traceback" not in err


def _event(i: int) -> dict[str, Any]:
    return {
        "type": "performance.recorded",
        "event_id": f"e-{i}",
        "occurred_at": "2024-01-01T00:00:00Z",
        "vertical": "band",
        "performance_id": f"p{i}",
        "show_id": "s1",
        "show_date": "2024-01-01",
        "song": "a",
    }


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_a_line_that_is_not_utf8_is_rejected_and_the_rest_published(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str
) -> None:
    good = [json.dumps(_event(i)).encode() for i in range(3)]
    inside = json.dumps(_event(3)).replace('"s1"', '"s1-X"').encode().replace(b"X", b"\xff")
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([good[0], b"\xff\xfe not json", good[1], inside, good[2]]) + b"\n")
    queue = _KeepingQueue()
    publisher = Publisher(queue, batch_size=10)  # type: ignore[arg-type]
    monkeypatch.setattr(publishing, "make_publisher", lambda conns: publisher)
    monkeypatch.setattr(cli, "_connections", lambda: None)
    if source == "stdin":  # decoded strictly, as a locale may have it, until publish says not
        strict = io.TextIOWrapper(io.BytesIO(path.read_bytes()), encoding="utf-8", errors="strict")
        monkeypatch.setattr(sys, "stdin", strict)
    assert cli.main(["publish", "-" if source == "stdin" else str(path)]) == 1
    err = capsys.readouterr().err
    assert "line 2: not valid JSON" in err
    assert "line 4: show_id:" in err
    assert "published 3 event(s) in 1 job(s); 2 rejected" in err
    assert len(queue.jobs) == 1


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_only_a_line_feed_ends_a_line_a_lone_carriage_return_is_whitespace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str
) -> None:
    spaced = json.dumps(_event(0)).replace(", ", ",\r", 1).encode()  # valid JSON
    path = tmp_path / "cr.jsonl"
    lines = [
        spaced,
        json.dumps(_event(1)).encode() + b"\r",
        b"{bad",
        json.dumps(_event(2)).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")  # line 2 ends with CRLF
    queue = _KeepingQueue()
    publisher = Publisher(queue, batch_size=10)  # type: ignore[arg-type]
    monkeypatch.setattr(publishing, "make_publisher", lambda conns: publisher)
    monkeypatch.setattr(cli, "_connections", lambda: None)
    if source == "stdin":
        stdin = io.TextIOWrapper(io.BytesIO(path.read_bytes()), encoding="utf-8")
        monkeypatch.setattr(sys, "stdin", stdin)
    assert cli.main(["publish", "-" if source == "stdin" else str(path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("line 3: not valid JSON"), err
    assert "published 3 event(s) in 1 job(s); 1 rejected" in err


def test_a_first_line_of_only_a_byte_order_mark_is_blank() -> None:
    lines = ["\ufeff", json.dumps(_event(0)), "\ufeff   "]
    report = Publisher(_KeepingQueue(), batch_size=10).publish_lines(lines)  # type: ignore[arg-type]
    assert report.accepted == 1
    # Only the first line: a mark elsewhere is a bad line, named as such.
    assert [str(e).split(":")[0] for e in report.rejected] == ["line 3"]


def test_a_port_outside_0_to_65535_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["api", "--port", "99999"])
    assert exited.value.code == 2
    assert "'99999' is not a port (0-65535)" in capsys.readouterr().err


@pytest.mark.parametrize(("host", "shown"), [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")])
def test_the_api_says_where_it_serves(
    host: str, shown: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once bound: port 0 is told as the port the system picked."""
    import uvicorn

    ports: list[int] = []

    def serve(self: uvicorn.Server, sockets: list[Any]) -> None:
        ports.extend(s.getsockname()[1] for s in sockets)
        for sock in sockets:
            sock.close()

    monkeypatch.setattr(uvicorn.Server, "run", serve)
    monkeypatch.setenv("STATSWORKER_REDIS_URL", "memory://")
    monkeypatch.setattr(context, "_current", None)
    assert main_afresh(["api", "--host", host, "--port", "0"]) == 0
    assert len(ports) == 1 and ports[0] > 0
    told = capsys.readouterr().err
    assert f"statsworker api: serving on http://{shown}:{ports[0]}" in told, told


class _KeepingQueue:
    """Takes jobs and keeps them."""

    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def enqueue_many(self, jobs: list[Any]) -> None:
        self.jobs.extend(jobs)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_byte_order_mark_before_the_first_line_is_not_part_of_it(as_bytes: bool) -> None:
    events = [_event(i) for i in range(2)]
    text = "\ufeff" + "\n".join(json.dumps(e) for e in events) + "\n"
    lines: list[Any] = text.encode().splitlines() if as_bytes else text.splitlines()
    queue = _KeepingQueue()
    report = Publisher(queue, batch_size=10).publish_lines(lines)  # type: ignore[arg-type]
    assert report.accepted == 2 and report.rejected == []
    if not as_bytes:  # (Python's json takes a BOM before any line given as bytes)
        # Only before the first line: elsewhere it is a bad line, named as such.
        later = [lines[0], "\ufeff" + lines[1]]
        report = Publisher(_KeepingQueue(), batch_size=10).publish_lines(later)  # type: ignore[arg-type]
        assert report.accepted == 1
        assert [str(e).split(":")[0] for e in report.rejected] == ["line 2"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"length_seconds": True}, "length_seconds: Input should be a number"),
        ({"length_seconds": "12"}, "length_seconds: Input should be a number"),
        ({"x" * 100_000: 1}, f"{'x' * 60}...: unknown field"),
        ({"video_id": "v\udcff"}, "video_id: not UTF-8 text"),  # a JSON Lines byte not UTF-8
    ],
)
def test_a_rejection_names_the_field_once_briefly_in_the_user_s_terms(
    change: dict[str, Any], reason: str
) -> None:
    body = {
        "type": "video.posted",
        "event_id": "e1",
        "occurred_at": "2024-01-01T00:00:00Z",
        "creator": "ana",
        "video_id": "v",
        "date_posted": "2024-01-01",
        **dict.fromkeys(("views", "likes", "comments", "shares", "bookmarks", "new_followers"), 1),
    }
    with pytest.raises(EventError) as raised:
        parse_event({**body, **change}, "line 3")
    assert str(raised.value) == f"line 3: {reason}"


def test_a_database_user_without_rights_on_the_schema_is_told_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`migrate` as a role that may not create tables gave a traceback, exit 1."""
    import sqlalchemy as sa

    from tests.log_support import POSTGRES_URL

    name = f"t_norights_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        conn.execute(sa.text(f'CREATE ROLE "{name}" LOGIN'))
        conn.execute(sa.text(f'GRANT USAGE ON SCHEMA "{name}" TO "{name}"'))  # no CREATE
    url = sa.engine.make_url(POSTGRES_URL).set(username=name)
    try:
        monkeypatch.setenv(
            "STATSWORKER_DATABASE_URL",
            url.render_as_string(hide_password=False) + f"?options=-csearch_path%3D{name}",
        )
        monkeypatch.setenv("STATSWORKER_REDIS_URL", REAL_REDIS_URL)
        monkeypatch.setattr(context, "_current", None)
        code = main_afresh(["migrate"])
        err = capsys.readouterr().err
        assert code == 3, err
        assert "refused this user: permission denied for schema" in err, err
        assert "Traceback" not in err
    finally:
        from worker import eventlog

        eventlog.close_all()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
            conn.execute(sa.text(f'DROP ROLE "{name}"'))
        admin.dispose()


def test_the_api_serves_with_clients_that_give_a_hung_redis_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`statsworker api` waits seconds for a reply, and a worker two minutes."""
    import uvicorn

    from worker import connections

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: [s.close() for s in sockets])
    monkeypatch.setenv("STATSWORKER_REDIS_URL", REAL_REDIS_URL)
    monkeypatch.setattr(context, "_current", None)
    assert main_afresh(["api", "--port", "0"]) == 0
    capsys.readouterr()
    served = context.get()
    for client in (served.state, served.raw):
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == connections.SERVE_REPLY_TIMEOUT_SECONDS
        assert kwargs["retry"].get_retries() == connections.CLIENT_RETRIES
        assert redis.TimeoutError not in kwargs["retry"]._supported_errors
    worker_state, _raw = connections.make_clients(REAL_REDIS_URL)
    kwargs = worker_state.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == connections.SOCKET_TIMEOUT_SECONDS
    assert redis.TimeoutError in kwargs["retry"]._supported_errors
