"""Builds a vertical's setlist state from its logged events in one pass, for ``rebuild``.

The incremental script (``stats/setlist_apply.lua``) keeps every key exact event by
event, which costs tens of microseconds per event. A rebuild knows the whole log, so
it picks each performance's winning event first, derives every key from the winners
and writes each key with a few bulk commands, sent while the next are being made so
that Redis stores one chunk while Python builds the next: several times faster. The
result is the state the script would reach from the same events, key for key and
byte for byte; ``tests/test_rebuild_verify.py`` pins that against the script on random
streams, so a change to the key schema that is not made here too fails there.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
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
"""Separates the fields of a ``perf`` record, ``songs`` and ``win`` value (as in the scripts)."""

RECORD_SEP = "\x1e"
"""Separates the records of a ``perf`` bucket."""

WINDOWS = (30, 90, 365)
"""The windows of ``win``, in days, in the order they are stored."""

WRITE_CHUNK = 10_000
"""Hash fields or sorted-set members sent by one command."""

Command = tuple[Any, ...]

Winner = tuple[str, str | None]
"""A performance's winning version and its ``fields`` (None when a retraction won)."""


def winners(
    batches: Iterable[Sequence[PerformanceRow]],
    recent_from: int | None = None,
    recent: set[int] | None = None,
    titles: dict[str, str] | None = None,
) -> dict[str, Winner]:
    """performance_id -> its winning version and ``fields`` (None for a retraction).

    Args:
        recent_from, recent: the ``seq`` of each row numbered ``recent_from`` or more
            is added to ``recent`` (what a rebuild watches for; done here, in the one
            loop over every row).
        titles: filled with each song's least title over every recorded row, winning
            or not (the ``titles`` key).
    """
    won: dict[str, Winner] = {}
    get = won.get
    first = recent_from if recent_from is not None else float("inf")
    seen = recent if recent is not None else set()
    least = titles if titles is not None else {}
    least_get = least.get
    for batch in batches:
        for row in batch:  # by index: the hot loop of a rebuild
            if row[0] >= first:
                seen.add(row[0])
            fields = row[4]  # song, show_id, date, title ("" when it is the song)
            if fields is not None:
                song = fields[: fields.index(FIELD_SEP)]
                title = fields[fields.rindex(FIELD_SEP) + 1 :] or song
                held = least_get(song)
                if held is None or title < held:  # str order = UTF-8 byte order
                    least[song] = title
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


class _Flat:
    """The flat arguments of one key's HSET or ZADD, sent a chunk at a time."""

    def __init__(self, verb: str, key: str) -> None:
        self.verb, self.key = verb, key
        self.args: list[Any] = []

    def full(self) -> bool:
        """Whether a chunk's worth is waiting."""
        return len(self.args) >= 2 * WRITE_CHUNK

    def take(self) -> Iterator[Command]:
        """The command for what is waiting (nothing when nothing is)."""
        if self.args:
            yield (self.verb, self.key, *self.args)
            self.args = []


def _mapping(verb: str, key: str, pairs: Iterable[tuple[Any, Any]]) -> Iterator[Command]:
    flat = _Flat(verb, key)
    for a, b in pairs:
        flat.args += (a, b)
        if flat.full():
            yield from flat.take()
    yield from flat.take()


def commands(
    won: dict[str, Winner],
    vkeys: keys.VerticalKeys,
    today: dt.date,
    titles: dict[str, str],
    bust_days: int = keys.BUSTOUT_INDEX_DAYS,
) -> Iterator[Command]:
    """The HSET and ZADD commands that write the state of a vertical whose performances'
    winning events are ``won`` into ``vkeys`` (fresh keys), as they are made; ``titles``
    is each song's least title (from :func:`winners`)."""
    if not won:
        return
    for pinned in (vkeys.songs, vkeys.win, vkeys.titles):  # first: the rest go to a hash table
        yield ("HSET", pinned, keys.PIN_FIELD, keys.PIN_TEXT)
    yield from _mapping("HSET", vkeys.titles, titles.items())
    dates = _Dates()
    nbuckets = keys.perf_buckets(len(won))
    bucket_of, pid_hash, stored = keys.bucket_of, keys.pid_hash, keys.stored_version
    buckets: dict[int, list[str]] = defaultdict(list)
    showplays: dict[str, list[str]] = defaultdict(list)
    show_counts: dict[str, int] = {}
    show_count_get = show_counts.get
    by_song: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    for pid, (version, fields) in won.items():  # locals only: the hot loop of a rebuild
        bucket = buckets[bucket_of(pid_hash(pid), nbuckets)]
        if fields is None:
            bucket.append(f"{pid}{SEP}{stored(version)}")
        else:
            song, show_id, date, title = fields.split(FIELD_SEP)
            show = f"{date}\0{show_id}"
            bucket.append(f"{pid}{SEP}{stored(version)}{SEP}{show}")
            title = title or song
            showplays[show].append(f"{song}\0{pid}\0{'' if title == titles[song] else title}")
            show_counts[show] = show_count_get(show, 0) + 1
            by_song[song].append((date, pid, title, show_id))
    # str order is UTF-8 byte order: the order the apply script keeps entries in
    yield from _mapping(
        "HSET", vkeys.perf, ((str(b), RECORD_SEP.join(sorted(r))) for b, r in buckets.items())
    )
    yield from _mapping(
        "HSET",
        vkeys.showplays,
        ((show, SEP.join(sorted(entries))) for show, entries in showplays.items()),
    )

    months: dict[str, int] = {}
    for show, n in show_counts.items():
        month = show[:7]
        months["p:" + month] = months.get("p:" + month, 0) + n
        months["s:" + month] = months.get("s:" + month, 0) + 1
        months["y:" + month[:4]] = months.get("y:" + month[:4], 0) + n
    yield from _mapping("ZADD", vkeys.shows, ((dates[s[:10]][1], s) for s in show_counts))
    yield from _mapping("HSET", vkeys.months, ((m, str(n)) for m, n in months.items()))
    if months:
        yield ("SET", vkeys.trend, trend_line(months))
    yield from _songs(by_song, dates, vkeys, day_number(today), bust_days)
    present = sum(show_counts.values())
    counts = ("plays", present) if present else ()
    yield (
        "HSET",
        vkeys.meta,
        "today",
        today.isoformat(),
        "layout",
        keys.SETLIST_LAYOUT,
        "records",
        len(won),
        *counts,
    )


