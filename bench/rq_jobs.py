"""RQ's own cost per job: empty jobs through one statsworker worker.

    python bench/rq_jobs.py [--jobs N] [--rounds N] [--instructions]

Queues N jobs that do nothing (``operator.truth``), enqueued as the publisher enqueues
its batches (``result_ttl=0``, the failure ttl of ``events.publisher``), on a private
``redis-server``, and runs a :class:`worker.runner.StatsWorker` over them in burst mode,
in this process. Prints the worker's CPU time per job (``time.process_time`` around
the work), Redis' main-thread CPU per job and the commands Redis ran per job
(``INFO commandstats``): what a job costs before it applies anything.

``--instructions`` runs the worker under ``valgrind --tool=callgrind`` instead, once
with N jobs and once with 2N, and prints the difference per job: instructions do not
move with the machine's speed, which moves CPU times by a fifth between runs here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from bench.procs import PrivateRedis
from events.publisher import FAILURE_TTL, job_queue
from worker.runner import StatsWorker


def redis_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def run(jobs: int) -> tuple[float, float, dict[str, float]]:
    """Worker CPU seconds, Redis CPU seconds and commands, each per job, for ``jobs`` jobs."""
    server = PrivateRedis()
    try:
        conn = redis.Redis.from_url(server.url)
        queue = job_queue("rqjobs", conn)
        queue.enqueue_many(
            [
                Queue.prepare_data(
                    "operator.truth", args=(1,), result_ttl=0, failure_ttl=FAILURE_TTL
                )
                for _ in range(jobs)
            ]
        )
        worker = StatsWorker(
            [queue], connection=conn, serializer=JSONSerializer, name="rqjobs", guard=False
        )
        conn.config_resetstat()
        redis_before, before = redis_cpu(conn), time.process_time()
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
        spent, redis_spent = time.process_time() - before, redis_cpu(conn) - redis_before
        commands = {
            name.removeprefix("cmdstat_"): stats["calls"] / jobs
            for name, stats in conn.info("commandstats").items()
        }
        return spent / jobs, redis_spent / jobs, commands
    finally:
        server.stop()


def instructions(jobs: int) -> int:
    """Instructions this script executes for ``jobs`` jobs, counted by callgrind."""
    with tempfile.TemporaryDirectory(prefix="swrqjobs-") as tmp:
        out = Path(tmp) / "cg.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--jobs",
                str(jobs),
                "--rounds",
                "1",
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no total")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    args = parser.parse_args(argv)
    if args.instructions:
        small, large = instructions(args.jobs), instructions(2 * args.jobs)
        print(f"worker: {(large - small) / args.jobs:,.0f} instructions a job")
        return 0
    for _ in range(args.rounds):
        worker_cpu, redis_cpu_, commands = run(args.jobs)
        shown = ", ".join(
            f"{name} {n:.1f}"
            for name, n in sorted(commands.items(), key=lambda c: -c[1])
            if n >= 0.5  # the worker's start and stop, and the benchmark's own, left out
        )
        print(
            f"worker {worker_cpu * 1e3:.2f} ms a job, Redis {redis_cpu_ * 1e3:.2f} ms a job;"
            f" commands a job: {shown}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
