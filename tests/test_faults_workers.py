"""Killed workers and redelivered events: nothing lost, nothing counted twice.

Both tests run ``statsworker worker`` processes against the real Redis, with a private
key prefix and queue and an SQLite event log in ``tmp_path``, and compare the final
state with the recompute of ``tests/faults_support.py`` (the setlist oracle, and the
same distinct events applied once in this process under another prefix).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue, Retry, SimpleWorker, get_current_job
from rq.exceptions import InvalidJobOperation, StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import as_text, parse_composite_key, utcformat
from rq.worker import BaseWorker

from events.publisher import APPLY_BATCH, APPLY_RECORDS, JOB_COMPRESSION, Publisher
from events.schemas import Event
from events.wire import record_of
from stats.keys import metrics_key
from tests.conftest import REAL_REDIS_URL, Backend
from tests.faults_support import (
    TODAY,
    FaultEnv,
    Workers,
    check_answers,
    delete_prefix,
    deliveries,
    generate_events,
    private_name,
    queue_state,
    wait_drained,
)
from worker import cli, context, jobs, runner
from worker.connections import MEMORY_URL, Connections
from worker.publishing import make_publisher
from worker.reaper import DEAD_AFTER, STRANDED_AFTER, Reaper
from worker.runner import (
    BEAT_GAP,
    StatsWorker,
    WorkerFailed,
    WorkerJob,
    failed_jobs,
    make_worker,
    run_worker,
)

KILLS = 20
"""Workers SIGKILLed during the ingest of the killed-worker test."""


@pytest.fixture
def env(real_backend: Backend, tmp_path: Path) -> FaultEnv:
    return FaultEnv(
        REAL_REDIS_URL,
        real_backend.prefix,
        real_backend.queue,
        f"sqlite:///{tmp_path / 'events.db'}",
        batch_size=50,
    )


@pytest.fixture
def workers(env: FaultEnv, tmp_path: Path) -> Iterator[Workers]:
    procs = Workers(env, tmp_path)
    try:
        yield procs
    finally:
        procs.stop()


@pytest.fixture
def reference_prefix(real_backend: Backend) -> Iterator[str]:
    prefix = private_name("ref")
    try:
        yield prefix
    finally:
        delete_prefix(real_backend.raw, prefix)


def jobs_held_by(conns: Connections, pid: int) -> list[str]:
    """Ids of the started jobs whose worker process is ``pid``."""
    held = []
    for raw in conns.raw.zrange(conns.queue.started_job_registry.key, 0, -1):
        composite = as_text(raw)
        name = conns.raw.hget(Execution.from_composite_key(composite, conns.raw).key, "worker_name")
        if name is None:
            continue
        worker_pid = conns.raw.hget(BaseWorker.redis_worker_namespace_prefix + as_text(name), "pid")
        if worker_pid is not None and int(worker_pid) == pid:
            held.append(parse_composite_key(composite)[0])
    return held


def publish_in_chunks(
    conns: Connections, events: Sequence[Event], chunks: int, pause: float, done: threading.Event
) -> None:
    """Publish through the real publisher (event log, then queue), a chunk at a time."""
    publisher = make_publisher(conns)
    size = -(-len(events) // chunks)
    try:
        for start in range(0, len(events), size):
            publisher.publish(events[start : start + size])
            time.sleep(pause)
    finally:
        done.set()


@pytest.mark.timeout(300)
def test_killed_workers_lose_nothing_and_count_nothing_twice(
    env: FaultEnv, workers: Workers, reference_prefix: str
) -> None:
    """SIGKILL a random worker at random moments during a 50,000-event ingest."""
    rng = random.Random(20240630)
    events = generate_events(seed=11, performances=46_000, videos=1_200)
    assert len(events) >= 50_000
    stream = list(events) + rng.sample(events, 2_000)  # some published twice
    rng.shuffle(stream)
    conns = env.connections()
    workers.start(3)

    done = threading.Event()
    publisher = threading.Thread(
        target=publish_in_chunks, args=(conns, stream, 25, 0.8, done), daemon=True
    )
    publisher.start()
    started = time.monotonic()
    interrupted: list[str] = []
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.3, 1.5))
        index = rng.randrange(len(workers.procs))
        pid = workers.procs[index].pid
        # Give a worker still starting up, or idle, a moment to take a job, so that
        # most kills land in the middle of one (at a random point of it).
        deadline = time.monotonic() + 3.0
        while not jobs_held_by(conns, pid) and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.0, 0.05))
        workers.kill(index)
        interrupted.extend(jobs_held_by(conns, pid))
    killed = time.monotonic()
    publisher.join(timeout=120)
    assert done.is_set() and not publisher.is_alive(), "publishing did not finish"

    wait_drained(conns, timeout=150, workers=workers)
    print(
        f"{KILLS} kills in {killed - started:.1f} s interrupted {len(interrupted)} running "
        f"job(s); the queue drained {time.monotonic() - killed:.1f} s after the last kill"
    )
    state = queue_state(conns)
    assert state["failed"] == 0, "a job of a killed worker was failed instead of re-run"
    # The test proves something only when kills hit running jobs (they nearly all do).
    assert interrupted, "no kill interrupted a running job"
    workers.stop()
    checking = time.monotonic()
    check_answers(conns, events, reference_prefix)
    print(f"checked against the recompute in {time.monotonic() - checking:.1f} s")


def enqueue_batches(queue: Queue, batches: Sequence[Sequence[Event]]) -> None:
    """Put each batch on the queue as the publisher would, without the event log."""
    data = [
        Queue.prepare_data(APPLY_BATCH, args=([e.to_json_dict() for e in batch],), result_ttl=0)
        for batch in batches
    ]
    for start in range(0, len(data), 200):
        queue.enqueue_many(data[start : start + 200])


@pytest.mark.timeout(240)
def test_events_delivered_two_or_three_times_by_several_workers(
    env: FaultEnv, workers: Workers, reference_prefix: str
) -> None:
    """Each event 2-3 times, shuffled, some whole jobs twice in a row, three workers at once."""
    rng = random.Random(7)
    events = generate_events(seed=12, performances=6_000, videos=300)
    stream = deliveries(events, seed=13)
    batches: list[list[Event]] = []
    for start in range(0, len(stream), 40):
        batch = stream[start : start + 40]
        batches.append(batch)
        if rng.random() < 0.3:  # the same job twice: two workers apply it side by side
            batches.append(list(batch))
    conns = env.connections()
    enqueue_batches(conns.queue, batches)
    assert len(conns.queue) == len(batches)
    workers.start(3)  # all at once, so they start on neighbouring (often equal) jobs

    wait_drained(conns, timeout=150, workers=workers)
    assert queue_state(conns)["failed"] == 0
    workers.stop()
    check_answers(conns, events, reference_prefix)


# -- the reaper, step by step ------------------------------------------------------------


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rq_conns(backend: Backend, tmp_path: Path) -> Connections:
    url = MEMORY_URL if backend.name == "fakeredis" else REAL_REDIS_URL
    env = FaultEnv(url, backend.prefix, backend.queue, f"sqlite:///{tmp_path / 'log.db'}")
    return Connections(env.settings(), backend.client, backend.raw)


def take_job(conns: Connections, start: bool = True) -> tuple[StatsWorker, Job]:
    """A worker that takes the next job as RQ does, then stops there (as if killed)."""
    worker = make_worker(conns)
    worker.register_birth()
    taken = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert taken is not None
    job, _queue = taken
    if start:
        worker.prepare_execution(job)
        worker.prepare_job_execution(job, remove_from_intermediate_queue=True)
    return worker, job


def enqueue_one(conns: Connections) -> str:
    job = conns.queue.enqueue_call(
        APPLY_BATCH, args=([],), result_ttl=0, retry=Retry(max=3, interval=[2, 10, 30])
    )
    return str(job.id)


def test_a_job_of_a_dead_worker_goes_back_to_the_front_of_the_queue(
    rq_conns: Connections,
) -> None:
    conns = rq_conns
    job_id = enqueue_one(conns)
    worker, _job = take_job(conns)
    later = enqueue_one(conns)
    clock = FakeClock()
    reaper = Reaper(conns.queue, own_worker="someone-else", clock=clock)
    assert reaper.reap() == []  # its worker is alive: a heartbeat seen just now
    clock.now += DEAD_AFTER - 0.5
    assert reaper.reap() == []
    worker.heartbeat()
    clock.now += 1
    assert reaper.reap() == []  # a new heartbeat: alive for DEAD_AFTER more seconds
    clock.now += DEAD_AFTER - 0.5
    assert reaper.reap() == []
    clock.now += 0.5  # no new heartbeat for DEAD_AFTER seconds: dead
    assert reaper.reap() == [job_id]
    assert conns.queue.get_job_ids() == [job_id, later]
    assert conns.raw.zcard(conns.queue.started_job_registry.key) == 0
    again = Job.fetch(job_id, connection=conns.raw, serializer=JSONSerializer)
    assert again.get_status() == JobStatus.QUEUED
    assert again.retries_left == 3  # a kill is not the job's fault: no retry spent
    assert reaper.reap() == []  # requeued once only
    assert Reaper(conns.queue, clock=clock).reap() == []


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_a_burst_worker_runs_the_job_a_dead_worker_held_before_it_returns(
    rq_conns: Connections,
) -> None:
    conns = rq_conns
    held = enqueue_one(conns)
    take_job(conns)  # its worker stops there: its key stays, its heartbeat stands still
    other = enqueue_one(conns)
    assert run_worker(conns, burst=True, with_scheduler=False)
    # Both ran (their results are not kept), none is left started, queued or failed.
    assert not Job.exists(held, connection=conns.raw)
    assert not Job.exists(other, connection=conns.raw)
    assert conns.raw.zcard(conns.queue.started_job_registry.key) == 0
    assert conns.queue.count == 0
    assert failed_jobs(conns) == []


def test_a_worker_that_stops_on_an_error_starts_again_and_a_burst_one_gives_up(
    rq_conns: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    conns = rq_conns
    monkeypatch.setattr(runner, "RESTART_DELAYS", (0.0, 0.0))
    real_dequeue = SimpleWorker.dequeue_job_and_maintain_ttl  # what StatsWorker's calls
    refusals = [1]  # Redis refuses the first dequeue, as one out of memory does a write

    def dequeue(self: SimpleWorker, *args: Any, **kwargs: Any) -> Any:
        if refusals[0]:
            refusals[0] -= 1
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
        return real_dequeue(self, *args, **kwargs)

    monkeypatch.setattr(SimpleWorker, "dequeue_job_and_maintain_ttl", dequeue)
    job_id = enqueue_one(conns)
    enqueue_one(conns)
    tally = runner.Tally()
    assert run_worker(conns, burst=True, with_scheduler=False, tally=tally)  # RQ alone stops
    assert not Job.exists(job_id, connection=conns.raw) and conns.queue.count == 0
    assert tally == runner.Tally(jobs_done=2, stopped=False)  # counted across the restart

    refusals[0] = 3  # one more than the tries: the burst worker says so
    enqueue_one(conns)
    with pytest.raises(WorkerFailed, match="ResponseError: OOM command not allowed"):
        run_worker(conns, burst=True, with_scheduler=False)
    assert refusals == [0] and conns.queue.count == 1


def burst_command(conns: Connections, monkeypatch: pytest.MonkeyPatch) -> int:
    """``statsworker worker --burst`` run in this process on ``conns``; its exit code."""
    context.set_current(conns)
    monkeypatch.setattr(cli, "_connections", lambda: conns)
    return cli.main(["worker", "--burst"])


def test_a_burst_worker_says_what_it_did(
    rq_conns: Connections, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conns = rq_conns
    for _ in range(3):
        enqueue_one(conns)
    bad = conns.queue.enqueue_call("worker.jobs.no_such_function", result_ttl=0)
    assert burst_command(conns, monkeypatch) == 0
    told = capsys.readouterr().err.strip().splitlines()[-1]
    assert told == (
        "worker: queue drained; 3 job(s) applied by this worker; "
        "1 failed job(s): see `statsworker failed`"
    ), told
    assert bad.id in {job_id for job_id, _ in failed_jobs(conns)}


def test_a_burst_worker_runs_the_retries_its_queue_waits_for(
    rq_conns: Connections, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job that failed for a passing reason waits for its retry in the scheduled
    registry, which only a scheduler queues again: a burst worker said "queue drained"
    and left it there, and no later burst ran it."""
    conns = rq_conns
    runs: list[str] = []
    real = jobs.apply_batch

    def out_of_memory_once(events: list[Any]) -> dict[str, int]:
        job = get_current_job()
        assert job is not None
        runs.append(job.id)
        if runs.count(job.id) == 1 and job.id == failing.id:
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
        return real(events)

    monkeypatch.setattr(jobs, "apply_batch", out_of_memory_once)
    failing = conns.queue.enqueue_call(
        APPLY_BATCH, args=([],), result_ttl=0, retry=Retry(max=2, interval=[1, 1])
    )
    # Due long ago with no scheduler running to queue it (every worker a burst one),
    # and one not due for an hour: left, and said so.
    now = dt.datetime.now(dt.UTC)
    overdue = conns.queue.enqueue_at(now - dt.timedelta(minutes=5), APPLY_BATCH, [], result_ttl=0)
    later = conns.queue.enqueue_at(now + dt.timedelta(hours=1), APPLY_BATCH, [], result_ttl=0)
    assert burst_command(conns, monkeypatch) == 0
    told = capsys.readouterr().err.strip().splitlines()[-1]
    assert told == (
        "worker: queue drained; 2 job(s) applied by this worker; 1 job(s) scheduled for later"
    ), told
    assert sorted(runs) == sorted([failing.id, failing.id, overdue.id])
    assert conns.queue.scheduled_job_registry.get_job_ids() == [later.id]
    assert failed_jobs(conns) == [] and conns.queue.count == 0


