"""Lost Redis: a Redis without persistence dies in the middle of an ingest and comes back empty.

The event log (a private schema of the real PostgreSQL) keeps what the publisher had
acknowledged; ``statsworker rebuild`` brings the state back from it, the ingest goes
on, and the state equals the recompute of every event (see ``tests/faults_support.py``).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.connection import HiredisRespSerializer

from tests.faults_support import (
    FaultEnv,
    Workers,
    check_answers,
    free_port,
    generate_events,
    private_name,
    queue_state,
    statsworker_command,
    wait_drained,
)
from tests.log_support import postgres_schema
from worker import migrations
from worker.connections import CommandPacker, make_clients
from worker.eventlog import make_engine, open_log
from worker.publishing import make_publisher


class PrivateRedis:
    """A redis-server of this test alone, on a free port, without persistence."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.ping()
                return
            except redis.ConnectionError:
                assert self.proc.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: everything in memory is gone."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.terminate()
            server.proc.wait(timeout=10)


def test_a_script_that_runs_past_five_seconds_gets_its_answer(
    private_redis: PrivateRedis,
) -> None:
    """A long apply (a large batch on a loaded server) is waited for; redis-py's own
    5-second timeout made the client send it again and fail on Redis' BUSY."""
    state, _ = make_clients(f"redis://127.0.0.1:{private_redis.port}/0")
    spin = """
        local start = tonumber(redis.call('TIME')[1])
        local n = 0
        while tonumber(redis.call('TIME')[1]) - start < 6 do n = n + 1 end
        return n
    """
    assert int(state.eval(spin, 0)) > 0


_ARG = st.one_of(
    st.text(max_size=20),
    st.binary(max_size=20),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False),
    st.binary(max_size=8).map(bytearray),
    st.binary(max_size=8).map(memoryview),
    st.sampled_from([None, True, [1], {"a": 1}, object()]),
)
_NAME = st.one_of(
    st.sampled_from(["EVALSHA", "HGETALL", "SCRIPT LOAD", "CLIENT  SETNAME", "x.y", "", "é"]),
    st.text(max_size=12),
    st.binary(max_size=12),
)


@settings(max_examples=800, deadline=None, database=None)
@given(name=_NAME, args=st.lists(_ARG, max_size=6))
def test_the_command_packer_packs_what_redis_py_packs(name: Any, args: list[Any]) -> None:
    """The clients' packer skips redis-py's pass over the arguments; it must give the
    same bytes, or refuse what redis-py refuses."""
    command = (name, *args)
    try:
        expected: Any = b"".join(HiredisRespSerializer().pack(*command))
    except Exception as exc:  # what redis-py refuses, the packer refuses alike
        expected = type(exc)
    try:
        found: Any = b"".join(CommandPacker().pack(*command))
    except Exception as exc:
        found = type(exc)
    assert found == expected, command


def test_the_clients_pack_commands_with_the_fast_packer(private_redis: PrivateRedis) -> None:
    for client in make_clients(f"redis://127.0.0.1:{private_redis.port}/0"):
        connection = client.connection_pool.get_connection()
        try:
            assert isinstance(connection._command_packer, CommandPacker)
        finally:
            client.connection_pool.release(connection)
        try:
            assert client.eval("return ARGV[1] .. #ARGV", 0, "v", b"\x00\xff", 7) in ("v3", b"v3")
        finally:
            client.close()


@pytest.fixture
def log_url() -> Iterator[str]:
    with postgres_schema() as url:
        engine = make_engine(url)
        migrations.upgrade(engine)
        engine.dispose()
        yield url


