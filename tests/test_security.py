"""Security: ingest token, body limit, slugs checked before any key, no pickle, Redis URLs."""

from __future__ import annotations

import ast
import json
import socket
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from rq.job import Job
from rq.serializers import JSONSerializer

import stats.keys
from api_stub import app as app_module
from api_stub.app import create_app
from events.schemas import EventError, parse_event, parse_json_line
from events.wire import record_of
from stats.settings import Settings
from tests.faults_support import TODAY, FaultEnv, free_port
from worker.connections import MEMORY_URL, Connections, TLSConnection, make_clients
from worker.publishing import make_publisher
from worker.runner import make_worker, run_worker

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("events", "stats", "worker", "api_stub")
TOKEN = "s3cret-token"

EVENT = {
    "type": "performance.recorded",
    "event_id": "e1",
    "occurred_at": "2024-05-01T20:00:00Z",
    "vertical": "band",
    "performance_id": "p1",
    "show_id": "s1",
    "show_date": "2024-05-01",
    "song": "tune",
}


def memory_conns(tmp_path: Path, **changes: Any) -> Connections:
    tag = f"tsec{uuid.uuid4().hex[:8]}"
    env = FaultEnv(MEMORY_URL, tag, f"{tag}-q", f"sqlite:///{tmp_path / 'log.db'}")
    return env.connections(**changes)


# -- POST /events --------------------------------------------------------------------


