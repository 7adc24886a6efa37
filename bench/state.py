"""Building read state directly (no queue) and measuring what it costs Redis."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.data import ScaledPlay, occurred_at
from bench.procs import delete_pattern
from events.fields import _timestamp
from events.schemas import PerformanceRecorded
from stats import keys
from stats.setlists import SetlistStore

LOAD_CHUNK = 20_000
"""Events handed to one ``SetlistStore.apply`` call (one pipeline of script calls)."""


def performance_event(play: ScaledPlay) -> PerformanceRecorded:
    """The event of a play, built without validation (the data is known to be valid)."""
    return PerformanceRecorded.model_construct(
        type="performance.recorded",
        event_id=play.event_id,
        occurred_at=_timestamp(occurred_at(play)),
        vertical=play.vertical,
        performance_id=play.performance_id,
        show_id=play.show_id,
        show_date=play.show_date,
        song=play.song,
        song_title=play.song_title,
        venue=play.venue,
        set=play.set_name,
        position=play.position,
    )


def load_state(
    store: SetlistStore, plays: Iterable[ScaledPlay], today: dt.date, threads: int = 2
) -> int:
    """Apply every play through ``SetlistStore.apply`` in big chunks; returns how many.

    Two chunks are in flight at once, so building one chunk's events and arguments
    overlaps with Redis running the other's scripts (each script call is atomic and
    the result does not depend on order, so this changes nothing in the state).
    """
    n = 0
    pending: list[Future[Any]] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        chunk: list[PerformanceRecorded] = []
        for play in plays:
            chunk.append(performance_event(play))
            if len(chunk) >= LOAD_CHUNK:
                pending.append(pool.submit(store.apply, chunk, today))
                n += len(chunk)
                chunk = []
                while len(pending) > threads:
                    pending.pop(0).result()
        if chunk:
            pending.append(pool.submit(store.apply, chunk, today))
            n += len(chunk)
        for future in pending:
            future.result()
    return n


def used_memory(client: Any) -> int:
    """``used_memory`` of INFO memory, in bytes."""
    return int(client.info("memory")["used_memory"])


@dataclass(frozen=True)
class KeyUsage:
    """Bytes Redis holds for one kind of key (its last name part), summed over verticals."""

    name: str
    keys: int
    elements: int
    bytes: int
    encoding: str


def usage_by_key(client: Any, prefix: str, samples: int = 0) -> list[KeyUsage]:
    """MEMORY USAGE of every key under ``prefix``, grouped by the key's last name part.

    ``samples=0`` makes Redis walk every element (exact, but it blocks Redis for the
    length of a big key: a few hundred milliseconds at millions of elements).
    """
    totals: dict[str, list[Any]] = defaultdict(lambda: [0, 0, 0, ""])
    for key in client.scan_iter(keys.all_keys_pattern(prefix), count=1000):
        name = key.rsplit(":", 1)[-1]
        kind = client.type(key)
        size = {"hash": client.hlen, "zset": client.zcard, "set": client.scard}.get(kind)
        entry = totals[name]
        entry[0] += 1
        entry[1] += size(key) if size else 1
        entry[2] += int(client.memory_usage(key, samples=samples) or 0)
        entry[3] = f"{kind}/{client.object('encoding', key)}"
    return sorted(
        (KeyUsage(name, *values) for name, values in totals.items()),
        key=lambda u: -u.bytes,
    )


def drop_prefix(client: Any, prefix: str) -> int:
    """Delete every key under ``prefix``."""
    return delete_pattern(client, keys.all_keys_pattern(prefix))
