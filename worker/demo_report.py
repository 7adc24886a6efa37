"""The report ``statsworker demo`` prints: band totals, per band what is hot, due, back and new,
and per creator totals, hashtags and a chart of daily views."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.columns import Columns
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from worker.demo import BandReport, CreatorReport, DemoResult

CHART_HEIGHT = 6
"""Rows of the views chart; each row is split in eighths by the block characters."""

_BLOCKS = " ▁▂▃▄▅▆▇█"


def _n(value: int) -> str:
    return f"{value:,}"


def _table(title: str, *headers: str, wrap_first: bool = True) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    for i, header in enumerate(headers):
        first = i == 0
        table.add_column(
            header, justify="left" if first else "right", no_wrap=not (first and wrap_first)
        )
    return table


def _totals(bands: Sequence[BandReport]) -> Table:
    table = _table(
        "Bands",
        *("band", "shows", "songs", "plays", "per show", "first show", "last show"),
        wrap_first=False,
    )
    for b in bands:
        s = b.stats
        table.add_row(
            b.name,
            _n(s.total_shows),
            _n(s.unique_songs_played),
            _n(s.total_performances),
            f"{s.avg_songs_per_show:.1f}",
            str(s.first_show or "-"),
            str(s.last_show or "-"),
        )
    return table


def _band(b: BandReport) -> Columns:
    hot = _table("Hottest (score 3·30d + 2·90d + 1y)", "song", "30d", "90d", "1y", "score")
    for r in b.hottest:
        hot.add_row(
            r.song_title,
            str(r.plays_last_30_days),
            str(r.plays_last_90_days),
            str(r.plays_last_year),
            str(r.velocity_score),
        )
    due = _table("Most overdue (5+ plays)", "song", "last played", "days", "shows")
    for g in b.overdue:
        due.add_row(
            g.song_title, str(g.last_played), _n(g.days_since_played), _n(g.shows_since_played)
        )
    back = _table("Bustouts, last year (gap 180+ days)", "song", "date", "gap days", "shows")
    for x in b.bustouts:
        back.add_row(x.song_title, str(x.bustout_date), _n(x.gap_days), _n(x.gap_shows))
    new = _table("Debuts, last year", "song", "debut", "plays since")
    for d in b.debuts:
        new.add_row(d.song_title, str(d.debut_date), str(d.times_played_since))
    if not b.bustouts:
        back.add_row("(none)", "", "", "")
    if not b.debuts:
        new.add_row("(none)", "", "")
    return Columns([hot, due, back, new], padding=(1, 3))


def chart(values: Sequence[int], height: int = CHART_HEIGHT) -> list[str]:
    """A column chart of ``values``, one character per value, ``height`` rows, top row first."""
    top = max(values, default=0)
    eighths = [round(v / top * height * 8) if top else 0 for v in values]
    rows = []
    for row in range(height - 1, -1, -1):
        base = row * 8
        rows.append("".join(_BLOCKS[min(8, max(0, e - base))] for e in eighths).rstrip())
    return rows


def _title(name: str, slug: str) -> str:
    return f"[bold]{name}[/] ({slug})" if name != slug else f"[bold]{slug}[/]"


def _creator(c: CreatorReport, days: int) -> Group:
    m = c.overview.metrics
    line = Text.assemble(
        (_n(m.total_videos), "bold"),
        " videos · ",
        (_n(m.total_views), "bold"),
        " views · ",
        (_n(m.total_likes), "bold"),
        " likes · ",
        (_n(m.total_new_followers), "bold"),
        " new followers · mean engagement ",
        (f"{m.avg_engagement_rate:.2f} %", "bold"),
    )
    rows: list[Any] = [line]
    if c.hashtags.top_hashtags:
        tags = Text("top hashtags: ")
        for i, h in enumerate(c.hashtags.top_hashtags):
            tags.append(("" if i == 0 else " · ") + f"#{h.hashtag} ")
            tags.append(_n(h.total_views), "bold")
            tags.append(f" views in {h.video_count} video{'' if h.video_count == 1 else 's'}")
        rows.append(tags)
    by_day = {p.date: p.views for p in c.series.data_points}
    values = [by_day.get(c.chart_start + dt.timedelta(days=i), 0) for i in range(days)]
    last = c.chart_start + dt.timedelta(days=days - 1)
    rows.append(
        Text(
            f"views per posting day, {c.chart_start} to {last} "
            f"(highest {_n(max(values, default=0))}, {len(c.series.data_points)} posting days):"
        )
    )
    rows.extend(Text(r, style="cyan") for r in chart(values))
    rows.append(Text("─" * days, style="dim"))
    return Group(*rows)


def render(result: DemoResult, out: Console) -> None:
    """Print the report of a demo run on ``out``."""
    from worker.demo import CHART_DAYS

    out.rule("[bold]statsworker demo")
    out.print(
        f"{_n(result.published)} events from {result.source} → {_n(result.jobs)} queued jobs → "
        f"an in-process worker → state in Redis (fakeredis), event log in SQLite: "
        f"{result.seconds:.1f} s. Reads are as of [bold]{result.today}[/], the day after the "
        f"last day of the data.",
        highlight=False,
    )
    for name, skipped in result.skipped.items():
        if skipped:
            out.print(
                f"[yellow]{len(skipped)} row(s) of {name} skipped[/], first: {skipped[0]}",
                highlight=False,
                soft_wrap=True,  # a path is not cut into lines
            )
    if result.failed_jobs:
        out.print(f"[red]{result.failed_jobs} job(s) failed[/]: see `statsworker failed`")
    if result.bands:
        out.print()
        out.print(_totals(result.bands))
    for band in result.bands:
        out.print()
        out.rule(_title(band.name, band.slug), align="left")
        out.print(_band(band))
    if len(result.creators) < result.creators_total:
        out.print()
        out.print(
            f"{_n(result.creators_total)} creators; the {len(result.creators)} with the most "
            "videos are shown."
        )
    for creator in result.creators:
        out.print()
        out.rule(_title(creator.name, creator.slug), align="left")
        out.print(_creator(creator, CHART_DAYS), highlight=False)