@pytest.mark.timeout(240)
def test_redis_lost_mid_ingest_is_rebuilt_from_the_log(
    private_redis: PrivateRedis, log_url: str, tmp_path: Path
) -> None:
    env = FaultEnv(
        f"redis://127.0.0.1:{private_redis.port}/0",
        private_name("lost"),
        private_name("q"),
        log_url,
        batch_size=50,
    )
    events = generate_events(seed=21, performances=8_000, videos=300)
    half = len(events) // 2
    first, rest = events[:half], events[half:]
    conns = env.connections()
    publisher = make_publisher(conns)
    acknowledged = publisher.publish(first).accepted  # returned: logged and queued
    assert acknowledged == len(first)
    jobs = len(conns.queue)

    workers = Workers(env, tmp_path)
    workers.start(2)
    try:
        # Let the workers get well into the backlog, then lose Redis under them.
        deadline = time.monotonic() + 120
        while len(conns.queue) > jobs * 0.6:
            assert time.monotonic() < deadline, "the workers did not start on the backlog"
            time.sleep(0.05)
        assert len(conns.queue) > 0
        private_redis.kill()
        private_redis.start()

        rebuilt = subprocess.run(
            [*statsworker_command(), "rebuild"],
            env=env.environ(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert rebuilt.returncode == 0, rebuilt.stderr
        # Everything acknowledged before the loss is back.
        assert open_log(log_url).count() == len(first)
        wait_drained(conns, timeout=60)
        check_answers(conns, first, private_name("ref1"))

        revived = workers.revive()  # as a supervisor would, for a worker that gave up
        print(f"{revived} worker(s) had exited while Redis was away")
        assert make_publisher(conns).publish(rest).accepted == len(rest)
        wait_drained(conns, timeout=120, workers=workers)
        assert queue_state(conns)["failed"] == 0
    finally:
        workers.stop()
    check_answers(conns, events, private_name("ref2"))


def test_a_redis_that_may_evict_state_keys_is_told_at_start(
    private_redis: PrivateRedis, log_url: str
) -> None:
    """State keys have no TTL: an allkeys-* policy would drop them silently at maxmemory,
    and a volatile-* one the failed batches."""
    env = FaultEnv(
        f"redis://127.0.0.1:{private_redis.port}/0",
        private_name("evict"),
        private_name("q"),
        log_url,
    )
    admin = redis.Redis(port=private_redis.port, decode_responses=True)

    def burst(on: FaultEnv = env) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*statsworker_command(), "worker", "--burst"],
            env=on.environ(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done

    for policy in ("allkeys-lru", "allkeys-lfu", "allkeys-random"):
        admin.config_set("maxmemory-policy", policy)
        told = burst().stderr
        assert f"maxmemory-policy is {policy}: at maxmemory it evicts statsworker's" in told
    # Failed batches are kept with a TTL: a volatile-* policy may drop them.
    for policy in ("volatile-lru", "volatile-ttl"):
        admin.config_set("maxmemory-policy", policy)
        told = burst().stderr
        assert f"maxmemory-policy is {policy}: at maxmemory it evicts keys with a TTL" in told
    admin.config_set("maxmemory-policy", "noeviction")
    assert "maxmemory-policy" not in burst().stderr

    # A user that may not read the configuration is not warned, and works on; nor is
    # one denied CLIENT told by RQ that it cannot name its connection.
    admin.config_set("maxmemory-policy", "allkeys-lru")
    admin.acl_setuser(
        "app",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-config", "-client"],
    )
    restricted = FaultEnv(
        f"redis://app:pw@127.0.0.1:{private_redis.port}/0", env.prefix, env.queue, log_url
    )
    told = burst(restricted).stderr
    assert "maxmemory-policy" not in told
    assert "CLIENT SETNAME" not in told, told


def test_a_redis_out_of_memory_at_start_ends_a_command_with_one_line(
    private_redis: PrivateRedis, log_url: str, tmp_path: Path
) -> None:
    """It gave a traceback and exit 1, the code of a rejected line, for publish too."""
    env = FaultEnv(
        f"redis://127.0.0.1:{private_redis.port}/0", private_name("oom"), private_name("q"), log_url
    )
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(json.dumps(e.to_json_dict()) for e in generate_events(3, 5, 0)) + "\n"
    )
    redis.Redis(port=private_redis.port).config_set("maxmemory", 1)  # below what it holds
    for command in (["worker", "--burst"], ["publish", str(events)]):
        done = subprocess.run(
            [*statsworker_command(), *command],
            env=env.environ(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 3, done.stderr
        assert f"Redis at redis://127.0.0.1:{private_redis.port}/0 refuses writes: " in done.stderr
        assert "Traceback" not in done.stderr, done.stderr


def test_a_post_to_a_redis_out_of_memory_answers_503_and_reads_go_on(
    private_redis: PrivateRedis, log_url: str
) -> None:
    """Redis refusing writes refused the job: POST /events answered 500."""
    from fastapi.testclient import TestClient

    from api_stub.app import create_app
    from worker.connections import Connections

    env = FaultEnv(
        f"redis://127.0.0.1:{private_redis.port}/0", private_name("oom"), private_name("q"), log_url
    )
    conns = Connections.from_settings(env.settings(), serving=True)
    make_publisher(conns).publish(generate_events(seed=4, performances=50, videos=0))
    from worker.runner import run_worker

    assert run_worker(conns, burst=True, with_scheduler=False)
    client = TestClient(create_app(conns))
    vertical = conns.setlists.verticals()[0]
    before = client.get(f"/analytics/stats/{vertical}")
    assert before.status_code == 200
    redis.Redis(port=private_redis.port).config_set("maxmemory", 1)
    event = generate_events(seed=5, performances=1, videos=0)[0].to_json_dict()
    answer = client.post("/events", json=[event])
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"].startswith("Redis refuses writes: command not allowed")
    assert "send the whole request again" in answer.json()["detail"]
    again = client.get(f"/analytics/stats/{vertical}")
    assert (again.status_code, again.json()) == (200, before.json())
