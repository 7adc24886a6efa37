"""Running RQ workers on the statsworker queue, and handling failed jobs."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import redis
from rq import SimpleWorker, worker_registration
from rq.exceptions import NoSuchJobError, StopRequested
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, clean_registries
from rq.results import Result
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.utils import as_text, current_timestamp, now

from events.publisher import CompactJob
from worker import context
from worker.connections import MEMORY_URL, Connections
from worker.publishing import start_sweeper
from worker.reaper import DEAD_AFTER, HEARTBEAT_INTERVAL, REAP_INTERVAL, STRANDED_AFTER, Reaper

log = logging.getLogger(__name__)

# RQ warns when Redis refuses CLIENT SETNAME (an ACL user without CLIENT, or a database
# index out of range, which the command then reports in one line): the worker's address
# is only shown as unknown. Set once here: catch_warnings would swap the process's
# filters while other threads run.
warnings.filterwarnings("ignore", message="CLIENT SETNAME command not supported")

BEAT_GAP = 0.5
"""Seconds within which a worker's heartbeat is not sent again (see StatsWorker.heartbeat)."""

RETRY_PATIENCE = 60.0
"""Seconds ahead within which a burst worker waits for a scheduled retry of a job of its
queue (the retries are 2, 10 and 30 s after a failure) rather than leaving it behind."""

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds before a worker that stopped on an error starts again, the last one repeated.
A burst worker gives up after as many restarts; a long-running one keeps trying."""


class WorkerFailed(RuntimeError):
    """A burst worker kept stopping on an error (Redis refusing writes, say)."""


class _ReadExecutions(ExecutionRegistry):
    """A job's execution registry whose executions were read beforehand."""

    def __init__(self, job_id: str, connection: Any, found: list[tuple[str, dict[bytes, bytes]]]):
        super().__init__(job_id, connection)
        self.found = found

    def get_executions(self, start: int = 0, end: int = -1) -> list[Execution]:
        executions = []
        for execution_id, data in self.found[start : None if end == -1 else end + 1]:
            if not data:  # as Execution.fetch reports it
                raise ValueError(f"Execution {execution_id} not found in Redis")
            execution = Execution(id=execution_id, job_id=self.job_id, connection=self.connection)
            execution.restore(data)
            executions.append(execution)
        return executions


class WorkerJob(CompactJob):
    """A queued job as a statsworker worker runs it: RQ's ``Job.delete`` in two round trips.

    A worker deletes every job it finishes (they are queued with ``result_ttl=0``), and
    RQ's delete reads the job's status, then its executions twice over: each read of
    them clears expired ones (ZREMRANGEBYSCORE), lists them (ZRANGE) and reads each
    one's hash (HGETALL), one round trip each, seven in all for a job run once. Here the
    status and the list go in one round trip and the hashes in a second, read once for
    the whole delete; what the delete then writes is RQ's own. Nothing else runs on the
    connection in between: RQ's reads there were made before its pipeline executes.
    """

    _read: tuple[bytes | None, _ReadExecutions] | None = None

    def delete(
        self, pipeline: Any = None, remove_from_queue: bool = True, delete_dependents: bool = False
    ) -> None:
        registry_key = ExecutionRegistry.key_template.format(self.id)
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.hget(self.key, "status")
            pipe.zremrangebyscore(registry_key, 0, current_timestamp())
            pipe.zrange(registry_key, 0, -1)
            status, _, raw_ids = pipe.execute()
            ids = [as_text(raw) for raw in raw_ids]
            for execution_id in ids:
                pipe.hgetall(Execution(execution_id, self.id, self.connection).key)
            found = list(zip(ids, pipe.execute() if ids else [], strict=True))
        self._read = (status, _ReadExecutions(self.id, self.connection, found))
        try:
            super().delete(
                pipeline=pipeline,
                remove_from_queue=remove_from_queue,
                delete_dependents=delete_dependents,
            )
        finally:
            self._read = None

    def _fetch_status(self) -> JobStatus:
        if self._read is None:
            return super()._fetch_status()
        status = self._read[0]
        if not status:
            # Deleted while this worker ran it: the worker was presumed dead (paused past
            # DEAD_AFTER, say), the reaper queued the job again, another worker ran it and
            # deleted it, and what this one wrote since holds no status. Applied twice,
            # which is harmless: the rest is deleted as a finished job's would be, where
            # RQ's InvalidJobOperation would fail the job into yet another run.
            log.warning(
                "job %s: finished here and by another worker, which took it while this one"
                " was presumed dead; applying it twice is harmless",
                self.id,
            )
            return JobStatus.FINISHED
        return JobStatus(as_text(status))

    @property
    def execution_registry(self) -> ExecutionRegistry:
        if self._read is None:
            return super().execution_registry
        return self._read[1]


