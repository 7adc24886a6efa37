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
perf        hash   performance_id -> winning event: ``version``, then ``R`` (present)
                   with song, show_id, show_date, song_title; or ``X`` (retracted).
                   Fields are separated by the byte 0x1F. ``version`` is the UTC
                   nanosecond timestamp (21 digits) + ``|`` + event_id.
showplays   hash   ``date\\0show_id`` -> the show's present performances, each written
                   ``song\\0performance_id``, sorted bytewise and joined by 0x1F
songplays   zset   ``song\\0date\\0performance_id``, all scores 0: lexical order is
                   (song, date, performance_id), so one song's plays are one range
shows       zset   ``date\\0show_id`` scored by show date: shows with >= 1 performance
showperfs   hash   ``date\\0show_id`` -> number of present performances
months      hash   ``p:YYYY-MM`` -> performances, ``s:YYYY-MM`` -> shows in that month,
                   ``y:YYYY`` -> performances in that year
songs       hash   song -> ``total_plays 0x1F song_title`` over all present plays
bylast      zset   song scored by the date of its last play
byfirst     zset   song scored by the date of its first play (debut)
win         hash   song -> ``p30 0x1F p90 0x1F p365``: plays in the 30/90/365 days
                   ending on the date stored in ``meta``/``today``
vel         zset   song scored by ``-(3*p30 + 2*p90 + p365)`` for songs played on or
                   before ``today``; ascending order is the velocity ranking
meta        hash   ``today`` -> the date (YYYY-MM-DD) windowed counters are kept for;
                   ``plays`` -> present performances (absent when there are none);
                   ``layout`` -> :data:`SETLIST_LAYOUT`, the layout the keys are in
bust        zset   performance_id scored by its show date, for the plays whose
                   previous play of the same song lies at least 180 days earlier
                   (``BUSTOUT_INDEX_DAYS``): the candidates of a bustout read
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

from typing import NamedTuple

BUSTOUT_INDEX_DAYS = 180
"""Plays after a gap of at least this many days are indexed in ``bust``; a bustout read
with a smaller ``gap_threshold`` scans the window's plays instead."""


SETLIST_LAYOUT = "2"
"""The layout of a vertical's keys, kept in ``meta``/``layout`` (the scripts hold the same
value). The scripts refuse state in another layout; ``statsworker rebuild`` rewrites it.
Layout 1 (no ``layout`` field) kept a ``plays`` sorted set where ``showplays`` is now."""

RETIRED_VERTICAL_KEYS = ("plays",)
"""Keys of earlier layouts, deleted by a rebuild of the vertical."""


class VerticalKeys(NamedTuple):
    """The keys of one vertical, in the order the setlist scripts take them as KEYS."""

    perf: str
    showplays: str
    songplays: str
    shows: str
    showperfs: str
    months: str
    songs: str
    bylast: str
    byfirst: str
    win: str
    vel: str
    meta: str
    bust: str


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
