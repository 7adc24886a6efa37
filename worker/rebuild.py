"""``statsworker rebuild``: the Redis state rebuilt from the event log, switched in atomically.

For each vertical and creator in scope:

1. note the log's last ``seq``;
2. build the state from the log under a private staging prefix (setlists with
   ``worker.rebuild_setlists``, videos with the store's own apply fed each video's
   deciding events only), while the live keys keep answering reads;
3. in one MULTI/EXEC, rename each fresh key over its live key and delete the live
   keys that have no fresh counterpart (all keys of a vertical or creator share a
   hash tag, so this is one slot): readers see the old state or the new one, never
   half of either;
4. apply again, through the ordinary incremental path, the events stored after step
   1 that step 2 did not read: a worker may have applied them to the old keys while
   step 2 ran. Rows numbered from the first one logged a minute before the rebuild
   began are watched too, for a publisher whose transaction was still open when the
   replay read (its rows have smaller numbers but commit later). Applying is
   idempotent, so any overlap is harmless.

Verticals and creators that have live state but no event in the log are deleted by a
full rebuild: the state is a function of the log.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from events.schemas import VideoEvent
from stats import keys
from stats.videos import VideoStore
from worker import rebuild_setlists
from worker.connections import Connections
from worker.eventlog import EventLog, LoggedEvent, PerformanceRow, utcnow
from worker.read_ahead import prefetch

log = logging.getLogger(__name__)

TAIL_MARGIN = dt.timedelta(seconds=60)
"""Rows logged this long before a rebuild began are watched for (see step 4 above): a
publisher's transaction lasts far less."""

ALIVE_EVERY_SECONDS = 10.0
"""How often a running rebuild notes in ``rebuilds`` that it is alive."""

STALE_AFTER_SECONDS = 3600.0
"""A rebuild silent this long was stopped (killed, its machine lost): the next rebuild
deletes what it staged. Far past the longest pause between two notes of a live one."""

Row = TypeVar("Row", LoggedEvent, PerformanceRow)

Progress = Callable[[int], None]
"""Called with the number of log rows just read."""