class StatsWorker(SimpleWorker):
    """A worker that keeps a heartbeat while it works and requeues the jobs of dead workers.

    RQ's SimpleWorker writes its heartbeat only between jobs, so its liveness cannot
    be told from a killed one's for the length of a job timeout. Here a daemon thread
    writes it every :data:`~worker.reaper.HEARTBEAT_INTERVAL` seconds and, every
    :data:`~worker.reaper.REAP_INTERVAL` seconds, runs the :class:`~worker.reaper.Reaper`,
    which gives the jobs of dead workers back to the queue (see ``worker/reaper.py``).
    RQ's own maintenance still runs, after the reaper, but without its handling of
    the intermediate list, which the reaper replaces. Jobs are taken as
    :class:`WorkerJob`, whose delete makes fewer round trips.
    """

    job_class = WorkerJob

    failure: BaseException | None = None
    """What made RQ's loop quit, if anything did: RQ logs it and returns as if done."""

    began = False
    """Whether the worker registered and started its loop."""

    jobs_done = 0
    """Jobs this worker ran to success."""

    def __init__(self, *args: Any, guard: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.reapers = [Reaper(queue, own_worker=self.name) for queue in self.queues]
        self._reap_lock = threading.Lock()
        self._stop_guard = threading.Event()
        self._guard_thread: threading.Thread | None = None
        self.clock = time.monotonic
        self._beat_at, self._beat_ttl = -math.inf, 0  # when the last beat was sent, its ttl

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        self.began = True
        if self.guard:
            self._guard_thread = threading.Thread(
                target=self._guard, name=f"{self.name}-heartbeat", daemon=True
            )
            self._guard_thread.start()

    def teardown(self) -> None:
        # Stopped first, so that no heartbeat revives the key register_death retires.
        self._stop_guard.set()
        if self._guard_thread is not None:
            self._guard_thread.join(timeout=10)
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:  # Redis refusing writes: the key expires on its own
            log.warning("worker %s: could not register its end: %s", self.name, exc)
            if self.failure is None:
                self.failure = exc

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat (the worker's timestamp and two expiries), sent as one round
        trip: RQ sends the three commands one by one when it passes no pipeline of its own.

        RQ beats three times a job on its own (after the job, before and after the next
        dequeue), a fraction of a millisecond apart when the queue is full. A beat asked
        for within :data:`BEAT_GAP` seconds of the last one sent, with an expiry no longer
        than that one's, is not sent: the timestamp and the expiries are then at most that
        much older than asked, which no reader can tell apart (the reaper calls a worker
        dead after :data:`~worker.reaper.DEAD_AFTER` seconds without a change; the
        expiries are minutes)."""
        if threading.current_thread() is threading.main_thread():  # a step of RQ's loop
            self._noted(self._heartbeat, timeout, pipeline)
        else:  # the guard's, which handles its own errors
            self._heartbeat(timeout, pipeline)

    def _heartbeat(self, timeout: int | None, pipeline: Any) -> None:
        ttl = timeout or self.worker_ttl + 60
        at = self.clock()
        if pipeline is not None:
            super().heartbeat(ttl, pipeline=pipeline)
        elif at - self._beat_at < BEAT_GAP and ttl <= self._beat_ttl:
            return
        else:
            with self.connection.pipeline(transaction=False) as own:
                super().heartbeat(ttl, pipeline=own)
                own.execute()
        self._beat_at, self._beat_ttl = at, ttl

    # The steps of RQ's loop, whose errors it logs and quits on as if done: the last step
    # to fail is kept, and a step that succeeds clears it (RQ recovers from some errors of
    # the maintenance inside a dequeue, which then returns a job or nothing).

    def check_for_suspension(self, *args: Any, **kwargs: Any) -> Any:
        return self._noted(super().check_for_suspension, *args, **kwargs)

    def run_maintenance_tasks(self, *args: Any, **kwargs: Any) -> Any:
        return self._noted(super().run_maintenance_tasks, *args, **kwargs)

    def dequeue_job_and_maintain_ttl(self, *args: Any, **kwargs: Any) -> Any:
        return self._noted(super().dequeue_job_and_maintain_ttl, *args, **kwargs)

    def execute_job(self, *args: Any, **kwargs: Any) -> Any:
        return self._noted(super().execute_job, *args, **kwargs)

    def _noted(self, step: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            done = step(*args, **kwargs)
        except (StopRequested, SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.failure = exc
            raise
        self.failure = None
        return done

    def handle_job_success(self, *args: Any, **kwargs: Any) -> Any:
        done = super().handle_job_success(*args, **kwargs)
        self.jobs_done += 1
        return done

    def reap(self) -> list[str]:
        """Requeue the orphaned jobs of every queue of this worker; returns their ids."""
        requeued: list[str] = []
        with self._reap_lock:
            for reaper in self.reapers:
                requeued.extend(reaper.reap())
        return requeued

    def clean_registries(self) -> None:
        """RQ's maintenance, after the reaper had the first look at started jobs."""
        self.reap()
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                try:
                    clean_registries(queue, self._exc_handlers)
                    worker_registration.clean_worker_registry(queue)
                finally:
                    queue.release_maintenance_lock()  # type: ignore[no-untyped-call]
        self.last_cleaned_at = now()  # type: ignore[assignment]

    def _guard(self) -> None:
        next_reap = 0.0
        elapsed = 0.0
        while not self._stop_guard.wait(HEARTBEAT_INTERVAL):
            elapsed += HEARTBEAT_INTERVAL
            try:
                self.heartbeat()
                if elapsed >= next_reap:
                    next_reap = elapsed + REAP_INTERVAL
                    self.reap()
            except Exception:  # Redis away for a moment: the next round tries again
                log.warning("worker %s: heartbeat or reaping failed", self.name, exc_info=True)


def make_worker(conns: Connections) -> StatsWorker:
    """A worker that runs jobs in its own process (no fork per job).

    Each job is a batch applied by one Lua call per vertical or creator, so the work
    per job is small and a fork per job would cost more than the job itself (see
    the README for the measurement). With ``memory://`` there is no other process to
    die, so no heartbeat thread runs.
    """
    return StatsWorker(
        [conns.queue],
        connection=conns.raw,
        serializer=JSONSerializer,
        name=f"statsworker-{uuid.uuid4().hex[:12]}",
        guard=not conns.settings.redis_url.startswith(MEMORY_URL),
    )


@dataclass
class Tally:
    """What a worker did, over all its restarts."""

    jobs_done: int = 0
    stopped: bool = False
    """Whether a stop (SIGTERM, Ctrl-C) ended it."""

    sweep_failed: str | None = None
    """Why the sweep of the event log at start failed, if it did."""


def run_worker(
    conns: Connections, burst: bool, with_scheduler: bool = True, tally: Tally | None = None
) -> bool:
    """Run a worker until stopped (or, with ``burst``, until the queue is empty).

    RQ's loop quits on any error of its own commands (a Redis out of memory refusing a
    write, say) as if it were done. The worker then starts again after
    :data:`RESTART_DELAYS`; a burst worker gives up after as many restarts and raises
    :class:`WorkerFailed`. A burst worker also waits, before it returns, for the jobs
    that dead workers hold (see :func:`_drain_orphans`).

    Returns:
        Whether any job was run (``tally``, when given, counts them).
    """
    context.set_current(conns)
    tally = tally if tally is not None else Tally()
    in_memory = conns.settings.redis_url.startswith(MEMORY_URL)
    # Queue what the log holds but the queue never got.
    sweeper, tally.sweep_failed = start_sweeper(conns, burst)

    stopped = threading.Event()  # a warm stop was asked for: no restart, no drain

    def run() -> bool:
        worked = False
        tries = 0
        while True:
            worker = make_worker(conns)
            started = time.monotonic()
            try:
                worked |= worker.work(
                    burst=burst,
                    with_scheduler=with_scheduler and not in_memory,
                    logging_level="WARNING",
                )
            except redis.RedisError as exc:  # out of RQ's loop: its start or its end
                if not worker.began and tries == 0:
                    raise  # Redis unusable from the first: the command says so and ends
                worker.failure = exc
            finally:
                tally.jobs_done += worker.jobs_done
            if worker._stop_requested:
                stopped.set()
            if worker.failure is None or stopped.is_set():
                return worked
            if time.monotonic() - started > 60:
                tries = 0  # it ran a while before this error: a fresh count
            if burst and tries == len(RESTART_DELAYS):
                raise WorkerFailed(f"{type(worker.failure).__name__}: {worker.failure}")
            delay = RESTART_DELAYS[min(tries, len(RESTART_DELAYS) - 1)]
            tries += 1
            log.warning("worker stopped on %r; starting again in %.0f s", worker.failure, delay)
            time.sleep(delay)

    try:
        worked = run()
        if burst and not in_memory and not stopped.is_set():
            worked |= _drain_orphans(conns, run, stopped)
        if burst and not stopped.is_set():
            worked |= _run_retries(conns, run, stopped)
        tally.stopped = stopped.is_set()
        return worked
    except StopRequested:  # SIGTERM or Ctrl-C between two runs: nothing is half done
        tally.stopped = True
        return False
    finally:
        if sweeper is not None:
            sweeper.stop()


def _drain_orphans(conns: Connections, run: Any, stopped: threading.Event) -> bool:
    """Before a burst worker returns: requeue and run the jobs that dead workers hold.

    A worker killed mid-job leaves its job started; the reapers call its worker dead only
    after watching its heartbeat stand still for :data:`~worker.reaper.DEAD_AFTER`
    seconds, longer than a burst often lasts, so every later burst worker would leave
    the job there. Here the reaper watches while any job is started or waiting in the
    intermediate list, for at most DEAD_AFTER (and a little) after the last job it
    requeued: a job whose worker is alive is that worker's to finish."""
    queue = conns.queue
    reaper = Reaper(queue)
    patience = max(DEAD_AFTER, STRANDED_AFTER) + REAP_INTERVAL
    until = time.monotonic() + patience
    worked = False
    while (
        not stopped.is_set()
        and time.monotonic() < until
        and (
            conns.raw.zcard(queue.started_job_registry.key)
            or conns.raw.llen(queue.intermediate_queue_key)
        )
    ):
        if reaper.reap():
            worked |= run()
            until = time.monotonic() + patience
        else:
            time.sleep(HEARTBEAT_INTERVAL / 2)
    return worked


def _run_retries(conns: Connections, run: Any, stopped: threading.Event) -> bool:
    """Before a burst worker returns: run the retries scheduled for its queue's jobs.

    A job that failed for a passing reason (Redis out of memory, say) waits in the
    scheduled registry for its retry, which only a worker's scheduler queues again:
    a burst worker used to report its queue drained and leave it there, and later
    bursts never ran it. Here a retry due within :data:`RETRY_PATIENCE` seconds is
    waited for, queued (unless a running scheduler does it first) and run, until none
    is left that soon: the job is then applied, or in the failed registry."""
    queue = conns.queue
    key = queue.scheduled_job_registry.key
    scheduler = RQScheduler(
        [queue], connection=conns.raw, serializer=JSONSerializer, logging_level="WARNING"
    )
    worked = False
    until = time.monotonic() + RETRY_PATIENCE + 60  # a dead scheduler's lock expires in 61 s
    while not stopped.is_set() and time.monotonic() < until:
        if queued := queue.count:
            if run():
                worked = True
                until = time.monotonic() + RETRY_PATIENCE + 60
            elif queue.count >= queued:
                break  # nothing was taken (the queue suspended, say): not a loop on it
            continue
        first = conns.raw.zrange(key, 0, 0, withscores=True)
        if not first:
            break
        wait = first[0][1] - time.time()
        if wait > RETRY_PATIENCE:
            break
        if wait > 0:
            time.sleep(min(wait, 0.5))
        elif scheduler.acquire_locks():  # type: ignore[no-untyped-call]
            try:
                scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
            finally:
                scheduler.release_locks()  # type: ignore[no-untyped-call]
        else:  # a worker's scheduler holds the queue's lock: it queues them itself
            time.sleep(0.5)
    return worked


def scheduled_job_count(conns: Connections) -> int:
    """Jobs of the queue in its scheduled registry (retries, mostly)."""
    return int(conns.raw.zcard(conns.queue.scheduled_job_registry.key))


def failed_job_count(conns: Connections) -> int:
    """Jobs in the queue's failed registry."""
    return FailedJobRegistry(queue=conns.queue).count


def failed_jobs(conns: Connections) -> list[tuple[str, str]]:
    """Failed jobs of the queue with the last line of their error."""
    registry = FailedJobRegistry(queue=conns.queue)
    out = []
    for job_id in registry.get_job_ids():
        try:
            job = Job.fetch(job_id, connection=conns.raw, serializer=JSONSerializer)
        except NoSuchJobError:
            out.append((job_id, "the job's data has expired"))
            continue
        result = job.latest_result()
        failure = (
            result.exc_string if result is not None and result.type == Result.Type.FAILED else ""
        )
        lines = (failure or "").strip().splitlines()
        out.append((job_id, lines[-1] if lines else "unknown reason"))
    return out


def retry_failed(conns: Connections) -> int:
    """Re-enqueue every failed job; returns how many."""
    registry = FailedJobRegistry(queue=conns.queue)
    ids = registry.get_job_ids()
    for job_id in ids:
        registry.requeue(job_id)
    return len(ids)
