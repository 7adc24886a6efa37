"""Redis CPU of the setlist apply script: a git revision against the working tree.

    python bench/apply_ab.py [REV] [--rounds N] [--load N] [--instructions] [--events N]
                             [--shuffle SEED]

Applies the real Grateful Dead events (35,425) in calls of 1,000, as a worker does,
with ``stats/setlist_apply.lua`` as of REV (default HEAD) and as it is in the working
tree, taking turns round after round on a private ``redis-server``. Prints the CPU
time of Redis' main thread per event (``INFO cpu``, which other processes' load
inflates far less than wall time) for each, and whether the two leave identical
state (every key's content compared: fields, members and scores, or the string).
Both must keep the same layout (``stats.keys.SETLIST_LAYOUT``): the keys and arguments
passed are the working tree's. ``--load N`` gives the working tree's script N records
per ``perf`` bucket instead of ``stats.keys.PERF_BUCKET_LOAD`` (the buckets then differ,
and so does the state).

``--shuffle SEED`` applies the events in a random order (the real data is history in date
order, so nearly every play is its song's new last play; out of order, plays land between
stored ones, the path of corrections and of workers side by side).

``--instructions`` runs the server under ``valgrind --tool=callgrind`` and counts the
instructions it executes per event instead (about 50 times slower, so one round of the
first ``--events``, 10,000 by default, is the usual use): a count, unlike a time, comes out
the same however busy the machine is, so a change of one percent can be told from noise.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from bench import data
from bench.procs import PrivateRedis
from events.schemas import parse_event
from events.wire import record_of
from stats import keys
from stats.scripts import expand, lua_source
from stats.setlists import EVENTS_PER_CALL, apply_head, event_args

SCRIPT = "setlist_apply"
ROOT = Path(__file__).resolve().parents[1]


def redis_cpu(client: Any) -> float:
    """Seconds of CPU Redis' main thread has used."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def content(client: Any, key: bytes) -> tuple[Any, ...]:
    """What a key holds, whatever order its elements were written in (``DUMP`` is not:
    a hash's serialisation follows its insertion history)."""
    kind = client.type(key)
    if kind == b"hash":
        return ("hash", client.hgetall(key))
    if kind == b"zset":
        return ("zset", client.zrange(key, 0, -1, withscores=True))
    if kind == b"set":
        return ("set", client.smembers(key))
    return (kind, client.get(key))


class Callgrind:
    """Instruction counts of a redis-server running under callgrind."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="swcallgrind-"))
        self.wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.dir}/cg.%p"]
        self.pid = 0

    def zero(self) -> None:
        subprocess.run(["callgrind_control", "-z", str(self.pid)], capture_output=True, check=True)

    def count(self) -> int:
        """Instructions since the last :meth:`zero` (dumps the counters to read them)."""
        before = set(self.dir.iterdir())
        subprocess.run(["callgrind_control", "-d", str(self.pid)], capture_output=True, check=True)
        deadline = time.monotonic() + 60
        while True:
            for dump in set(self.dir.iterdir()) - before:
                for line in dump.read_text().splitlines():
                    if line.startswith(("totals:", "summary:")):
                        return int(line.split()[1])
            if time.monotonic() > deadline:
                raise TimeoutError("callgrind wrote no dump")
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rev", nargs="?", default="HEAD")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--load", type=int, help="records per perf bucket, working tree only")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind"
    )
    parser.add_argument("--events", type=int, help="the first N events only")
    parser.add_argument(
        "--shuffle",
        type=int,
        metavar="SEED",
        help="apply the events in an order shuffled with SEED (the same for both scripts)",
    )
    args = parser.parse_args(argv)
    if args.instructions and args.events is None:
        args.events = 10_000

    def at_rev(name: str) -> str:
        return subprocess.run(
            ["git", "show", f"{args.rev}:stats/{name}.lua"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout

    sources = {
        args.rev: expand(at_rev(SCRIPT), at_rev),
        "working tree": lua_source(SCRIPT),
    }
    plays = list(data.scaled_plays(data.load_plays(), 1))
    today = data.last_date(plays)
    plays = plays[: args.events]
    records = [record_of(parse_event(data.event_dict(p))) for p in plays]
    if args.shuffle is not None:
        random.Random(args.shuffle).shuffle(records)
    callgrind = Callgrind() if args.instructions else None
    server = PrivateRedis(timeout=120.0, wrapper=callgrind.wrapper if callgrind else ())
    if callgrind is not None:
        callgrind.pid = server.proc.pid
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=600)  # callgrind is slow
        scripts = {name: client.register_script(src) for name, src in sources.items()}
        cpu: dict[str, list[float]] = {name: [] for name in sources}
        states: dict[str, dict[bytes, bytes]] = {}
        for rnd in range(args.rounds):
            for i, (name, apply_script) in enumerate(scripts.items()):
                prefix = f"ab{i}r{rnd}"
                vkeys = list(keys.vertical_keys(prefix, data.VERTICAL))
                apply_script(keys=vkeys, args=apply_head(today))  # loaded before counting
                if callgrind is not None:
                    callgrind.zero()
                before = redis_cpu(client)
                for start in range(0, len(records), EVENTS_PER_CALL):
                    argv_: list[str] = apply_head(today)
                    if args.load and name == "working tree":
                        argv_[2] = str(args.load)
                    for r in records[start : start + EVENTS_PER_CALL]:
                        argv_ += event_args(r)
                    apply_script(keys=vkeys, args=argv_)
                if callgrind is not None:
                    cpu[name].append(callgrind.count() / len(records))
                else:
                    cpu[name].append((redis_cpu(client) - before) / len(records) * 1e6)
                found = list(client.scan_iter(f"{prefix}:*"))
                if rnd == 0:
                    named = {k.replace(prefix.encode(), b"P"): k for k in found}
                    states[name] = {n: content(client, k) for n, k in named.items()}
                if found:
                    client.delete(*found)
        unit, form = ("instructions/event", ",.0f") if callgrind else ("us/event", ".1f")
        for name, figures in cpu.items():
            shown = ", ".join(f"{f:{form}}" for f in figures)
            print(f"{name:>14}: {statistics.median(figures):{form}} {unit} ({shown})")
        a, b = states.values()
        print(f"identical state: {a == b} ({len(a)} keys)")
        return 0 if a == b else 1
    finally:
        server.stop()
        if callgrind is not None:
            shutil.rmtree(callgrind.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
