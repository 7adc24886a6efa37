"""Every Redis key statsworker uses; no key string is built anywhere else.

All keys of one vertical share the hash tag ``{v:<vertical>}`` and all keys of one
creator share ``{c:<creator>}``, so each script touches a single Redis Cluster slot.
``P`` is the configurable prefix (default ``sw``). Dates are ``YYYY-MM-DD``; sorted-set
scores that are dates are written ``YYYYMMDD`` (``19770508``), so ``redis-cli`` output
reads as a date and score ranges are date ranges.

Setlists, per vertical ``V`` (``P:{v:V}:<name>``):

==========  =====  ===============================================================
name        type   holds
==========  =====  ===============================================================
perf        hash   the record of every performance, in buckets: field ``n`` (a decimal
                   number) -> records joined by the byte 0x1E, in byte order; a record
                   is ``performance_id 0x1F version 0x1F date\\0show_id`` for a present
                   performance, ``performance_id 0x1F version`` for a retracted one.
                   ``version`` is :func:`stored_version`: the event's UTC nanosecond
                   timestamp in 12 sortable base-64 digits, then its event_id. Bucket of
                   a performance: :func:`perf_bucket`
showplays   hash   ``date\\0show_id`` -> the show's present performances, each written
                   ``song\\0performance_id\\0song_title`` (title empty when it is the
                   song's ``titles`` entry), sorted bytewise and joined by 0x1F
songplays   hash   ``song\\0YYYY`` -> the song's plays in that year: the ``MMDD`` of each,
                   ascending and concatenated (a day with two plays is there twice)
songyears   hash   song -> ``YYYY`` and a 6-digit play count for each year it was played
                   in, ascending and concatenated
shows       zset   ``date\\0show_id`` scored by show date: shows with >= 1 performance
months      hash   ``p:YYYY-MM`` -> performances, ``s:YYYY-MM`` -> shows in that month,
                   ``y:YYYY`` -> performances in that year
songs       hash   song -> ``total_plays 0x1F song_title`` over all present plays; and
                   :data:`PIN_FIELD`, which keeps the hash a hash table
bylast      zset   song scored by the date of its last play
byfirst     zset   song scored by the date of its first play (debut)
win         hash   song -> ``p30 0x1F p90 0x1F p365``: plays in the 30/90/365 days
                   ending on the date stored in ``meta``/``today``; and :data:`PIN_FIELD`
vel         zset   song scored by ``-(3*p30 + 2*p90 + p365)`` for songs played on or
                   before ``today``; ascending order is the velocity ranking
meta        hash   ``today`` -> the date (YYYY-MM-DD) windowed counters are kept for;
                   ``plays`` -> present performances (absent when there are none);
                   ``layout`` -> :data:`SETLIST_LAYOUT`, the layout the keys are in;
                   ``records`` -> records in ``perf`` (present and retracted)
bust        zset   ``song\\0show_id\\0performance_id\\0previous play's date`` scored by
                   its show date, for the plays whose previous play of the same song
                   (by date, then performance_id) lies at least 180 days earlier
                   (``BUSTOUT_INDEX_DAYS``): the candidates of a bustout read
titles      hash   song -> the least title (bytewise) of all its recorded events, retracted
                   and superseded ones too: the title ``showplays`` leaves out. A new
                   least title spells the old one out in every entry of the song that
                   left it out: one pass over the song's plays, once per new least
                   title; and :data:`PIN_FIELD`
trend       string per month with a show, ascending: ``YYYYMM``, its shows in 6 digits
                   and its performances in 9 (21 bytes a month): what ``months`` says,
                   in the form a trends read takes whole
==========  =====  ===============================================================

Videos, per creator ``C`` (``P:{c:C}:<name>``):

==========  =====  ===============================================================
video       hash   video_id -> record: posted, deleted and metrics versions, static
                   fields and the winning metrics (fields separated by 0x1F)
days        zset   date_posted scored YYYYMMDD, while >= 1 present video has it
day         hash   ``date:<field>`` -> sum of that field over the present videos
                   posted that day; fields: n (videos), views, likes, comments,
                   shares, bookmarks, new_followers, rh and rl (engagement-rate sum
                   in units of 1e-7 percent, split as rh * 10^12 + rl)
totals      hash   the same fields summed over all present videos
dow         hash   ``<weekday 0-6>:<field>`` -> the same fields per posting weekday
tags        hash   ``<hashtag>:<field>`` -> the same fields per hashtag
tagviews    zset   hashtag scored by ``-total_views`` (ascending = most viewed)
==========  =====  ===============================================================

Registries: ``P:verticals`` and ``P:creators`` (sets) name every vertical and
creator with state, for listing, rolling and rebuilding.

Operations: ``P:metrics`` (hash) holds the counters behind ``GET /metrics``:
``applied:<event type>``, ``rejected``, ``batches``, ``apply_seconds`` (sum) and
``apply_le:<bucket>`` (batches whose apply took at most that many seconds, per bucket).
"""

