"""Running RQ workers on the statsworker queue, and handling failed jobs."""

from __future__ import annotations

import logging
import uuid

from rq import SimpleWorker
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from worker import context
from worker.connections import MEMORY_URL, Connections
from worker.publishing import start_sweeper

log = logging.getLogger(__name__)


def make_worker(conns: Connections) -> SimpleWorker:
    """A worker that runs jobs in its own process (no fork per job).

    Each job is a batch applied by one Lua call per vertical or creator, so the work
    per job is small and a fork per job would cost more than the job itself (see
    the README for the measurement).
    """
    return SimpleWorker(
        [conns.queue],
        connection=conns.raw,
        serializer=JSONSerializer,
        name=f"statsworker-{uuid.uuid4().hex[:12]}",
    )


def run_worker(conns: Connections, burst: bool, with_scheduler: bool = True) -> bool:
    """Run a worker until stopped (or, with ``burst``, until the queue is empty)."""
    context.set_current(conns)
    in_memory = conns.settings.redis_url.startswith(MEMORY_URL)
    worker = make_worker(conns)
    sweeper = start_sweeper(conns, burst)  # queue what the log holds but the queue never got
    try:
        return worker.work(
            burst=burst,
            with_scheduler=with_scheduler and not in_memory,
            logging_level="WARNING",
        )
    finally:
        if sweeper is not None:
            sweeper.stop()


def failed_jobs(conns: Connections) -> list[tuple[str, str]]:
    """Failed jobs of the queue with the last line of their error."""
    registry = FailedJobRegistry(queue=conns.queue)
    out = []
    for job_id in registry.get_job_ids():
        job = Job.fetch(job_id, connection=conns.raw, serializer=JSONSerializer)
        info = (job.exc_info or "").strip().splitlines()
        out.append((job_id, info[-1] if info else "unknown reason"))
    return out


def retry_failed(conns: Connections) -> int:
    """Re-enqueue every failed job; returns how many."""
    registry = FailedJobRegistry(queue=conns.queue)
    ids = registry.get_job_ids()
    for job_id in ids:
        registry.requeue(job_id)
    return len(ids)
