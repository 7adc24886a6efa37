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
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from stats import keys
from stats.dates import day_number
from worker.eventlog import PerformanceRow

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


Winner = tuple[str, Any]
"""A performance's winning version and its :class:`PerformanceRow` (None when a
retraction won; a recorded row always has its song, show and date)."""


def winners(rows: Iterable[PerformanceRow]) -> dict[str, Winner]:
    """performance_id -> its winning version and row (None when it is a retraction)."""
    won: dict[str, Winner] = {}
    get = won.get
    for row in rows:
        pid, version = row[1], row[2]  # by index: the hot loop of a rebuild
        current = get(pid)
        if current is None or version > current[0]:  # str order = UTF-8 byte order
            won[pid] = (version, row if row[3] else None)
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
    showperfs: Counter[str] = Counter()
    months: Counter[str] = Counter()
    by_song: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for pid, (version, row) in won.items():
        if row is None:
            perf[pid] = f"{version}{SEP}X"
            continue
        song, show_id, date, title = row[4], row[5], row[6], row[7] or row[4]
        perf[pid] = f"{version}{SEP}R{SEP}{song}{SEP}{show_id}{SEP}{date}{SEP}{title}"
        plays[pid] = dates[date][1]
        songplays[f"{song}\0{date}\0{pid}"] = 0
        showperfs[f"{date}\0{show_id}"] += 1
        by_song[song].append((date, pid, title))
    for show, n in showperfs.items():
        months["p:" + show[:7]] += n
        months["s:" + show[:7]] += 1

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


def _chunks(mapping: dict[str, Any]) -> Iterator[list[tuple[str, Any]]]:
    items = list(mapping.items())
    for start in range(0, len(items), WRITE_CHUNK):
        yield items[start : start + WRITE_CHUNK]


def commands(vkeys: keys.VerticalKeys, state: VerticalState) -> list[tuple[Any, ...]]:
    """The HSET and ZADD commands that write ``state`` into ``vkeys``."""
    targets = vkeys._asdict()
    unknown = (set(state.hashes) | set(state.zsets)) - set(targets)
    assert not unknown, f"keys missing from stats.keys.VerticalKeys: {unknown}"
    out: list[tuple[Any, ...]] = []
    for name, fields in state.hashes.items():
        for chunk in _chunks(fields):
            out.append(("HSET", targets[name], *(x for pair in chunk for x in pair)))
    for name, scores in state.zsets.items():
        for chunk in _chunks(scores):
            out.append(("ZADD", targets[name], *(x for m, s in chunk for x in (s, m))))
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