def trend_line(months: dict[str, int]) -> str:
    """The ``trend`` value of a vertical whose ``months`` fields are ``months``."""
    return "".join(
        f"{field[2:6]}{field[7:9]}{n:06d}{months['p:' + field[2:]]:09d}"
        for field, n in sorted(months.items())
        if field.startswith("s:")
    )


def song_dates(plays: Sequence[tuple[str, ...]]) -> tuple[dict[str, str], str]:
    """A song's ``songplays`` chunks (year -> MMDD of each play) and its ``songyears``
    value, from its plays sorted by date (each play's date first)."""
    chunks: dict[str, list[str]] = defaultdict(list)
    for play in plays:
        date = play[0]
        chunks[date[:4]].append(date[5:7] + date[8:10])
    years = "".join(f"{year}{len(days):06d}" for year, days in chunks.items())
    return {year: "".join(days) for year, days in chunks.items()}, years


def _songs(
    by_song: dict[str, list[tuple[str, str, str, str]]],
    dates: _Dates,
    vkeys: keys.VerticalKeys,
    now: int,
    bust_days: int,
) -> Iterator[Command]:
    """What depends on each song's whole history: its play dates, totals, first and
    last play, title (that of the latest play), windows, velocity and the bustout index."""
    songs, win = _Flat("HSET", vkeys.songs), _Flat("HSET", vkeys.win)
    bylast, byfirst = _Flat("ZADD", vkeys.bylast), _Flat("ZADD", vkeys.byfirst)
    vel, bust = _Flat("ZADD", vkeys.vel), _Flat("ZADD", vkeys.bust)
    songplays, songyears = _Flat("HSET", vkeys.songplays), _Flat("HSET", vkeys.songyears)
    for song, song_plays in by_song.items():
        song_plays.sort()  # (date, performance_id): the order plays of a song follow
        days = [dates[date][0] for date, _, _, _ in song_plays]
        chunks, years = song_dates(song_plays)
        for year, chunk in chunks.items():
            songplays.args += (f"{song}\0{year}", chunk)
        songyears.args += (song, years)
        songs.args += (song, f"{len(song_plays)}{SEP}{song_plays[-1][2]}")
        bylast.args += (dates[song_plays[-1][0]][1], song)
        byfirst.args += (dates[song_plays[0][0]][1], song)
        counts = [0, 0, 0]
        for d in days:
            age = now - d
            if 0 <= age:
                for i, w in enumerate(WINDOWS):
                    if age < w:
                        counts[i] += 1
        if any(counts):
            win.args += (song, SEP.join(str(n) for n in counts))
        if days[0] <= now:
            vel.args += (-(3 * counts[0] + 2 * counts[1] + counts[2]), song)
        for i in range(1, len(days)):
            if days[i] - days[i - 1] >= bust_days:
                date, pid, _, show_id = song_plays[i]
                prev = song_plays[i - 1][0]
                bust.args += (dates[date][1], f"{song}\0{show_id}\0{pid}\0{prev}")
        if len(songplays.args) >= 2 * WRITE_CHUNK:
            yield from songplays.take()
    for flat in (songplays, songyears, songs, win, bylast, byfirst, vel, bust):
        while flat.args:  # a song has at most a few thousand plays: chunk once, at the end
            head, flat.args = flat.args[: 2 * WRITE_CHUNK], flat.args[2 * WRITE_CHUNK :]
            yield (flat.verb, flat.key, *head)


def _send_packed(client: Any, cmds: Iterable[Command]) -> int | None:
    """Send ``cmds`` packed by hiredis on one connection as they come, then read the
    replies; None (nothing sent) when that is not possible.

    redis-py's pipeline inspects every argument in Python; hiredis packs a whole
    command in C. Sending each command as soon as it is made lets Redis store it while
    the next is built.
    """
    pool = getattr(client, "connection_pool", None)
    if hiredis is None or pool is None:
        return None
    if not pool.connection_class.__module__.startswith("redis."):
        return None  # e.g. fakeredis, whose connections are not sockets
    conn = pool.get_connection()
    sent = 0
    try:
        for cmd in cmds:
            conn.send_packed_command([hiredis.pack_command(cmd)])
            sent += 1
        for _ in range(sent):
            conn.read_response()
    except BaseException:
        conn.disconnect()  # replies may be left unread: the connection is spoilt
        raise
    finally:
        pool.release(conn)
    return sent


def write(client: Any, cmds: Iterable[Command]) -> int:
    """Send ``cmds`` (from :func:`commands`) to Redis; returns how many were sent."""
    sent = _send_packed(client, cmds)
    if sent is None:
        pipe = client.pipeline(transaction=False)
        for cmd in cmds:
            pipe.execute_command(*cmd)
        sent = len(pipe.execute())
    return sent