from __future__ import annotations

import base64
from typing import NamedTuple

BUSTOUT_INDEX_DAYS = 180
"""Plays after a gap of at least this many days are indexed in ``bust``; a bustout read
with a smaller ``gap_threshold`` scans the window's plays instead."""


SETLIST_LAYOUT = "3"
"""The layout of a vertical's keys, kept in ``meta``/``layout`` (``stats/setlist_lib.lua``
holds the same value). The scripts refuse state in another layout; ``statsworker
rebuild`` rewrites it. Layout 1 (no ``layout`` field) kept a ``plays`` sorted set where
``showplays`` is now; layout 2 kept one ``perf`` field per performance, a
``songplays`` sorted set of ``song\\0date\\0performance_id`` and a ``showperfs`` hash of
each show's count of performances (the length of its ``showplays`` entry now)."""

PIN_FIELD = "~hashtable"
"""A field that ``songs``, ``win`` and ``titles`` hold beside their songs (no slug starts
with ``~``), valued :data:`PIN_TEXT`, set by every apply call and by a rebuild.

Redis keeps a hash of at most ``hash-max-listpack-entries`` fields (512 by default),
each value at most ``hash-max-listpack-value`` bytes (64), as a listpack: one block
searched field by field. These three hold a field per song, and a band has a few
hundred songs, so each lookup walked half of them. With the 435 songs of the real
Grateful Dead data (callgrind, instructions in Redis), the pin took a gaps read from
6.87 to 3.40 million, velocity from 2.93 to 1.51, bustouts from 3.51 to 2.92, and an
applied event from 179,720 to 168,013. One value longer than the limit keeps a hash a
hash table, through restarts too: Redis never turns one back into a listpack, and
loads a hash from disk as a listpack only when every value fits. Readers skip the
field; ``stats`` counts songs without it."""

PIN_TEXT = (
    "keeps this hash in the hashtable encoding of Redis (a value over"
    " hash-max-listpack-value bytes): a lookup by song stays O(1) at any number of songs"
)
"""The value of :data:`PIN_FIELD` (``stats/setlist_lib.lua`` holds the same text)."""

PERF_BUCKET_LOAD = 16
"""Records per ``perf`` bucket, on average: the buckets number ``ceil(records / 16)``."""


def perf_bucket(performance_id: str, records: int) -> int:
    """The ``perf`` bucket of a performance when ``perf`` holds ``records`` records.

    Linear hashing, as ``stats/setlist_apply.lua`` does it: ``h`` is the UTF-8 bytes
    read as a big-endian number, modulo :data:`PID_MODULUS`; with ``n`` buckets and
    ``p`` the largest power of two not above ``n``, the bucket is ``h % p``, or
    ``h % 2p`` when that is below ``n - p`` (that bucket has been split already).
    """
    return bucket_of(pid_hash(performance_id), perf_buckets(records))


_SORTABLE_DIGITS = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_TO_SORTABLE = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", _SORTABLE_DIGITS
)


