"""``GET /metrics`` in Prometheus text format and ``GET /health`` with Redis and database."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.retry
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api_stub.app import create_app
from stats.settings import Settings
from tests.conftest import REAL_REDIS_URL, Backend
from tests.faults_support import TODAY, FaultEnv, free_port
from worker import connections
from worker.connections import CLIENT_RETRIES, MEMORY_URL, Connections
from worker.runner import run_worker


def make_conns(backend: Backend, tmp_path: Path) -> Connections:
    url = MEMORY_URL if backend.name == "fakeredis" else REAL_REDIS_URL
    env = FaultEnv(url, backend.prefix, backend.queue, f"sqlite:///{tmp_path / 'log.db'}")
    return Connections(env.settings(batch_size=2), backend.client, backend.raw)


def event(i: int, kind: str = "performance.recorded", **fields: Any) -> dict[str, Any]:
    if kind.startswith("video"):
        base: dict[str, Any] = {"creator": "bob", "video_id": f"v{i}"}
        if kind != "video.deleted":
            base |= dict.fromkeys(("views", "likes", "comments", "shares", "bookmarks"), 1)
            base["new_followers"] = 0
        if kind == "video.posted":
            base["date_posted"] = "2024-05-01"
    else:
        base = {"vertical": "band", "performance_id": f"p{i}"}
        if kind == "performance.recorded":
            base |= {"show_id": f"s{i}", "show_date": "2024-05-01", "song": "tune"}
    return {
        "type": kind,
        "event_id": f"{kind}-{i}",
        "occurred_at": "2024-05-02T00:00:00Z",
        **base,
        **fields,
    }


def scrape(client: TestClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of ``GET /metrics``: name -> labels -> value."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def one(samples: dict[str, Any], name: str, **labels: str) -> float:
    value: float = samples[name][tuple(sorted(labels.items()))]
    return value


def test_metrics_count_applied_rejected_failed_queued_latency_and_lag(
    backend: Backend, tmp_path: Path
) -> None:
    conns = make_conns(backend, tmp_path)
    client = TestClient(create_app(conns))
    empty = scrape(client)
    assert one(empty, "statsworker_queue_depth") == 0
    assert one(empty, "statsworker_lag_seconds") == 0
    assert one(empty, "statsworker_failed_jobs") == 0

    batch = [event(i) for i in range(5)]
    batch += [event(9, "performance.retracted"), event(1, "video.posted")]
    batch += [event(1, "video.metrics_updated", occurred_at="2024-05-03T00:00:00Z")]
    batch += [{**event(50), "vertical": "Bad"}, {"type": "nope"}]  # rejected at the door
    answer = client.post("/events", content=json.dumps(batch))
    assert answer.status_code == 202 and len(answer.json()["rejected"]) == 2
    conns.queue.enqueue_call(  # a poison job that skipped validation
        "worker.jobs.apply_batch", args=([event(60, song="Bad Song")],), result_ttl=0
    )
    jobs = 4 + 1  # eight valid events in batches of two, and the poison job
    waiting = scrape(client)
    assert one(waiting, "statsworker_queue_depth") == jobs
    deadline = time.monotonic() + 10  # the oldest job ages while it waits
    while one(waiting, "statsworker_lag_seconds") <= 0.05:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        waiting = scrape(client)

    run_worker(conns, burst=True, with_scheduler=False)
    done = scrape(client)
    applied = done["statsworker_events_applied_total"]
    assert applied == {
        (("type", "performance.recorded"),): 5,
        (("type", "performance.retracted"),): 1,
        (("type", "video.posted"),): 1,
        (("type", "video.metrics_updated"),): 1,
    }
    assert one(done, "statsworker_events_rejected_total") == 2 + 1  # two at the door, one queued
    assert one(done, "statsworker_failed_jobs") == 1
    assert one(done, "statsworker_queue_depth") == 0
    assert one(done, "statsworker_lag_seconds") == 0
    assert one(done, "statsworker_apply_seconds_count") == jobs
    assert one(done, "statsworker_apply_seconds_bucket", le="+Inf") == jobs
    buckets = [v for (labels, v) in done["statsworker_apply_seconds_bucket"].items()]
    assert buckets == sorted(buckets)  # cumulative
    assert one(done, "statsworker_apply_seconds_sum") > 0


def test_health_reports_redis_and_database(backend: Backend, tmp_path: Path) -> None:
    conns = make_conns(backend, tmp_path)
    answer = TestClient(create_app(conns)).get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "redis": True, "database": True}


def test_health_reports_a_lost_redis(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        database_url=f"sqlite:///{tmp_path / 'log.db'}",
        today=TODAY,
    )
    dead = Connections(
        settings,
        redis.Redis(port=port, decode_responses=True, socket_connect_timeout=0.2),
        redis.Redis(port=port, socket_connect_timeout=0.2),
    )
    answer = TestClient(create_app(dead)).get("/health")
    assert answer.status_code == 503
    assert answer.json() == {"status": "degraded", "redis": False, "database": True}


def test_health_tries_a_lost_redis_once_where_the_state_client_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        database_url=f"sqlite:///{tmp_path / 'log.db'}",
        today=TODAY,
    )
    conns = Connections.from_settings(settings)
    attempts: list[int] = []

    def refuse(self: Any) -> None:
        attempts.append(self.port)
        raise redis.ConnectionError(f"refused (attempt {len(attempts)})")

    monkeypatch.setattr(redis.connection.Connection, "_connect", refuse)
    monkeypatch.setattr(redis.retry, "sleep", lambda seconds: None)  # the state's backoff
    answer = TestClient(create_app(conns)).get("/health")
    assert answer.status_code == 503
    assert answer.json() == {"status": "degraded", "redis": False, "database": True}
    assert attempts == [port]
    with pytest.raises(redis.ConnectionError):
        conns.state.ping()
    assert len(attempts) == 1 + 1 + CLIENT_RETRIES


def test_health_checks_at_once_all_reach_a_live_redis(tmp_path: Path) -> None:
    """A busy API answers many health checks at once: none may call Redis down."""
    settings = Settings(
        redis_url=REAL_REDIS_URL, database_url=f"sqlite:///{tmp_path / 'log.db'}", today=TODAY
    )
    probe = Connections.from_settings(settings).probe()
    barrier = threading.Barrier(12)
    failures: list[str] = []

    def check() -> None:
        barrier.wait()
        for _ in range(20):
            try:
                probe.ping()
            except redis.RedisError as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=check) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_health_checks_at_once_of_a_hung_redis_wait_once_at_most(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis that accepts and never answers: the checks beyond the probe's connections
    give up on waiting for one, rather than each waiting out a connection's timeout."""
    monkeypatch.setattr(connections, "PROBE_TIMEOUT_SECONDS", 1.5)  # far over the pool wait
    with socket.create_server(("127.0.0.1", 0)) as server:
        held: list[socket.socket] = []
        server.settimeout(0.1)

        def accept() -> None:
            while len(held) < 20:
                with contextlib.suppress(OSError):
                    held.append(server.accept()[0])

        threading.Thread(target=accept, daemon=True).start()
        settings = Settings(
            redis_url=f"redis://127.0.0.1:{server.getsockname()[1]}/0",
            database_url=f"sqlite:///{tmp_path / 'log.db'}",
            today=TODAY,
        )
        probe = Connections.from_settings(settings).probe()
        outcomes: list[str] = []

        def check() -> None:
            try:
                probe.ping()
                outcomes.append("ok")
            except redis.RedisError as exc:
                outcomes.append(type(exc).__name__)

        threads = [threading.Thread(target=check) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        for sock in held:
            sock.close()
    # The probe's connections time out; every other check gave up waiting for one.
    assert sorted(outcomes) == sorted(
        ["TimeoutError"] * connections.PROBE_CONNECTIONS
        + ["ConnectionError"] * (12 - connections.PROBE_CONNECTIONS)
    ), outcomes


@contextlib.contextmanager
def hung_redis() -> Any:
    """A server that accepts connections and never answers (a stopped Redis): its URL,
    and a function that closes the connections it holds, ending the waits on them."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        held: list[socket.socket] = []
        server.settimeout(0.1)
        done = threading.Event()

        def accept() -> None:
            while not done.is_set():
                with contextlib.suppress(OSError):
                    held.append(server.accept()[0])

        def release() -> None:
            done.set()
            thread.join(timeout=5)
            server.close()  # a new connection is refused, not held in the backlog
            for sock in held:
                sock.close()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield f"redis://127.0.0.1:{server.getsockname()[1]}/0", release
        finally:
            release()


@contextlib.contextmanager
def serving(app: Any) -> Any:
    """``app`` under uvicorn on a free port, as ``statsworker api`` runs it; its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical")
    sock = config.bind_socket()
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_a_read_from_a_hung_redis_answers_503_instead_of_waiting_it_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's clients wait seconds for a reply and do not send it again: the state's
    wait two minutes (an apply script may run long) and retry, and a read hung with them."""
    monkeypatch.setattr(connections, "SERVE_REPLY_TIMEOUT_SECONDS", 0.5)
    with hung_redis() as (url, _release):
        settings = Settings(
            redis_url=url, database_url=f"sqlite:///{tmp_path / 'log.db'}", today=TODAY
        )
        client = TestClient(create_app(Connections.from_settings(settings, serving=True)))
        answers: list[Any] = []
        for path in ("/analytics/stats/band", "/metrics"):
            reader = threading.Thread(target=lambda p=path: answers.append(client.get(p)))
            reader.start()
            reader.join(timeout=30)  # a bound on hanging, not a timing: the wait is 0.5 s
            assert not reader.is_alive(), f"{path} still waits on the hung Redis"
        assert [a.status_code for a in answers] == [503, 503]
        assert all(a.json()["detail"].startswith("Redis is unreachable: ") for a in answers)


def test_health_answers_while_reads_fill_the_thread_pool_waiting_on_a_hung_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """45 reads at once on a stopped Redis held every thread of the pool that ran
    /health too: a check answered nothing until they gave up."""
    import urllib.error
    import urllib.request

    def get(url: str, timeout: float) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read())

    def read_and_leave(url: str) -> None:
        with contextlib.suppress(OSError):  # the client leaves; the API's thread waits on
            get(url, timeout=2)

    monkeypatch.setattr(connections, "SERVE_REPLY_TIMEOUT_SECONDS", 60.0)  # reads hang on
    monkeypatch.setattr(connections, "CLIENT_RETRIES", 0)
    with hung_redis() as (url, release):
        settings = Settings(
            redis_url=url, database_url=f"sqlite:///{tmp_path / 'log.db'}", today=TODAY
        )
        with serving(create_app(Connections.from_settings(settings, serving=True))) as base:
            readers = [
                threading.Thread(target=read_and_leave, args=(f"{base}/analytics/stats/band",))
                for _ in range(45)
            ]
            for reader in readers:
                reader.start()
            for reader in readers:
                reader.join()
            try:
                status, body = get(f"{base}/health", timeout=10)
            finally:
                release()  # the reads end, and uvicorn with them
            assert (status, body) == (503, {"status": "degraded", "redis": False, "database": True})


def test_health_reports_an_unreachable_database(backend: Backend, tmp_path: Path) -> None:
    conns = make_conns(backend, tmp_path)
    port = free_port()  # no PostgreSQL there
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/test?connect_timeout=1"
    lost = Connections(
        conns.settings.model_copy(update={"database_url": url}), conns.state, conns.raw
    )
    answer = TestClient(create_app(lost)).get("/health")
    assert answer.status_code == 503
    assert answer.json() == {"status": "degraded", "redis": True, "database": False}
