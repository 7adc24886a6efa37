"""Where ingest and read time goes: a time split per stage and pyinstrument profiles.

    python bench/profile_hot.py [--events N] [--profile]

Runs on a private ``redis-server`` started on a free port (and stopped at the end), so
that ``INFO commandstats`` counts this process's script time only. Stages of the
worker's job (``worker.jobs.apply_records``) are timed one by one on the real Grateful
Dead events in batches of 1,000: JSON decoding, the record shape check, building script
arguments, packing the command (redis-py), the script in Redis, and the rest. With
``--profile`` (needs ``pip install pyinstrument``) it also prints call-tree profiles of
the job, the publisher and the read routes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rq import Queue

from bench import data, reads
from bench.procs import PrivateRedis
from events import wire
from events.publisher import APPLY_RECORDS, Publisher, job_queue
from events.schemas import parse_event
from events.wire import record_of
from stats import keys
from stats.setlists import EVENTS_PER_CALL, SetlistStore, apply_head, event_args
from stats.settings import Settings
from worker.connections import make_clients
from worker.eventlog import EventLog

BATCH = 1000


def script_usec(client: Any) -> float:
    """Microseconds Redis spent in EVALSHA so far."""
    stats = client.info("commandstats").get("cmdstat_evalsha")
    return float(stats["usec"]) if stats else 0.0


def stage_split(
    client: Any,
    events: list[dict[str, Any]],
    today: dt.date,
    commands: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Seconds per stage of applying ``events`` in jobs of ``BATCH`` (what a worker does).

    The jobs hold wire records, as the publisher queues them (``worker.jobs.apply_records``).
    ``commands``, when given, receives ``INFO commandstats`` as the applying left it
    (counted from a reset, before the keys are cleaned up).
    """
    prefix = f"prof{uuid.uuid4().hex[:6]}"
    store = SetlistStore(client, prefix)
    conn = client.connection_pool.get_connection()
    records = [record_of(parse_event(e)) for e in events]
    payloads = [json.dumps(records[i : i + BATCH]) for i in range(0, len(records), BATCH)]
    out = dict.fromkeys(
        (
            "json decode",
            "record shape check",
            "script args",
            "command packing (the client's packer)",
            "script in Redis (server)",
            "apply, rest (round trip, replies)",
        ),
        0.0,
    )
    vkeys = list(keys.vertical_keys(prefix, data.VERTICAL))
    for payload in payloads:
        t0 = time.perf_counter()
        batch = json.loads(payload)
        t1 = time.perf_counter()
        bad = [] if wire.all_well_formed(batch) else [r for r in batch if wire.problem(r)]
        t2 = time.perf_counter()
        args: list[str] = apply_head(today)
        for r in batch:
            args += event_args(r)
        t3 = time.perf_counter()
        conn.pack_command("EVALSHA", "0" * 40, len(vkeys), *vkeys, *args)
        t4 = time.perf_counter()
        before = script_usec(client)
        t5 = time.perf_counter()
        store.apply_records(batch, today)
        t6 = time.perf_counter()
        server = (script_usec(client) - before) / 1e6
        if bad:
            raise RuntimeError(f"malformed records: {bad[:3]}")
        out["json decode"] += t1 - t0
        out["record shape check"] += t2 - t1
        out["script args"] += t3 - t2
        out["command packing (the client's packer)"] += t4 - t3
        out["script in Redis (server)"] += server
        out["apply, rest (round trip, replies)"] += (t6 - t5) - server - (t3 - t2) - (t4 - t3)
    client.connection_pool.release(conn)
    if commands is not None:
        commands.update(client.info("commandstats"))
    for key in client.scan_iter(keys.all_keys_pattern(prefix)):
        client.delete(key)
    return out