def stored_version(version: str) -> str:
    """A version (``events.fields.version_of``: 21 digits, ``|``, event_id) as ``perf``
    keeps it: the 21-digit timestamp as 12 base-64 digits whose byte order is their
    numeric order, then the event_id. Byte order is kept; 10 bytes are saved."""
    stamp = int(version[:21]).to_bytes(9, "big")
    return base64.b64encode(stamp).translate(_TO_SORTABLE).decode() + version[22:]


PID_MODULUS = 2654435761
"""A prime whose residues of byte strings spread even ids that differ in a digit or two."""


def pid_hash(performance_id: str) -> int:
    """The number a performance's bucket is chosen by (see :func:`perf_bucket`)."""
    return int.from_bytes(performance_id.encode(), "big") % PID_MODULUS


def perf_buckets(records: int) -> int:
    """How many ``perf`` buckets hold ``records`` records."""
    return max(1, -(-records // PERF_BUCKET_LOAD))


def bucket_of(h: int, n: int) -> int:
    """The bucket of hash ``h`` among ``n`` linear-hashing buckets."""
    p = 1 << (n.bit_length() - 1)
    b = h % p
    return h % (2 * p) if b < n - p else b


RETIRED_VERTICAL_KEYS = ("plays", "showperfs")
"""Keys of earlier layouts, deleted by a rebuild of the vertical."""

TREND_WIDTH = 21
"""Bytes per month in ``trend``: ``YYYYMM``, 6 digits of shows, 9 of performances."""


class VerticalKeys(NamedTuple):
    """The keys of one vertical, in the order the setlist scripts take them as KEYS."""

    perf: str
    showplays: str
    songplays: str
    songyears: str
    shows: str
    months: str
    songs: str
    bylast: str
    byfirst: str
    win: str
    vel: str
    meta: str
    bust: str
    titles: str
    trend: str


class CreatorKeys(NamedTuple):
    """The keys of one creator, in the order the video scripts take them as KEYS."""

    video: str
    days: str
    day: str
    totals: str
    dow: str
    tags: str
    tagviews: str


def vertical_keys(prefix: str, vertical: str) -> VerticalKeys:
    """Keys of ``vertical`` under ``prefix``; all share the ``{v:<vertical>}`` hash tag."""
    base = f"{prefix}:{{v:{vertical}}}:"
    return VerticalKeys(*(base + name for name in VerticalKeys._fields))


def retired_vertical_keys(prefix: str, vertical: str) -> tuple[str, ...]:
    """Keys of ``vertical`` that earlier layouts kept and the current one does not."""
    base = f"{prefix}:{{v:{vertical}}}:"
    return tuple(base + name for name in RETIRED_VERTICAL_KEYS)


def creator_keys(prefix: str, creator: str) -> CreatorKeys:
    """Keys of ``creator`` under ``prefix``; all share the ``{c:<creator>}`` hash tag."""
    base = f"{prefix}:{{c:{creator}}}:"
    return CreatorKeys(*(base + name for name in CreatorKeys._fields))


def verticals_key(prefix: str) -> str:
    """Set of every vertical with state."""
    return f"{prefix}:verticals"


def creators_key(prefix: str) -> str:
    """Set of every creator with state."""
    return f"{prefix}:creators"


def rebuilds_key(prefix: str) -> str:
    """Hash of the rebuilds running: token -> when it last said it was alive (Unix time)."""
    return f"{prefix}:rebuilds"


def staging_prefix(prefix: str, token: str) -> str:
    """Prefix of the fresh keys ``statsworker rebuild`` builds before it switches them in.

    It lies under ``prefix`` (``all_keys_pattern`` covers it) and the keys built under
    it keep their ``{hash tag}``, so each is renamed over its live key in one slot.
    """
    return f"{prefix}:rebuild.{token}"


def all_keys_pattern(prefix: str) -> str:
    """SCAN pattern matching every key under ``prefix``."""
    return f"{prefix}:*"


def metrics_key(prefix: str) -> str:
    """Hash of operational counters shared by every process."""
    return f"{prefix}:metrics"
