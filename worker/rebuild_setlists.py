"""Builds a vertical's setlist state from its logged events in one pass, for ``rebuild``.

The incremental script (``stats/setlist_apply.lua``) keeps every key exact event by
event, which costs tens of microseconds per event. A rebuild knows the whole log, so
it picks each performance's winning event first, derives every key from the winners
in memory and writes each key with a few bulk commands: several times faster. The
result is the state the script would reach from the same events, key for key and
byte for byte; ``tests/test_rebuild_verify.py`` pins that against the script on random
streams, so a change to the key schema that is not made here too fails there.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any

from stats import keys
from stats.dates import day_number
from worker.eventlog import FIELD_SEP, PerformanceRow

hiredis: Any
try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency; this is the slow way
    hiredis = None

SEP = "\x1f"
"""Separates the fields of a ``perf``, ``songs`` and ``win`` value (as in the scripts)."""

WINDOWS = (30, 90, 365)
"""The windows of ``win``, in days, in the order they are stored."""

WRITE_CHUNK = 10_000
"""Hash fields or sorted-set members sent by one command."""


@dataclass
class VerticalState:
    """Every key of one vertical, as plain Python values: hash fields and zset scores."""

    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    zsets: dict[str, dict[str, int]] = field(default_factory=dict)

    def names(self) -> set[str]:
        """The ``VerticalKeys`` fields that hold something (empty keys do not exist)."""
        return {name for name, v in (*self.hashes.items(), *self.zsets.items()) if v}


Winner = tuple[str, str | None]
"""A performance's winning version and its ``fields`` (None when a retraction won)."""


def winners(
    batches: Iterable[Sequence[PerformanceRow]],
    recent_from: int | None = None,
    recent: set[int] | None = None,
) -> dict[str, Winner]:
    """performance_id -> its winning version and ``fields`` (None for a retraction).

    Args:
        recent_from, recent: the ``seq`` of each row numbered ``recent_from`` or more
            is added to ``recent`` (what a rebuild watches for; done here, in the one
            loop over every row).
    """
    won: dict[str, Winner] = {}
    get = won.get
    first = recent_from if recent_from is not None else float("inf")
    seen = recent if recent is not None else set()
    for batch in batches:
        for row in batch:  # by index: the hot loop of a rebuild
            if row[0] >= first:
                seen.add(row[0])
            pid, version = row[1], row[2]
            current = get(pid)
            if current is None or version > current[0]:  # str order = UTF-8 byte order
                won[pid] = (version, row[4] if row[3] else None)
    return won


class _Dates(dict[str, tuple[int, int]]):
    """Date -> (day number, YYYYMMDD score), computed once per distinct date."""

    def __missing__(self, date: str) -> tuple[int, int]:
        value = (day_number(dt.date.fromisoformat(date)), int(date[0:4] + date[5:7] + date[8:10]))
        self[date] = value
        return value