@dataclass
class RebuildReport:
    """What a rebuild did."""

    verticals: int = 0
    creators: int = 0
    events: int = 0
    tail: int = 0
    removed: int = 0
    left_behind: int = 0
    """Keys deleted that a rebuild which stopped (killed) had staged."""
    seconds: float = 0.0

    def add(self, events: int, tail: int, vertical: bool, creator: bool) -> None:
        """Count one scope: rows read, events re-applied, and what it rebuilt or removed."""
        self.events += events
        self.tail += tail
        self.verticals += vertical
        self.creators += creator
        self.removed += not (vertical or creator)

    @property
    def rate(self) -> float:
        """Log rows replayed per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _noop(_n: int) -> None:
    pass


def _switch(
    client: Any, live: tuple[str, ...], fresh: tuple[str, ...], old: tuple[str, ...]
) -> None:
    """Put every fresh key in place of its live key, atomically; live keys without a
    fresh one go. Replaced keys are renamed aside in the same MULTI and UNLINKed after
    it, so Redis frees them in the background: a RENAME over a key, like a DEL, would
    free it on the thread that serves every client, for as long as a big vertical's
    keys take to free."""
    check = client.pipeline(transaction=False)
    for key in fresh:
        check.exists(key)
    exists = check.execute()
    pipe = client.pipeline(transaction=True)
    aside: list[bool] = []
    for live_key, fresh_key, old_key, found in zip(live, fresh, old, exists, strict=True):
        pipe.rename(live_key, old_key)  # fails, harmlessly, when there is no live key
        aside.append(True)
        if found:
            pipe.rename(fresh_key, live_key)
            aside.append(False)
    for result, is_aside in zip(pipe.execute(raise_on_error=False), aside, strict=True):
        if isinstance(result, Exception) and not (is_aside and "no such key" in str(result)):
            raise result
    client.unlink(*old)


def scopes(
    conns: Connections, eventlog: EventLog, vertical: str | None, creator: str | None
) -> tuple[list[str], list[str]]:
    """The verticals and creators a rebuild or verify covers: the one named, or (neither
    given) every one that the log or Redis knows, sorted."""
    if vertical is not None or creator is not None:
        return ([vertical] if vertical else []), ([creator] if creator else [])
    verticals = set(eventlog.verticals()) | set(conns.setlists.verticals())
    creators = set(eventlog.creators()) | set(conns.videos.creators())
    return sorted(verticals), sorted(creators)


class Rebuilder:
    """Rebuilds the state behind ``conns`` from ``eventlog``."""

    def __init__(
        self, conns: Connections, eventlog: EventLog, progress: Progress | None = None
    ) -> None:
        self.conns = conns
        self.client = conns.state
        self.prefix = conns.settings.key_prefix
        self.eventlog = eventlog
        self.progress = progress or _noop
        self.token = uuid.uuid4().hex[:12]
        self.staging = keys.staging_prefix(self.prefix, self.token)
        self.replaced = keys.staging_prefix(self.prefix, f"{self.token}.old")
        self.recent_floor: int | None = None
        self._alive_at = 0.0

    def today(self, vertical: str) -> dt.date:
        """The day to keep windowed counters for: never earlier than the live state's."""
        today = self.conns.settings.current_date()
        stored = self.client.hget(keys.vertical_keys(self.prefix, vertical).meta, "today")
        if stored:
            today = max(today, dt.date.fromisoformat(stored))
        return today

    def scopes(self, vertical: str | None, creator: str | None) -> tuple[list[str], list[str]]:
        """The verticals and creators to rebuild (:func:`scopes`)."""
        return scopes(self.conns, self.eventlog, vertical, creator)

    def total(self, verticals: list[str], creators: list[str], everything: bool) -> int:
        """Log rows the rebuild will read (for the progress bar)."""
        if everything:
            return self.eventlog.count()
        return sum(self.eventlog.count(vertical=v) for v in verticals) + sum(
            self.eventlog.count(creator=c) for c in creators
        )

    def run(self, vertical: str | None = None, creator: str | None = None) -> RebuildReport:
        """Rebuild one vertical, one creator, or (neither given) everything."""
        started = time.perf_counter()
        self._alive(now=True)
        try:
            report = RebuildReport(left_behind=self.remove_stale())
            self.recent_floor = self.eventlog.first_seq_since(utcnow() - TAIL_MARGIN)
            verticals, creators = self.scopes(vertical, creator)
            for name in verticals:
                self._vertical(name, report)
            for name in creators:
                self._creator(name, report)
        finally:
            self.client.hdel(keys.rebuilds_key(self.prefix), self.token)
        report.seconds = time.perf_counter() - started
        log.debug(
            "rebuilt %d vertical(s) and %d creator(s) from %d event(s) in %.2f s (%.0f/s)",
            report.verticals,
            report.creators,
            report.events,
            report.seconds,
            report.rate,
        )
        return report

    def _alive(self, now: bool = False) -> None:
        """Note in ``rebuilds`` that this rebuild runs (at most every few seconds)."""
        clock = time.time()
        if now or clock - self._alive_at >= ALIVE_EVERY_SECONDS:
            self.client.hset(keys.rebuilds_key(self.prefix), self.token, f"{clock:.3f}")
            self._alive_at = clock

    def remove_stale(self) -> int:
        """Delete the keys staged by rebuilds that stopped without cleaning up (a kill);
        those of rebuilds still running stay. Returns how many keys went."""
        registry = keys.rebuilds_key(self.prefix)
        # The keys first, the notes after: a rebuild notes itself before it stages
        # anything, so each key found belongs to a token the notes then name.
        staged = list(
            self.client.scan_iter(match=keys.staging_prefix(self.prefix, "*"), count=1000)
        )
        clock = time.time()
        running = {self.token}
        stopped = []
        for token, at in self.client.hgetall(registry).items():
            if clock - float(at) < STALE_AFTER_SECONDS:
                running.add(token)
            else:
                stopped.append(token)
        start = len(keys.staging_prefix(self.prefix, ""))
        stale = [
            key
            for key in staged
            if key[start:].split(":", 1)[0].removesuffix(".old") not in running
        ]
        for i in range(0, len(stale), 1000):
            self.client.unlink(*stale[i : i + 1000])
        if stopped:
            self.client.hdel(registry, *stopped)
        if stale:
            log.warning("removed %d key(s) staged by a rebuild that stopped", len(stale))
        return len(stale)

    def _registry(self, key: str, name: str, present: bool) -> None:
        if present:
            self.client.sadd(key, name)
        else:
            self.client.srem(key, name)

    def _tail(self) -> _Tail:
        """What to watch for while a scope is replayed: rows numbered past the log's end
        now, or logged since the run began (a margin before it, in fact)."""
        first = self.eventlog.max_seq() + 1
        if self.recent_floor is not None:
            first = min(first, self.recent_floor)
        return _Tail(first)

    def _counted(self, batches: Iterator[Sequence[Row]], tail: _Tail) -> Iterator[Sequence[Row]]:
        """``batches``, read ahead, counted and shown on the progress bar."""
        for batch in prefetch(batches):
            self._alive()
            yield batch
            tail.read += len(batch)
            self.progress(len(batch))

    def _noted(self, batches: Iterator[Sequence[Row]], tail: _Tail) -> Iterator[Row]:
        """The rows of ``batches``, noting the recent ones (see :meth:`_catch_up`)."""
        for batch in self._counted(batches, tail):
            for row in batch:
                if row.seq >= tail.first:
                    tail.seen.add(row.seq)
            yield from batch

    def _catch_up(
        self, tail: _Tail, vertical: str | None = None, creator: str | None = None
    ) -> list[Any]:
        """Events stored since the replay began that the replay did not read."""
        if self.eventlog.count_from(tail.first, vertical=vertical, creator=creator) == len(
            tail.seen
        ):
            return []  # the usual case: nothing was logged meanwhile
        missed = [
            seq
            for seq in self.eventlog.seqs_from(tail.first, vertical=vertical, creator=creator)
            if seq not in tail.seen
        ]
        return [row.event() for row in self.eventlog.events_at(missed)]

    def _vertical(self, vertical: str, report: RebuildReport) -> None:
        live = keys.vertical_keys(self.prefix, vertical)
        fresh = keys.vertical_keys(self.staging, vertical)
        today = self.today(vertical)
        tail = self._tail()
        try:
            titles: dict[str, str] = {}
            won = rebuild_setlists.winners(
                self._counted(self.eventlog.iter_performances(vertical), tail),
                recent_from=tail.first,
                recent=tail.seen,
                titles=titles,
            )
            cmds = rebuild_setlists.commands(won, fresh, today, titles)
            self._alive()
            rebuild_setlists.write(self.client, cmds)
            self._alive()
            old = keys.vertical_keys(self.replaced, vertical)
            # Keys of an earlier layout have no fresh key: they go.
            retired = keys.retired_vertical_keys(self.prefix, vertical)
            _switch(
                self.client,
                (*live, *retired),
                (*fresh, *keys.retired_vertical_keys(self.staging, vertical)),
                (*old, *keys.retired_vertical_keys(self.replaced, vertical)),
            )
        finally:
            self.client.delete(*fresh)
        self._registry(keys.verticals_key(self.prefix), vertical, bool(won))
        late = self._catch_up(tail, vertical=vertical)
        if late:
            self.conns.setlists.apply(late, self.conns.settings.current_date())
        report.add(tail.read, len(late), vertical=bool(won), creator=False)

    def _creator(self, creator: str, report: RebuildReport) -> None:
        live = keys.creator_keys(self.prefix, creator)
        fresh = keys.creator_keys(self.staging, creator)
        tail = self._tail()
        try:
            deciding = deciding_video_events(
                self._noted(self.eventlog.iter_events(creator=creator), tail)
            )
            if deciding:
                VideoStore(self.client, self.staging).apply(deciding)
            old = keys.creator_keys(self.replaced, creator)
            _switch(self.client, tuple(live), tuple(fresh), tuple(old))
        finally:
            self.client.delete(*fresh, keys.creators_key(self.staging))
        self._registry(keys.creators_key(self.prefix), creator, bool(deciding))
        late = self._catch_up(tail, creator=creator)
        if late:
            self.conns.videos.apply(late)
        report.add(tail.read, len(late), vertical=False, creator=bool(deciding))


@dataclass
class _Tail:
    first: int
    """Rows numbered this or more were stored after the replay of the scope began, or
    just before (a superset: re-applying an event is harmless)."""
    seen: set[int] = field(default_factory=set)
    read: int = 0


def deciding_video_events(rows: Iterable[LoggedEvent]) -> list[VideoEvent]:
    """Per video, the events its state depends on: the latest ``video.posted``, the
    latest ``video.deleted`` and the latest ``video.metrics_updated``.

    A video's record keeps only the greatest version of each kind (SPEC section 2), so
    these give the state the whole stream gives, with at most three events a video.
    """
    latest: dict[tuple[str, str], LoggedEvent] = {}
    for row in rows:
        key = (row.entity_id, row.type)
        current = latest.get(key)
        if current is None or row.version > current.version:
            latest[key] = row
    return [row.event() for row in latest.values()]  # type: ignore[misc]


def rebuild(
    conns: Connections,
    eventlog: EventLog,
    vertical: str | None = None,
    creator: str | None = None,
    progress: Progress | None = None,
) -> RebuildReport:
    """Rebuild the Redis state of one vertical, one creator or everything from the log."""
    return Rebuilder(conns, eventlog, progress).run(vertical, creator)