@pytest.mark.timeout(60)  # a bound on spinning, not a timing
def test_a_burst_worker_on_a_suspended_queue_ends_as_before(rq_conns: Connections) -> None:
    """`rq suspend`: RQ's burst loop returns at once without taking a job, and the wait
    for retries went round and round on the job still queued."""
    from rq.suspension import resume, suspend

    conns = rq_conns
    job_id = enqueue_one(conns)
    suspend(conns.raw)
    try:
        assert run_worker(conns, burst=True, with_scheduler=False) is False
        assert conns.queue.get_job_ids() == [job_id]
    finally:
        resume(conns.raw)


def test_a_burst_worker_whose_event_log_cannot_be_used_applies_the_queue_and_says_so(
    rq_conns: Connections, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed a traceback of the sweep, then "queue drained", exit 0."""
    missing = "sqlite:////nonexistent-dir/events.db"
    conns = Connections(
        rq_conns.settings.model_copy(update={"database_url": missing}), rq_conns.state, rq_conns.raw
    )
    enqueue_one(conns)
    assert burst_command(conns, monkeypatch) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    told = err.strip().splitlines()
    assert told[-2] == "worker: queue drained; 1 job(s) applied by this worker", err
    assert told[-1].startswith(
        "statsworker: the event log was not swept for events that never reached the queue: "
        f"cannot open the event log at {missing}: unable to open database file"
    ), err
    assert conns.queue.count == 0


def test_a_burst_worker_that_gives_up_says_what_it_applied(
    rq_conns: Connections, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def give_up(*_args: Any, tally: runner.Tally, **_kwargs: Any) -> bool:
        tally.jobs_done = 2
        raise runner.WorkerFailed("ResponseError: OOM command not allowed")

    monkeypatch.setattr(runner, "run_worker", give_up)
    monkeypatch.setattr(cli, "_connections", lambda: rq_conns)
    assert cli.main(["worker", "--burst"]) == 1
    assert capsys.readouterr().err.strip() == (
        "statsworker: the worker kept stopping on an error: ResponseError: OOM command not "
        "allowed; 2 job(s) applied by this worker before it gave up"
    )


def test_a_refused_heartbeat_or_end_restarts_the_worker_and_a_stop_in_the_pause_ends_it(
    rq_conns: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An out-of-memory Redis refuses the heartbeat after a job and the worker's
    registration of its end, not only dequeues."""
    conns = rq_conns
    monkeypatch.setattr(runner, "RESTART_DELAYS", (0.0,))
    oom = redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
    real_beat, real_death = StatsWorker._heartbeat, SimpleWorker.register_death
    refusals = {"beat": 1, "death": 1}

    def beat(self: StatsWorker, *args: Any) -> None:
        if refusals["beat"]:
            refusals["beat"] -= 1
            raise oom
        real_beat(self, *args)

    def death(self: SimpleWorker, *args: Any, **kwargs: Any) -> None:
        if refusals["death"]:
            refusals["death"] -= 1
            raise oom
        real_death(self, *args, **kwargs)

    monkeypatch.setattr(StatsWorker, "_heartbeat", beat)
    monkeypatch.setattr(SimpleWorker, "register_death", death)
    first, second = enqueue_one(conns), enqueue_one(conns)
    assert run_worker(conns, burst=True, with_scheduler=False)
    assert refusals == {"beat": 0, "death": 0}
    assert not Job.exists(first, connection=conns.raw)
    assert not Job.exists(second, connection=conns.raw)

    # SIGTERM during the pause before a restart: RQ's handler raises StopRequested there.
    def refuse_dequeue(self: SimpleWorker, *args: Any, **kwargs: Any) -> Any:
        raise oom

    def stop_in_pause(_seconds: float) -> None:
        raise StopRequested()

    monkeypatch.setattr(SimpleWorker, "dequeue_job_and_maintain_ttl", refuse_dequeue)
    monkeypatch.setattr(runner.time, "sleep", stop_in_pause)
    waiting = enqueue_one(conns)
    tally = runner.Tally()
    assert run_worker(conns, burst=True, with_scheduler=False, tally=tally) is False
    assert conns.queue.get_job_ids() == [waiting]
    assert tally == runner.Tally(jobs_done=0, stopped=True)  # told as stopped, not drained


def test_a_step_that_succeeds_clears_the_failure_of_one_before_it(
    rq_conns: Connections,
) -> None:
    """RQ recovers from some errors inside a dequeue (its maintenance): the loop that
    then ends normally did not stop on an error."""
    worker = make_worker(rq_conns)

    def lost() -> None:
        raise redis.ConnectionError("lost")

    with pytest.raises(redis.ConnectionError):
        worker._noted(lost)
    assert isinstance(worker.failure, redis.ConnectionError)
    assert worker._noted(lambda: 7) == 7
    assert worker.failure is None


def test_a_worker_that_registered_its_death_is_dead_at_once(rq_conns: Connections) -> None:
    job_id = enqueue_one(rq_conns)
    worker, _job = take_job(rq_conns)
    worker.register_death()
    assert Reaper(rq_conns.queue).reap() == [job_id]


@contextlib.contextmanager
def round_trips(client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """What ``client`` sends meanwhile, one entry a round trip: a command sent alone (its
    arguments), or a pipeline it made executed (its number of commands)."""
    sent: list[Any] = []
    real_command, real_pipeline = client.execute_command, client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        execute = pipe.execute
        pipe.execute = lambda *a, **k: sent.append(len(pipe)) or execute(*a, **k)
        return pipe

    monkeypatch.setattr(
        client, "execute_command", lambda *a, **k: sent.append(a) or real_command(*a, **k)
    )
    monkeypatch.setattr(client, "pipeline", pipeline)
    try:
        yield sent
    finally:
        monkeypatch.undo()


def test_a_heartbeat_is_one_round_trip_and_does_what_rqs_does(
    rq_conns: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = make_worker(rq_conns)
    worker.register_birth()
    rq_conns.raw.expire(worker.key, 5)
    sent: list[tuple[Any, ...]] = []
    real = rq_conns.raw.execute_command
    monkeypatch.setattr(
        rq_conns.raw, "execute_command", lambda *a, **k: sent.append(a) or real(*a, **k)
    )
    worker.heartbeat(1000)
    assert sent == []  # the three commands went as one pipeline
    monkeypatch.undo()
    assert 990 < rq_conns.raw.ttl(worker.key) <= 1000
    stamp = rq_conns.raw.hget(worker.key, "last_heartbeat").decode()
    assert stamp == utcformat(worker.last_heartbeat)
    worker.register_death()


def test_a_heartbeat_repeated_within_the_gap_is_not_sent(
    rq_conns: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = make_worker(rq_conns)
    worker.register_birth()
    clock = FakeClock()
    worker.clock = clock
    try:
        with round_trips(worker.connection, monkeypatch) as sent:
            worker.heartbeat(300)
            assert sent == [3]
        stamp = rq_conns.raw.hget(worker.key, "last_heartbeat")
        clock.now += BEAT_GAP / 2
        with round_trips(worker.connection, monkeypatch) as sent:
            worker.heartbeat(300)  # just sent, and its expiry reaches as far: not sent again
            worker.heartbeat(200)
            assert sent == []
        assert rq_conns.raw.hget(worker.key, "last_heartbeat") == stamp
        with round_trips(worker.connection, monkeypatch) as sent:
            worker.heartbeat(1000)  # a longer expiry is sent at once
            assert sent == [3]
        assert 990 < rq_conns.raw.ttl(worker.key) <= 1000
        clock.now += BEAT_GAP
        with round_trips(worker.connection, monkeypatch) as sent:
            worker.heartbeat(1000)  # the gap has passed: sent, with a new timestamp
            assert sent == [3]
        assert rq_conns.raw.hget(worker.key, "last_heartbeat") != stamp
        with rq_conns.raw.pipeline() as pipe:
            worker.heartbeat(100, pipeline=pipe)  # a caller's pipeline always gets the beat
            assert len(pipe) == 3
            pipe.execute()
        assert rq_conns.raw.ttl(worker.key) <= 100
    finally:
        worker.register_death()


def job_traces(conns: Connections, job_id: str) -> set[str]:
    """Every key naming ``job_id``, and every member naming it of the queue's started
    registry and of the workers' execution sets."""
    raw = conns.raw
    traces = {as_text(k) for k in raw.scan_iter(match=f"*{job_id}*", count=1000)}
    started = conns.queue.started_job_registry.key
    members = map(as_text, raw.zrange(started, 0, -1))
    traces |= {f"{started} {m}" for m in members if job_id in m}
    for key in raw.scan_iter(match="rq:worker:*:executions", count=1000):
        members = raw.smembers(key)
        traces |= {f"{as_text(key)} {as_text(m)}" for m in members if job_id in as_text(m)}
    return traces


@pytest.mark.parametrize("stale", [0, 2])
def test_a_finished_job_is_deleted_as_rq_deletes_it_in_two_round_trips(
    rq_conns: Connections, monkeypatch: pytest.MonkeyPatch, stale: int
) -> None:
    """The same job state, deleted by RQ's Job.delete and by WorkerJob's: nothing of the
    job is left either way, with ``stale`` executions of other workers besides its own."""
    trips: dict[type[Job], int] = {}
    for job_class in (Job, WorkerJob):
        job_id = enqueue_one(rq_conns)
        worker, taken = take_job(rq_conns)
        assert isinstance(taken, WorkerJob)
        with rq_conns.raw.pipeline() as pipe:
            for n in range(stale):
                Execution.create(taken, 300, pipeline=pipe, worker_name=f"{worker.name}-{n}")
            pipe.execute()
        job = job_class.fetch(job_id, connection=rq_conns.raw, serializer=JSONSerializer)
        before = job_traces(rq_conns, job_id)
        assert sum(" " in t for t in before) == 2 * (1 + stale)  # each execution, twice
        with rq_conns.raw.pipeline() as pipe:
            pipe.multi()
            with round_trips(rq_conns.raw, monkeypatch) as sent:
                job.delete(pipeline=pipe, remove_from_queue=False)
            trips[job_class] = len(sent)
            pipe.execute()
        assert job_traces(rq_conns, job_id) == set()
        worker.register_death()
    assert trips[WorkerJob] == 2
    assert trips[Job] == 1 + 2 * (2 + 1 + stale)  # status, then twice: expire, list, each hash


def test_a_job_whose_status_is_gone_is_deleted_by_a_worker_where_rq_refuses(
    rq_conns: Connections,
) -> None:
    """What a job another worker deleted meanwhile looks like (see the test below)."""
    for job_class in (Job, WorkerJob):
        job_id = enqueue_one(rq_conns)
        worker, _taken = take_job(rq_conns)
        rq_conns.raw.hdel(f"rq:job:{job_id}", "status")
        job = job_class.fetch(job_id, connection=rq_conns.raw, serializer=JSONSerializer)
        if job_class is Job:
            with pytest.raises(InvalidJobOperation, match=f"status for job: {job_id}"):
                job.delete()
            rq_conns.raw.hset(f"rq:job:{job_id}", "status", "started")
            job.delete()
        else:
            job.delete()
        assert job_traces(rq_conns, job_id) == set(), job_class
        worker.register_death()


def test_a_job_another_worker_finished_meanwhile_ends_here_without_a_retry(
    rq_conns: Connections, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker paused past DEAD_AFTER finishes a job that the reaper gave to another
    worker, which ran and deleted it meanwhile: RQ's delete failed the job into a retry."""
    conns = rq_conns
    real = jobs.apply_batch

    def finished_elsewhere_meanwhile(events: list[Any]) -> dict[str, int]:
        done = real(events)
        job = get_current_job()
        assert job is not None
        conns.raw.delete(job.key)  # what the other worker's delete left
        return done

    monkeypatch.setattr(jobs, "apply_batch", finished_elsewhere_meanwhile)
    job_id = enqueue_one(conns)
    tally = runner.Tally()
    assert run_worker(conns, burst=True, with_scheduler=False, tally=tally)
    assert tally.jobs_done == 1
    assert not Job.exists(job_id, connection=conns.raw)
    queue = conns.queue
    for registry in (
        queue.scheduled_job_registry,
        queue.failed_job_registry,
        queue.started_job_registry,
    ):
        assert registry.get_job_ids() == [], registry
    assert queue.count == 0
    assert f"job {job_id}: finished here and by another worker" in caplog.text


def test_a_job_whose_worker_key_expired_is_orphaned_at_once(rq_conns: Connections) -> None:
    job_id = enqueue_one(rq_conns)
    worker, _job = take_job(rq_conns)
    rq_conns.raw.delete(worker.key)
    assert Reaper(rq_conns.queue).reap() == [job_id]


def test_a_job_taken_but_never_started_is_requeued_after_a_while(
    real_backend: Backend, tmp_path: Path
) -> None:
    """Redis >= 6.2 only: RQ moves a job to the intermediate list there (older ones pop it)."""
    env = FaultEnv(
        REAL_REDIS_URL, real_backend.prefix, real_backend.queue, f"sqlite:///{tmp_path / 'l.db'}"
    )
    conns = env.connections()
    job_id = enqueue_one(conns)
    take_job(conns, start=False)  # killed between taking the job and registering it
    assert conns.raw.lrange(conns.queue.intermediate_queue_key, 0, -1) == [job_id.encode()]
    clock = FakeClock()
    reaper = Reaper(conns.queue, clock=clock)
    assert reaper.reap() == []
    clock.now += STRANDED_AFTER - 1
    assert reaper.reap() == []  # a live worker registers a job it took within milliseconds
    clock.now += 1
    assert reaper.reap() == [job_id]
    assert conns.queue.get_job_ids() == [job_id]
    assert conns.raw.llen(conns.queue.intermediate_queue_key) == 0


def test_the_reaper_leaves_running_and_finished_jobs_alone(
    rq_conns: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    conns = rq_conns
    enqueue_one(conns)
    worker, job = take_job(conns)
    # The job applies through the process's connections (put back after the test).
    monkeypatch.setattr(context, "_current", conns)
    reaper = Reaper(conns.queue, own_worker=worker.name)
    assert reaper.reap() == []  # its own job
    worker.perform_job(job, conns.queue, next(iter(worker.executions.values())))
    assert conns.raw.zcard(conns.queue.started_job_registry.key) == 0
    assert Reaper(conns.queue).reap() == []
    assert len(conns.queue) == 0


def test_the_recompute_notices_a_lost_event(rq_conns: Connections) -> None:
    """The check the process tests rely on can fail."""
    conns = rq_conns
    events = generate_events(seed=3, performances=300, videos=20)
    conns.setlists.apply([e for e in events[1:] if e.type.startswith("performance")], TODAY)
    conns.videos.apply([e for e in events if e.type.startswith("video")])
    reference = private_name("ref")
    try:
        with pytest.raises(AssertionError):
            check_answers(conns, events, reference)
    finally:
        delete_prefix(conns.state, reference)


def test_a_queued_batch_is_compressed_lightly_and_any_rq_job_reads_it(
    rq_conns: Connections,
) -> None:
    events = generate_events(seed=3, performances=100, videos=10)
    report = Publisher(rq_conns.queue, batch_size=len(events)).publish(events)
    assert report.jobs == 1
    (job_id,) = rq_conns.queue.get_job_ids()
    stored = rq_conns.raw.hget(f"rq:job:{job_id}", "data")
    plain = zlib.decompress(stored)
    assert stored == zlib.compress(plain, JOB_COMPRESSION) != zlib.compress(plain)
    # A stock RQ job (what any worker fetches) reads the same call.
    job = Job.fetch(job_id, connection=rq_conns.raw, serializer=JSONSerializer)
    assert type(job) is Job
    assert job.func_name == APPLY_RECORDS
    assert list(job.args) == [[record_of(e) for e in events]]
    context.set_current(rq_conns)
    run_worker(rq_conns, burst=True, with_scheduler=False)
    counters = rq_conns.state.hgetall(metrics_key(rq_conns.settings.key_prefix))
    applied = sum(int(v) for k, v in counters.items() if k.startswith("applied:"))
    assert applied == len(events)
    assert rq_conns.queue.count == 0
