"""Give the jobs of a dead worker back to the queue within seconds.

RQ leaves the job of a killed worker in the queue's StartedJobRegistry until the
entry's score (start + job timeout + 60 s) has passed, then calls it abandoned: it is
retried later if it has retries left (spending one, although the job did nothing
wrong) or else moved to the failed registry. A job taken off the queue by a worker
that died before registering it stays in the queue's intermediate list until RQ's
maintenance (every 10 minutes) fails it after a minute there.

Every statsworker worker runs :class:`Reaper` every :data:`REAP_INTERVAL` seconds
instead. A started job is orphaned when its execution is gone, its registry entry has
expired, or its worker is dead: the worker's key is missing, carries ``death``, or its
``last_heartbeat`` has not changed for :data:`DEAD_AFTER` seconds of the reaper's own
clock (so clocks of different hosts never have to agree). A job in the intermediate
list without an execution for :data:`STRANDED_AFTER` seconds is orphaned too. An
orphan is put back at the front of the queue with its retries untouched. Running a
job twice is harmless (the state keeps the greatest version per entity), but a job is
only requeued once: the move is a MULTI/EXEC guarded by WATCH on the job's hash, so
of several reapers racing for it exactly one succeeds.

The keys used here are RQ's own, taken from RQ's classes, not statsworker's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import WatchError
from rq import Queue
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.utils import as_text, parse_composite_key
from rq.worker import BaseWorker

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 1.0
"""Seconds between two heartbeats of a worker, written whether it is busy or idle."""

DEAD_AFTER = 6.0
"""A worker whose heartbeat has not changed for this many seconds is dead."""

STRANDED_AFTER = 6.0
"""A job in the intermediate list with no execution for this many seconds is orphaned."""

REAP_INTERVAL = 2.0
"""Seconds between two looks for orphaned jobs."""

_REQUEUE_STATUSES = {JobStatus.QUEUED.value, JobStatus.STARTED.value}
"""A job in one of these states was interrupted; any other state means it already ended."""


class Reaper:
    """Finds orphaned jobs of one queue and puts them back on it.

    Args:
        queue: the queue whose started registry and intermediate list are watched.
        own_worker: the name of the worker running this reaper (never considered dead).
        clock: a monotonic clock in seconds (a parameter for tests).
    """

    def __init__(
        self, queue: Queue, own_worker: str = "", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.queue = queue
        self.conn: Any = queue.connection
        self.own_worker = own_worker
        self.clock = clock
        self.started_key = queue.started_job_registry.key
        self.intermediate_key = queue.intermediate_queue_key
        self._beats: dict[str, tuple[str, float]] = {}  # worker -> (last heartbeat, seen since)
        self._stranded: dict[str, float] = {}  # job id -> first seen without an execution

    def reap(self) -> list[str]:
        """Requeue every orphaned job found now; returns their ids."""
        # The intermediate list is read before the registry: a job moving from one to
        # the other in between is then seen in the registry, never taken for stranded.
        waiting = [as_text(j) for j in self.conn.lrange(self.intermediate_key, 0, -1)]
        now = time.time()
        entries = self.conn.zrange(self.started_key, 0, -1, withscores=True)
        requeued: list[str] = []
        running: set[str] = set()
        for raw, score in entries:
            composite = as_text(raw)
            job_id, _execution_id = parse_composite_key(composite)
            running.add(job_id)
            if self._orphaned(composite, score, now) and self._requeue_started(job_id, composite):
                requeued.append(job_id)
        requeued.extend(self._reap_stranded(waiting, running))
        if requeued:
            log.warning(
                "requeued %d job(s) of dead workers on %s: %s",
                len(requeued),
                self.queue.name,
                ", ".join(requeued),
            )
        return requeued

    def _orphaned(self, composite: str, score: float, now: float) -> bool:
        if score <= now:  # the execution's own deadline passed: RQ calls it abandoned
            return True
        key = Execution.from_composite_key(composite, self.conn).key
        worker = self.conn.hget(key, "worker_name")
        if not worker:  # the execution expired with its worker
            return True
        name = as_text(worker)
        return name != self.own_worker and not self.worker_alive(name)

    def worker_alive(self, name: str) -> bool:
        """Whether worker ``name`` has shown a heartbeat within :data:`DEAD_AFTER` seconds."""
        beat, death = self.conn.hmget(
            BaseWorker.redis_worker_namespace_prefix + name, ["last_heartbeat", "death"]
        )
        if beat is None or death is not None:
            self._beats.pop(name, None)
            return False
        value = as_text(beat)
        now = self.clock()
        seen = self._beats.get(name)
        if seen is None or seen[0] != value:
            self._beats[name] = (value, now)
            return True
        return now - seen[1] < DEAD_AFTER

    def _reap_stranded(self, waiting: list[str], running: set[str]) -> list[str]:
        now = self.clock()
        stranded = {job_id for job_id in waiting if job_id not in running}
        self._stranded = {j: self._stranded.get(j, now) for j in stranded}
        requeued = []
        for job_id, since in list(self._stranded.items()):
            if now - since >= STRANDED_AFTER and self._requeue_stranded(job_id):
                requeued.append(job_id)
                del self._stranded[job_id]
        return requeued

    def _requeue_started(self, job_id: str, composite: str) -> bool:
        def still_orphaned(pipe: Any) -> bool:
            return pipe.zscore(self.started_key, composite) is not None

        def move(pipe: Any) -> None:
            pipe.zrem(self.started_key, composite)

        return self._requeue(job_id, still_orphaned, move)

    def _requeue_stranded(self, job_id: str) -> bool:
        def still_orphaned(pipe: Any) -> bool:
            if pipe.lpos(self.intermediate_key, job_id) is None:
                return False
            match = f"{job_id}:*"
            return not any(True for _ in pipe.zscan_iter(self.started_key, match=match))

        return self._requeue(job_id, still_orphaned, lambda pipe: None)

    def _requeue(
        self, job_id: str, still_orphaned: Callable[[Any], bool], move: Callable[[Any], None]
    ) -> bool:
        """Atomically take the job off its registries and push it to the queue's front.

        Whoever else writes the job's hash first (another reaper requeueing it, a
        worker starting or finishing it) makes this transaction fail, and the job is
        left to them.
        """
        job_key = Job.key_for(job_id)
        with self.conn.pipeline() as pipe:
            try:
                pipe.watch(job_key)
                if not still_orphaned(pipe):
                    return False
                status = pipe.hget(job_key, "status")
                alive = status is not None and as_text(status) in _REQUEUE_STATUSES
                pipe.multi()
                move(pipe)
                pipe.lrem(self.intermediate_key, 0, job_id)
                if alive:
                    pipe.hset(job_key, "status", JobStatus.QUEUED.value)
                    self.queue.push_job_id(job_id, pipeline=pipe, at_front=True)
                pipe.execute()
            except WatchError:
                return False
        return alive