def test_post_events_requires_the_bearer_token_when_one_is_set(tmp_path: Path) -> None:
    conns = memory_conns(tmp_path, ingest_token=TOKEN)
    client = TestClient(create_app(conns))
    body = json.dumps([EVENT])
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN + "x"},
        {"Authorization": TOKEN},
        {"Authorization": "Basic " + TOKEN},
        {"Authorization": "Bearer"},
    ):
        answer = client.post("/events", content=body, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"] == "Bearer"
    assert len(conns.queue) == 0  # nothing was taken in
    answer = client.post("/events", content=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 202, answer.text
    assert len(conns.queue) == 1
    # Reads stay open: the token guards writes.
    assert client.get("/analytics/stats/band").status_code == 404


def test_post_events_is_open_without_a_token(tmp_path: Path) -> None:
    client = TestClient(create_app(memory_conns(tmp_path)))
    assert client.post("/events", content=json.dumps(EVENT)).status_code == 202


def test_request_bodies_over_the_limit_are_refused_unread(tmp_path: Path) -> None:
    conns = memory_conns(tmp_path, max_body_bytes=1024)
    client = TestClient(create_app(conns))
    events = [{**EVENT, "event_id": f"e{i}", "performance_id": f"p{i}"} for i in range(20)]
    big = json.dumps(events).encode()
    assert len(big) > 1024
    assert client.post("/events", content=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for start in range(0, len(big), 100):
            yield big[start : start + 100]

    assert client.post("/events", content=chunks()).status_code == 413
    assert len(conns.queue) == 0
    small = json.dumps(events[:2]).encode()
    assert client.post("/events", content=small).status_code == 202


def test_more_events_than_a_request_may_carry_are_refused_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "MAX_EVENTS_PER_REQUEST", 3)
    conns = memory_conns(tmp_path)
    client = TestClient(create_app(conns))
    events = [{**EVENT, "event_id": f"e{i}", "performance_id": f"p{i}"} for i in range(4)]
    answer = client.post("/events", content=json.dumps(events))
    assert answer.status_code == 413, answer.text
    assert answer.json() == {"detail": "4 events in one request: at most 3; send them in several"}
    assert len(conns.queue) == 0
    assert client.post("/events", content=json.dumps(events[:3])).status_code == 202


def test_an_event_id_json_cannot_encode_is_rejected_with_an_answer(tmp_path: Path) -> None:
    """JSON's escape of a lone surrogate decodes to a str that UTF-8 cannot carry: the
    rejection names it by its escape instead of failing the whole answer."""
    conns = memory_conns(tmp_path)
    client = TestClient(create_app(conns))
    bad = json.dumps({**EVENT, "event_id": "\ud800x", "performance_id": "p2"})
    assert '"\\ud800x"' in bad  # the JSON escape
    answer = client.post("/events", content=f"[{json.dumps(EVENT)}, {bad}]")
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == ["e1"]
    (rejection,) = answer.json()["rejected"]
    assert rejection["index"] == 1 and rejection["event_id"] == "\\ud800x", rejection
    assert rejection["error"].startswith("event_id"), rejection


def test_a_body_is_decoded_and_validated_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Megabytes of JSON decoded on the loop would hold up every other request."""
    import asyncio

    on_loop: list[bool] = []
    real = app_module.parse_event

    def parse(obj: Any, where: str | None = None) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # no loop runs in this thread
            on_loop.append(False)
        return real(obj, where)

    monkeypatch.setattr(app_module, "parse_event", parse)
    client = TestClient(create_app(memory_conns(tmp_path)))
    assert client.post("/events", content=json.dumps([EVENT, EVENT])).status_code == 202
    assert on_loop == [False, False]


def test_a_compressed_body_is_refused_by_name(tmp_path: Path) -> None:
    conns = memory_conns(tmp_path)
    client = TestClient(create_app(conns))
    body = zlib.compress(json.dumps([EVENT]).encode())
    answer = client.post("/events", content=body, headers={"Content-Encoding": "deflate"})
    assert answer.status_code == 415, answer.text
    assert answer.json() == {
        "detail": "Content-Encoding 'deflate' is not supported: send plain JSON"
    }
    assert len(conns.queue) == 0
    for coding in ("identity", "", "identity, identity", "Identity"):
        plain = {"Content-Encoding": coding, "Content-Type": "text/plain"}  # curl -d's too
        answer = client.post("/events", content=json.dumps([EVENT]), headers=plain)
        assert answer.status_code == 202, (coding, answer.text)
    both = {"Content-Encoding": "identity, gzip"}
    assert client.post("/events", content=body, headers=both).status_code == 415
    lines = [("Content-Encoding", "identity"), ("Content-Encoding", "gzip")]  # two header lines
    assert client.post("/events", content=body, headers=lines).status_code == 415


@pytest.mark.parametrize(
    ("value", "told"),
    [
        ("NaN", "NaN is not a JSON number"),
        ("Infinity", "Infinity is not a JSON number"),
        ("-Infinity", "-Infinity is not a JSON number"),
        ("9" * 5000, "an integer of 5,000 characters is out of range"),  # Python's limit: 4,300
    ],
)
def test_a_number_python_cannot_take_rejects_only_its_event(
    tmp_path: Path, value: str, told: str
) -> None:
    """NaN and Infinity are not JSON, though Python's decoder reads them, and Python
    converts no integer of more than 4,300 digits: the event holding one is rejected,
    naming the field, and the valid event beside it is taken."""
    conns = memory_conns(tmp_path)
    client = TestClient(create_app(conns))
    bad = json.dumps({**EVENT, "event_id": "e2", "position": 1})
    bad = bad.replace('"position": 1', f'"position": {value}')
    answer = client.post("/events", content=f"[{json.dumps(EVENT)}, {bad}]")
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == ["e1"]
    assert answer.json()["rejected"] == [
        {"index": 1, "event_id": "e2", "error": f"position: {told}"}
    ]
    assert len(conns.queue) == 1
    with pytest.raises(EventError, match=f"^line 3: position: {told}$"):
        parse_event(parse_json_line(bad, 3), "line 3")


# -- reads: parameters never reach a key unvalidated ------------------------------------

BAD_SLUGS = [
    "Band",
    "band%0A",
    "band%00",
    "%7Bv%3Aother%7D",  # {v:other}: a hash tag
    "a%7Db",
    "band*",
    "band%3Fx",
    "-band",
    ".band",
    "b%20and",
    "b%C3%A9",
    "x" * 129,
    "..",
    "band%3Ametrics",
]
READS = [
    "/analytics/gaps/{s}",
    "/analytics/velocity/{s}",
    "/analytics/trends/{s}",
    "/analytics/stats/{s}",
    "/analytics/bustouts/{s}",
    "/analytics/debut-songs/{s}",
    "/analytics/songs/{s}/tune",
    "/analytics/songs/band/{s}",
    "/analytics/insights/{s}/time-series",
    "/analytics/insights/{s}/overview",
    "/analytics/insights/{s}/hashtags",
    "/analytics/insights/{s}/posting-time",
]
BAD_PARAMS = [
    "/analytics/gaps/band?limit=0",
    "/analytics/gaps/band?limit=201",
    "/analytics/gaps/band?min_plays=-1",
    "/analytics/gaps/band?as_of=2024-02-30",
    "/analytics/stats/band?as_of=tomorrow",
    "/analytics/gaps/band?as_of=1899-12-31",
    "/analytics/trends/band?period=year",
    "/analytics/bustouts/band?days=0",
    "/analytics/bustouts/band?gap_threshold=-1",
    "/analytics/debut-songs/band?days=abc",
    "/analytics/insights/bob/time-series?start=yesterday",
    # Dates are YYYY-MM-DD only: pydantic alone reads these as some date.
    "/analytics/stats/band?as_of=0",
    "/analytics/stats/band?as_of=1719705600",
    "/analytics/songs/band/a?as_of=-86400",
    "/analytics/gaps/band?as_of=2024-06-30T00:00:00Z",
    "/analytics/velocity/band?as_of=20240630",
    "/analytics/insights/bob/time-series?start=0",
    "/analytics/insights/bob/time-series?end=1704153600",
    "/analytics/bustouts/band?gap_shows_threshold=x",
    "/analytics/insights/bob/hashtags?limit=1000",
    # Whole numbers are digits only: pydantic alone reads these as numbers.
    "/analytics/gaps/band?limit=%2B5",
    "/analytics/gaps/band?limit=%205",
    "/analytics/velocity/band?limit=5%20",
    "/analytics/gaps/band?min_plays=5.0",
    "/analytics/gaps/band?limit=1_0",
    "/analytics/bustouts/band?gap_shows_threshold=1_0",
    "/analytics/bustouts/band?gap_threshold=1e2",
    "/analytics/debut-songs/band?days=%EF%BC%95",
    "/analytics/insights/bob/hashtags?limit=0x10",
]


@pytest.fixture
def keys_built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every call of a key builder of ``stats.keys`` during the test."""
    built: list[tuple[str, ...]] = []
    for name in ("vertical_keys", "creator_keys", "verticals_key", "creators_key"):
        original = getattr(stats.keys, name)

        def record(*args: str, _original: Any = original, _name: str = name) -> Any:
            built.append((_name, *args))
            return _original(*args)

        monkeypatch.setattr(stats.keys, name, record)
    return built


def unreachable_conns(tmp_path: Path) -> Connections:
    """Connections whose Redis does not exist: any command would fail the request."""
    port = free_port()
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        database_url=f"sqlite:///{tmp_path / 'log.db'}",
        today=TODAY,
    )
    client = redis.Redis(port=port, decode_responses=True, socket_connect_timeout=0.2)
    return Connections(settings, client, redis.Redis(port=port, socket_connect_timeout=0.2))


def test_bad_slugs_and_parameters_are_refused_before_any_key_is_built(
    tmp_path: Path, keys_built: list[tuple[str, ...]]
) -> None:
    client = TestClient(create_app(unreachable_conns(tmp_path)), raise_server_exceptions=False)
    for read in READS:
        for slug in BAD_SLUGS:
            url = read.format(s=slug)
            answer = client.get(url)
            assert answer.status_code in (404, 422), url
            if answer.status_code == 404:  # a path that matches no route at all ("..", "a/b")
                assert answer.json() == {"detail": "Not Found"}, url
    for url in BAD_PARAMS:
        assert client.get(url).status_code == 422, url
    assert keys_built == []
    # The guard is real: a good request does build keys (and fails on the missing Redis,
    # with a 503 that says so).
    answer = client.get("/analytics/stats/band")
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("Redis is unreachable")
    assert keys_built
    for url in ("/metrics", "/analytics/insights/bob/overview"):
        assert client.get(url).status_code == 503, url
    # The event is logged, then cannot be queued: the sweep queues it later.
    answer = client.post("/events", json=[EVENT])
    assert answer.status_code == 503
    assert "send the whole request again" in answer.json()["detail"]
    assert "send the whole request again" not in client.get("/metrics").json()["detail"]
    # Events that are all rejected need no Redis: their reasons still come back.
    answer = client.post("/events", json=[{**EVENT, "song": "Not A Slug"}])
    assert answer.status_code == 422
    assert [r["event_id"] for r in answer.json()["rejected"]] == ["e1"]
    assert "song" in answer.json()["rejected"][0]["error"]


def test_an_unusable_event_log_answers_503_and_rejections_still_name_their_reason(
    tmp_path: Path,
) -> None:
    garbage = tmp_path / "log.db"
    garbage.write_text("not a database\n")
    settings = Settings(redis_url=MEMORY_URL, database_url=f"sqlite:///{garbage}", today=TODAY)
    client = TestClient(create_app(Connections.from_settings(settings)))
    answer = client.post("/events", json=[EVENT])
    assert answer.status_code == 503
    detail = answer.json()["detail"]
    assert detail.startswith("the event log is unavailable; ")
    assert "not a database" not in detail  # the driver's words stay in the server's log
    answer = client.post("/events", json=[{**EVENT, "song": ""}])
    assert answer.status_code == 422
    assert answer.json()["accepted_count"] == 0
    assert "song" in answer.json()["rejected"][0]["error"]


# -- no pickle ------------------------------------------------------------------------

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "jsonpickle"}