def publish_split(raw: Any, events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per stage of publishing ``events`` in batches of ``BATCH``, as
    ``Publisher.publish_objects`` does: validate, log (SQLite), enqueue records, mark."""
    queue = job_queue(f"prof{uuid.uuid4().hex[:6]}-q", raw)
    tmp = Path(tempfile.mkdtemp(prefix="statsworker-prof-"))
    sink = EventLog(f"sqlite:///{tmp / 'log.db'}")
    out = dict.fromkeys(
        ("pydantic validation", "event log append", "wire records", "enqueue", "mark enqueued"),
        0.0,
    )
    try:
        for start in range(0, len(events), BATCH):
            bodies = events[start : start + BATCH]
            t0 = time.perf_counter()
            models = [parse_event(e) for e in bodies]
            t1 = time.perf_counter()
            handle = sink.append(models, bodies)
            t2 = time.perf_counter()
            records = [record_of(m) for m in models]
            t3 = time.perf_counter()
            queue.enqueue_many([Queue.prepare_data(APPLY_RECORDS, args=(records,), result_ttl=0)])
            t4 = time.perf_counter()
            sink.mark_enqueued([handle])
            t5 = time.perf_counter()
            for key, took in zip(out, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                out[key] += took
    finally:
        queue.empty()
        sink.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    out["events"] = float(len(events))
    return out


def profile(label: str, fn: Any) -> None:
    """A pyinstrument call tree of ``fn()``."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    fn()
    profiler.stop()
    print(f"\n===== profile: {label}")
    print(profiler.output_text(unicode=False, color=False, show_all=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=0, help="events to use (default: all)")
    parser.add_argument("--profile", action="store_true", help="pyinstrument call trees too")
    args = parser.parse_args(argv)
    server = PrivateRedis()
    try:
        # The clients a worker makes (worker.connections), with their command packer.
        client, rawc = make_clients(server.url)
        plays = list(data.scaled_plays(data.load_plays(), 1))
        today = data.last_date(plays)
        events = [data.event_dict(p) for p in plays]
        if args.events:
            events = events[: args.events]
        n = len(events)
        client.config_resetstat()
        # Commands a script calls are counted in commandstats too: what they take of
        # the script's time, and so what is left to Lua itself.
        stats: dict[str, Any] = {}
        split = stage_split(client, events, today, stats)
        total = sum(split.values())
        print(f"worker apply path, {n} events in jobs of {BATCH} (RQ overhead not included):")
        for stage, seconds in split.items():
            print(
                f"  {stage:38s} {seconds * 1e6 / n:7.1f} us/event  {100 * seconds / total:5.1f} %"
            )
        print(f"  {'total':38s} {total * 1e6 / n:7.1f} us/event  -> {n / total:,.0f} events/s")
        called = {
            name.removeprefix("cmdstat_"): (float(v["usec"]), int(v["calls"]))
            for name, v in stats.items()
            if name not in ("cmdstat_evalsha", "cmdstat_config|resetstat", "cmdstat_info")
            and not name.startswith("cmdstat_script")
        }
        script = float(stats.get("cmdstat_evalsha", {}).get("usec", 0))
        inside = sum(usec for usec, _ in called.values())
        print(
            f"the apply script in Redis: {script / n:.1f} us/event, of which the commands it"
            f" calls {inside / n:.1f} (the rest is Lua itself):"
        )
        for name, (usec, calls) in sorted(called.items(), key=lambda kv: -kv[1][0])[:8]:
            print(f"  {name:20s} {calls / n:5.2f} calls/event {usec / n:6.2f} us/event")
        pub = publish_split(rawc, events)
        print(f"publisher, {n} events in batches of {BATCH}:")
        for stage, seconds in pub.items():
            if stage != "events":
                print(f"  {stage:38s} {seconds * 1e6 / n:7.1f} us/event")
        if args.profile:
            from worker import context, jobs
            from worker.connections import Connections

            prefix = f"prof{uuid.uuid4().hex[:6]}"
            conns = Connections(
                Settings(redis_url=server.url, key_prefix=prefix, today=today), client, rawc
            )
            context.set_current(conns)
            records = [record_of(parse_event(e)) for e in events]
            batches = [records[i : i + BATCH] for i in range(0, n, BATCH)]
            profile("worker job apply_records", lambda: [jobs.apply_records(b) for b in batches])
            queue = job_queue(f"{prefix}-q", rawc)
            tmp = Path(tempfile.mkdtemp(prefix="statsworker-prof-"))
            sink = EventLog(f"sqlite:///{tmp / 'log.db'}")
            profile(
                "publisher publish_objects, with the SQLite event log",
                lambda: Publisher(queue, batch_size=BATCH, sink=sink).publish_objects(events),
            )
            sink.dispose()
            shutil.rmtree(tmp, ignore_errors=True)
            songs = ["playing-in-the-band", "truckin", "dark-star"]

            def read_all() -> None:
                for i in range(100):
                    for route in reads.ROUTES:
                        route.call(conns, data.VERTICAL, songs[i % len(songs)])

            profile("read routes in process (100 x each)", read_all)
        print(f"\nEVENTS_PER_CALL={EVENTS_PER_CALL}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
