"""Benchmark data: the real Grateful Dead setlists, scaled by date-shifted copies.

Scale 1 is the real data (35,425 performances). Scale ``s > 1`` adds ``ceil(s) - 1``
copies whose dates are shifted so that every copy stays within the years events allow
(1900-2100); copy ``k`` gets show and performance ids suffixed ``~k``. By default all
copies belong to the one band, so the band's own history grows with the scale (the case
where a SQL read grows with the data); ``bands > 1`` deals the copies round-robin to
renamed bands (``grateful-dead-2`` ...), which keeps each band's density real (the
benchmark itself uses one band).
A scale below 1 keeps the first shows only (the quick mode).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from events.fields import MAX_YEAR, MIN_YEAR, slugify

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The real data sets beside the checkout (``../shared/data``)."""

GD_FILE = "grateful_dead_setlists.csv"
VIDEO_FILE = "youtube_trending_snapshots.csv"
VERTICAL = "grateful-dead"
"""The band every read of the benchmark asks about."""


@dataclass(frozen=True)
class Play:
    """One row of the real setlist data."""

    show_id: str
    show_date: dt.date
    song: str
    song_title: str
    venue: str
    set_name: str
    position: int


class ScaledPlay(NamedTuple):
    """A play of one scaled copy: the band it belongs to and its shifted ids and date."""

    vertical: str
    performance_id: str
    show_id: str
    show_date: dt.date
    song: str
    song_title: str
    venue: str
    set_name: str
    position: int
    event_id: str


def data_path(name: str) -> Path:
    """A file of ``../shared/data``; fails loudly when the data set is missing."""
    path = DATA_DIR / name
    if not path.exists():
        raise SystemExit(f"bench: data set {path} is missing")
    return path


def load_plays() -> list[Play]:
    """The real Grateful Dead plays in file order (by date, then position)."""
    out: list[Play] = []
    with data_path(GD_FILE).open(encoding="utf-8", newline="") as stream:
        for row in csv.DictReader(stream):
            title = (row["song_title"] or "").strip()
            song = slugify(title)
            if not song or not row["show_date"]:
                continue
            out.append(
                Play(
                    show_id=row["show_id"],
                    show_date=dt.date.fromisoformat(row["show_date"]),
                    song=song,
                    song_title=title,
                    venue=row.get("venue") or "",
                    set_name=row.get("set_name") or "",
                    position=int(row.get("position") or 0),
                )
            )
    return out


def copy_shifts(plays: list[Play], copies: int) -> list[int]:
    """Day shifts of each copy: copy 0 is the real data, the others spread over 1900-2100."""
    first = min(p.show_date for p in plays)
    last = max(p.show_date for p in plays)
    lo = (dt.date(MIN_YEAR, 1, 1) - first).days
    hi = (dt.date(MAX_YEAR, 12, 31) - last).days
    if copies == 1:
        return [0]
    steps = max(copies - 2, 1)
    return [0] + [lo + (k - 1) * (hi - lo) // steps for k in range(1, copies)]


def scaled_plays(plays: list[Play], scale: float, bands: int = 1) -> Iterator[ScaledPlay]:
    """The plays of ``scale`` times the real data (see the module docstring)."""
    if scale < 1:
        # The first shows only: a contiguous, realistic slice of the history.
        plays = plays[: max(1, int(len(plays) * scale))]
        copies = 1
    else:
        copies = math.ceil(scale)
    wanted = int(len(plays) * scale) if scale >= 1 else len(plays)
    shifts = copy_shifts(plays, copies)
    emitted = 0
    for k, shift in enumerate(shifts):
        vertical = VERTICAL if k % bands == 0 else f"{VERTICAL}-{k % bands + 1}"
        suffix = "" if k == 0 else f"~{k}"
        delta = dt.timedelta(days=shift)
        for i, p in enumerate(plays):
            if emitted >= wanted:
                return
            show_id = p.show_id + suffix
            yield ScaledPlay(
                vertical=vertical,
                performance_id=f"{show_id}/{p.set_name}/{p.position}",
                show_id=show_id,
                show_date=p.show_date + delta,
                song=p.song,
                song_title=p.song_title,
                venue=p.venue,
                set_name=p.set_name,
                position=p.position,
                event_id=f"gd{k}-{i}",
            )
            emitted += 1


def scaled_last_date(plays: list[Play], scale: float) -> dt.date:
    """The latest show date at ``scale``: the benchmark's ``today`` for that data."""
    if scale < 1:
        return plays[max(1, int(len(plays) * scale)) - 1].show_date
    return max(p.show_date for p in plays) + dt.timedelta(
        days=max(copy_shifts(plays, math.ceil(scale)))
    )


def occurred_at(play: ScaledPlay) -> str:
    """When the event was recorded at its source: the evening of the show."""
    return f"{play.show_date.isoformat()}T23:00:00Z"


def event_dict(play: ScaledPlay) -> dict[str, Any]:
    """The ``performance.recorded`` event of a play, as JSON data (what a publisher gets)."""
    return {
        "type": "performance.recorded",
        "event_id": play.event_id,
        "occurred_at": occurred_at(play),
        "vertical": play.vertical,
        "performance_id": play.performance_id,
        "show_id": play.show_id,
        "show_date": play.show_date.isoformat(),
        "song": play.song,
        "song_title": play.song_title,
        "venue": play.venue[:200],
        "set": play.set_name[:50],
        "position": play.position,
    }


def last_date(plays: list[ScaledPlay]) -> dt.date:
    """The latest show date: the benchmark's ``today`` for that data."""
    return max(p.show_date for p in plays)


def video_events() -> list[dict[str, Any]]:
    """The real trending-video snapshots as events: first snapshot posts, later ones update."""
    rows: list[dict[str, str]] = []
    with data_path(VIDEO_FILE).open(encoding="utf-8", newline="") as stream:
        rows.extend(csv.DictReader(stream))
    rows.sort(key=lambda r: (r["channel_or_creator"], r["video_id"], r["snapshot_date"]))
    seen: set[tuple[str, str]] = set()
    out: list[dict[str, Any]] = []
    for n, row in enumerate(rows):
        creator = slugify(row["channel_or_creator"])
        if not creator:
            continue
        key = (creator, row["video_id"])
        counts = {
            f: int(row[f] or 0)
            for f in ("views", "likes", "comments", "shares", "bookmarks", "new_followers")
        }
        common = {
            "event_id": f"yt-{n}",
            "occurred_at": f"{row['snapshot_date']}T12:00:00Z",
            "creator": creator,
            "video_id": row["video_id"],
            **counts,
        }
        if key in seen:
            out.append({"type": "video.metrics_updated", **common})
        else:
            seen.add(key)
            out.append({"type": "video.posted", "date_posted": row["date_posted"], **common})
    return out