def build(
    won: dict[str, Winner], today: dt.date, bust_days: int = keys.BUSTOUT_INDEX_DAYS
) -> VerticalState:
    """Every key of a vertical whose performances' winning events are ``won``."""
    dates = _Dates()
    perf: dict[str, str] = {}
    plays: dict[str, int] = {}
    songplays: dict[str, int] = {}
    showperfs: dict[str, int] = {}
    showperfs_get = showperfs.get
    months: dict[str, int] = {}
    by_song: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for pid, (version, fields) in won.items():
        if fields is None:
            perf[pid] = f"{version}{SEP}X"
            continue
        song, show_id, date, title = fields.split(FIELD_SEP)
        if title:  # fields already reads song, show_id, date, title as perf stores them
            perf[pid] = f"{version}{SEP}R{SEP}{fields}"
        else:
            title = song
            perf[pid] = f"{version}{SEP}R{SEP}{fields}{song}"
        plays[pid] = dates[date][1]
        songplays[f"{song}\0{date}\0{pid}"] = 0
        show = f"{date}\0{show_id}"
        showperfs[show] = showperfs_get(show, 0) + 1
        by_song[song].append((date, pid, title))
    for show, n in showperfs.items():
        month = show[:7]
        months["p:" + month] = months.get("p:" + month, 0) + n
        months["s:" + month] = months.get("s:" + month, 0) + 1

    now = day_number(today)
    songs: dict[str, str] = {}
    win: dict[str, str] = {}
    bylast: dict[str, int] = {}
    byfirst: dict[str, int] = {}
    vel: dict[str, int] = {}
    bust: dict[str, int] = {}
    for song, song_plays in by_song.items():
        song_plays.sort()  # (date, performance_id): the order of ``songplays``
        days = [dates[date][0] for date, _, _ in song_plays]
        songs[song] = f"{len(song_plays)}{SEP}{song_plays[-1][2]}"
        bylast[song] = dates[song_plays[-1][0]][1]
        byfirst[song] = dates[song_plays[0][0]][1]
        counts = [0, 0, 0]
        for d in days:
            age = now - d
            if 0 <= age:
                for i, w in enumerate(WINDOWS):
                    if age < w:
                        counts[i] += 1
        if any(counts):
            win[song] = SEP.join(str(n) for n in counts)
        if days[0] <= now:
            vel[song] = -(3 * counts[0] + 2 * counts[1] + counts[2])
        for i in range(1, len(days)):
            if days[i] - days[i - 1] >= bust_days:
                bust[song_plays[i][1]] = dates[song_plays[i][0]][1]

    return VerticalState(
        hashes={
            "perf": perf,
            "showperfs": {show: str(n) for show, n in showperfs.items()},
            "months": {name: str(n) for name, n in months.items()},
            "songs": songs,
            "win": win,
            "meta": {"today": today.isoformat()} if won else {},
        },
        zsets={
            "plays": plays,
            "songplays": songplays,
            "shows": {show: dates[show[:10]][1] for show in showperfs},
            "bylast": bylast,
            "byfirst": byfirst,
            "vel": vel,
            "bust": bust,
        },
    )


def _chunks(pairs: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """Flat argument lists of at most ``n`` pairs each (the flattening runs in C)."""
    flat = iter(chain.from_iterable(pairs))
    while chunk := list(islice(flat, 2 * n)):
        yield chunk


def commands(vkeys: keys.VerticalKeys, state: VerticalState) -> list[tuple[Any, ...]]:
    """The HSET and ZADD commands that write ``state`` into ``vkeys``."""
    targets = vkeys._asdict()
    unknown = (set(state.hashes) | set(state.zsets)) - set(targets)
    assert not unknown, f"keys missing from stats.keys.VerticalKeys: {unknown}"
    out: list[tuple[Any, ...]] = []
    for name, fields in state.hashes.items():
        for chunk in _chunks(fields.items(), WRITE_CHUNK):
            out.append(("HSET", targets[name], *chunk))
    for name, scores in state.zsets.items():
        for chunk in _chunks(zip(scores.values(), scores.keys(), strict=True), WRITE_CHUNK):
            out.append(("ZADD", targets[name], *chunk))
    return out


def _send_packed(client: Any, cmds: list[tuple[Any, ...]]) -> bool:
    """Send ``cmds`` packed by hiredis on one connection; False when that is not possible.

    redis-py's pipeline inspects every argument in Python (a third of a rebuild's time
    goes there); hiredis packs a whole command in C.
    """
    pool = getattr(client, "connection_pool", None)
    if hiredis is None or pool is None:
        return False
    if not pool.connection_class.__module__.startswith("redis."):
        return False  # e.g. fakeredis, whose connections are not sockets
    conn = pool.get_connection()
    try:
        conn.send_packed_command([hiredis.pack_command(cmd) for cmd in cmds])
        for _ in cmds:
            conn.read_response()
    except BaseException:
        conn.disconnect()  # replies may be left unread: the connection is spoilt
        raise
    finally:
        pool.release(conn)
    return True


def write(client: Any, vkeys: keys.VerticalKeys, state: VerticalState) -> set[str]:
    """Write ``state`` into ``vkeys`` (fresh keys); returns the names of the keys written."""
    cmds = commands(vkeys, state)
    if not _send_packed(client, cmds):
        pipe = client.pipeline(transaction=False)
        for cmd in cmds:
            pipe.execute_command(*cmd)
        pipe.execute()
    return state.names()
