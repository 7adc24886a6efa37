"""The publisher's CPU per event: a git revision against the working tree, in turns.

    python bench/publish_ab.py [REV] [--rounds N] [--batch N] [--events N] [--instructions]

Each round runs ``Publisher.publish_objects`` on the real Grateful Dead events (35,425)
once with the code of REV (default HEAD, checked out into a temporary worktree) and once
with the working tree, each in a fresh process, with a fresh SQLite event log and a
queue of its own on a private ``redis-server``: validation, the log's writes, the wire
records and the enqueue, as in the ingest rows of ``bench/run.py``. Prints, for each,
the CPU time of the publishing process per event (``time.process_time``, which another
process's load inflates less than wall time) and the wall time, medians over the rounds.

``--instructions`` runs each publisher under ``valgrind --tool=callgrind`` instead and
prints the instructions it executes per event: the count of a run that publishes the events less
that of the same run publishing none of them (start-up, imports, reading the events),
divided by the events. A
count does not move with the machine's load, so a change of a few percent shows; it
leaves out the kernel's work (the log's fsync, the sockets) and Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import data
from bench.procs import PrivateRedis

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, shutil, sys, tempfile, time
from pathlib import Path
import redis
from rq import Queue
from rq.serializers import JSONSerializer
from events.publisher import Publisher
from worker.cli import tune_gc
from worker.eventlog import EventLog
try:
    from events.publisher import job_queue
except ImportError:  # revisions before it: RQ's own job
    def job_queue(name, connection):
        return Queue(name, connection=connection, serializer=JSONSerializer)
tune_gc()
url, name, batch, path, limit = sys.argv[1:6]
events = json.loads(Path(path).read_text())
events = events[: int(limit)] if limit else events
queue = job_queue(name, redis.Redis.from_url(url))
tmp = Path(tempfile.mkdtemp(prefix="swpubab-"))
log = EventLog(f"sqlite:///{tmp / 'log.db'}")
cpu, wall = time.process_time(), time.perf_counter()
report = Publisher(queue, batch_size=int(batch), sink=log).publish_objects(events)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
assert report.accepted == len(events), report.rejected[:3]
queue.empty()
log.dispose()
shutil.rmtree(tmp, ignore_errors=True)
print(json.dumps({"cpu": cpu, "wall": wall, "events": len(events)}))
"""


def run_child(
    tree: Path,
    url: str,
    name: str,
    batch: int,
    events_file: Path,
    wrapper: list[str] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """One publish in a fresh process importing the code of ``tree`` (of the first
    ``limit`` events of the file, when given)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-c", CHILD, url, name, str(batch), str(events_file)]
    proc = subprocess.run(
        [*(wrapper or []), *command, "" if limit is None else str(limit)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"publisher of {tree} failed:\n{proc.stderr[-3000:]}")
    found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


def instructions(tree: Path, url: str, batch: int, events_file: Path, out: Path) -> float:
    """Instructions per event of the publisher of ``tree`` (see the module docstring):
    both runs read the events, one publishes none of them."""
    counts = []
    for n, limit in enumerate((None, 0)):
        out_file = out / f"cg.{tree.name}.{n}"
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
        found = run_child(tree, url, f"pubab-cg-{n}", batch, events_file, wrapper, limit)
        counts.append((_total(out_file), found["events"]))
    (with_events, n_events), (without, _) = counts
    return (with_events - without) / n_events


def _total(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rev", nargs="?", default="HEAD")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--events", type=int, default=0, help="use the first N (default: all)")
    parser.add_argument("--instructions", action="store_true", help="count them (callgrind)")
    args = parser.parse_args(argv)
    events = [data.event_dict(p) for p in data.scaled_plays(data.load_plays(), 1)]
    if args.events:
        events = events[: args.events]
    tmp = Path(tempfile.mkdtemp(prefix="swpubab-"))
    old = tmp / "rev"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.rev],
        check=True,
        capture_output=True,
    )
    events_file = tmp / "events.json"
    events_file.write_text(json.dumps(events))
    server = PrivateRedis()
    results: dict[str, list[dict[str, Any]]] = {args.rev: [], "working tree": []}
    try:
        if args.instructions:
            for label, tree in ((args.rev, old), ("working tree", ROOT)):
                per_event = instructions(tree, server.url, args.batch, events_file, tmp)
                print(f"  {label:14s} {per_event:,.0f} instructions/event ({len(events):,} events)")
            return 0
        for round_no in range(args.rounds):
            for label, tree in ((args.rev, old), ("working tree", ROOT)):
                found = run_child(tree, server.url, f"pubab-{round_no}", args.batch, events_file)
                results[label].append(found)
                print(
                    f"round {round_no + 1}: {label:14s} {found['cpu'] * 1e6 / found['events']:6.2f}"
                    f" us CPU/event, {found['events'] / found['wall']:,.0f} events/s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        server.stop()
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"publisher, {len(events):,} events in batches of {args.batch}, {args.rounds} rounds:")
    for label, runs in results.items():
        cpu = statistics.median(r["cpu"] * 1e6 / r["events"] for r in runs)
        wall = statistics.median(r["events"] / r["wall"] for r in runs)
        print(f"  {label:14s} {cpu:6.2f} us CPU/event   {wall:,.0f} events/s (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