def test_no_module_of_the_packages_imports_pickle() -> None:
    found = []
    files = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    assert len(files) > 20
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{path}: {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        text = path.read_text(encoding="utf-8")
        if "DefaultSerializer" in text or "PickleSerializer" in text:
            found.append(f"{path}: an RQ pickle serializer")
    assert found == []


def test_queued_jobs_are_json_and_workers_read_json(tmp_path: Path) -> None:
    conns = memory_conns(tmp_path)
    assert conns.queue.serializer is JSONSerializer
    assert make_worker(conns).serializer is JSONSerializer
    make_publisher(conns).publish_objects([EVENT])
    (job_id,) = conns.queue.get_job_ids()
    data = conns.raw.hget(Job.key_for(job_id), "data")
    decoded = json.loads(zlib.decompress(data))  # a pickle would not decode as JSON
    assert decoded[2] == [[record_of(parse_event(EVENT))]]


# -- Redis URLs ----------------------------------------------------------------------------


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[int]:
    """A private redis-server on a free port that requires a password; stopped after."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            "x y",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = redis.Redis(port=port, password="x y")
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                assert proc.poll() is None, "redis-server exited"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_redis_url_with_a_password_works_end_to_end(password_redis: int, tmp_path: Path) -> None:
    url = f"redis://:x%20y@127.0.0.1:{password_redis}/0"
    env = FaultEnv(url, "sw", "statsworker", f"sqlite:///{tmp_path / 'log.db'}")
    conns = env.connections()
    report = make_publisher(conns).publish_objects([EVENT])
    assert report.accepted == 1
    run_worker(conns, burst=True, with_scheduler=False)
    assert conns.setlists.stats("band", TODAY).total_performances == 1
    health = TestClient(create_app(conns)).get("/health")
    assert health.status_code == 200 and health.json()["redis"] is True

    wrong, _ = make_clients(f"redis://:nope@127.0.0.1:{password_redis}/0")
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    bare = redis.Redis(port=password_redis)
    with pytest.raises(redis.AuthenticationError):
        bare.ping()


def test_a_rediss_url_builds_tls_connections_without_connecting() -> None:
    state, raw = make_clients("rediss://:pw@redis.example.invalid:6380/2?ssl_cert_reqs=required")
    for client in (state, raw):
        pool = client.connection_pool
        assert pool.connection_class is TLSConnection
        assert issubclass(TLSConnection, redis.SSLConnection)
        assert pool.connection_kwargs["password"] == "pw"
        assert pool.connection_kwargs["host"] == "redis.example.invalid"
        assert pool.connection_kwargs["port"] == 6380
        assert pool.connection_kwargs["db"] == 2
        connection = pool.make_connection()
        assert isinstance(connection, redis.SSLConnection)
        assert connection.cert_reqs is not None


def test_a_tls_handshake_that_gets_no_answer_gives_up_at_the_connect_timeout() -> None:
    # A server that accepts and never speaks, as a plain-text Redis is to a TLS hello.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        conn = TLSConnection(
            host="127.0.0.1", port=port, socket_connect_timeout=0.2, socket_timeout=3600
        )
        outcome: list[BaseException] = []

        def connect() -> None:
            try:
                conn.connect()
            except BaseException as exc:  # handed to the test's thread
                outcome.append(exc)

        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        thread.join(timeout=30)  # ends after 0.2 s; under the reply timeout, after an hour
        assert not thread.is_alive()
        assert outcome and isinstance(outcome[0], redis.TimeoutError), outcome
        conn.disconnect()
