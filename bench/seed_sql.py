"""The SQL baselines: the seed-style per-song loop (SQLAlchemy ORM) and one window query.

The schema is what a setlist site keeps in PostgreSQL (bands, songs, shows,
performances, with the indexes such a site has), created in a schema of its own in
database ``test`` and dropped afterwards. Both baselines answer the gaps read (songs
with ``total_plays >= min_plays``, longest since played first, 50 rows) as of a date,
so their answers can be compared with statsworker's.
"""

from __future__ import annotations

import bisect
import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Date, ForeignKey, Integer, String, create_engine, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from bench.data import ScaledPlay

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
"""The shared PostgreSQL (trust auth); the benchmark only ever touches its own schema."""

SCHEMA = "bench"
"""The schema name the models are written against; each run maps it to a private one."""


class Base(DeclarativeBase):
    pass


class Band(Base):
    __tablename__ = "bands"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012 - SQLAlchemy's declared form

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String, unique=True)
    songs: Mapped[list[Song]] = relationship(back_populates="band", lazy="select")
    shows: Mapped[list[Show]] = relationship(back_populates="band", lazy="select")


class Song(Base):
    __tablename__ = "songs"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    band_id: Mapped[int] = mapped_column(ForeignKey(f"{SCHEMA}.bands.id"), index=True)
    slug: Mapped[str] = mapped_column(String)
    title: Mapped[str] = mapped_column(String)
    band: Mapped[Band] = relationship(back_populates="songs", lazy="select")
    performances: Mapped[list[Performance]] = relationship(back_populates="song", lazy="select")


class Show(Base):
    __tablename__ = "shows"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    band_id: Mapped[int] = mapped_column(ForeignKey(f"{SCHEMA}.bands.id"))
    show_key: Mapped[str] = mapped_column(String)
    date: Mapped[dt.date] = mapped_column(Date)
    venue: Mapped[str] = mapped_column(String)
    band: Mapped[Band] = relationship(back_populates="shows", lazy="select")
    performances: Mapped[list[Performance]] = relationship(back_populates="show", lazy="select")


class Performance(Base):
    __tablename__ = "performances"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    show_id: Mapped[int] = mapped_column(ForeignKey(f"{SCHEMA}.shows.id"))
    song_id: Mapped[int] = mapped_column(ForeignKey(f"{SCHEMA}.songs.id"))
    set_name: Mapped[str] = mapped_column(String)
    position: Mapped[int] = mapped_column(Integer)
    show: Mapped[Show] = relationship(back_populates="performances", lazy="select")
    song: Mapped[Song] = relationship(back_populates="performances", lazy="select")


INDEXES = (
    "CREATE INDEX ON {s}.shows (band_id, date)",
    "CREATE INDEX ON {s}.performances (song_id, show_id)",
    "CREATE INDEX ON {s}.performances (show_id)",
)
"""Built after the bulk load (faster than maintaining them row by row)."""


@dataclass(frozen=True)
class GapAnswer:
    """One row of the gaps read, as the baselines compute it."""

    song: str
    total_plays: int
    last_played: dt.date
    shows_since_played: int


class SqlBaseline:
    """A private schema holding the setlist data, and the two ways SQL answers gaps."""

    def __init__(self, url: str = DEFAULT_PG_URL) -> None:
        self.schema = f"swbench_{uuid.uuid4().hex[:10]}"
        self.engine: Engine = create_engine(url, pool_pre_ping=True).execution_options(
            schema_translate_map={SCHEMA: self.schema}
        )
        with self.engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {self.schema}"))
        Base.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            # Rows stream in performance first; the keys only serve the ORM's joins.
            for table, name in conn.execute(
                text(
                    "SELECT conrelid::regclass::text, conname FROM pg_constraint "
                    "WHERE contype = 'f' AND connamespace = CAST(:s AS regnamespace)"
                ),
                {"s": self.schema},
            ):
                conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {name}"))

    def drop(self) -> None:
        """Drop the private schema and everything in it."""
        with self.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))
        self.engine.dispose()

    def load(self, plays: Iterable[ScaledPlay]) -> int:
        """Bulk-load plays with COPY, then index and analyze; returns the performances."""
        bands: dict[str, int] = {}
        songs: dict[tuple[int, str], int] = {}
        shows: dict[tuple[int, str], int] = {}
        band_rows: list[tuple[int, str]] = []
        song_rows: list[tuple[int, int, str, str]] = []
        show_rows: list[tuple[int, int, str, dt.date, str]] = []
        n = 0
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            s = self.schema
            copy_sql = (
                f"COPY {s}.performances (id, show_id, song_id, set_name, position) FROM STDIN"
            )
            with cur.copy(copy_sql) as copy:  # type: ignore[attr-defined]
                for p in plays:
                    band = bands.get(p.vertical)
                    if band is None:
                        band = bands[p.vertical] = len(bands) + 1
                        band_rows.append((band, p.vertical))
                    song = songs.get((band, p.song))
                    if song is None:
                        song = songs[(band, p.song)] = len(songs) + 1
                        song_rows.append((song, band, p.song, p.song_title))
                    show = shows.get((band, p.show_id))
                    if show is None:
                        show = shows[(band, p.show_id)] = len(shows) + 1
                        show_rows.append((show, band, p.show_id, p.show_date, p.venue))
                    n += 1
                    copy.write_row((n, show, song, p.set_name, p.position))
            for table, cols, rows in (
                ("bands", "id, slug", band_rows),
                ("songs", "id, band_id, slug, title", song_rows),
                ("shows", "id, band_id, show_key, date, venue", show_rows),
            ):
                with cur.copy(f"COPY {s}.{table} ({cols}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                    for row in rows:
                        copy.write_row(row)
            for statement in INDEXES:
                cur.execute(statement.format(s=s))
            for table in ("bands", "songs", "shows", "performances"):
                cur.execute(f"ANALYZE {s}.{table}")
            raw.commit()
        finally:
            raw.close()
        return n

    # -- the baselines ----------------------------------------------------------

    def seed_loop(
        self, vertical: str, as_of: dt.date, min_plays: int, limit: int
    ) -> list[GapAnswer]:
        """The seed's way: one ORM query per song for its play dates, figures in Python."""
        with Session(self.engine) as session:
            band = session.scalars(select(Band).where(Band.slug == vertical)).one()
            show_dates = sorted(
                session.scalars(
                    select(Show.date).where(Show.band_id == band.id, Show.date <= as_of)
                )
            )
            rows: list[GapAnswer] = []
            for song in session.scalars(select(Song).where(Song.band_id == band.id)):
                dates = session.scalars(
                    select(Show.date)
                    .join(Performance, Performance.show_id == Show.id)
                    .where(Performance.song_id == song.id, Show.date <= as_of)
                    .order_by(Show.date)
                ).all()
                if not dates or len(dates) < min_plays:
                    continue
                last = dates[-1]
                since = len(show_dates) - bisect.bisect_right(show_dates, last)
                rows.append(GapAnswer(song.slug, len(dates), last, since))
        return _longest_first(rows, limit)

    def seed_loop_lazy(
        self, vertical: str, as_of: dt.date, min_plays: int, limit: int
    ) -> list[GapAnswer]:
        """The seed's way with lazy relationships: ``song.performances``, then ``perf.show``."""
        with Session(self.engine) as session:
            band = session.scalars(select(Band).where(Band.slug == vertical)).one()
            show_dates = sorted(s.date for s in band.shows if s.date <= as_of)
            rows: list[GapAnswer] = []
            for song in band.songs:
                dates = sorted(p.show.date for p in song.performances if p.show.date <= as_of)
                if not dates or len(dates) < min_plays:
                    continue
                last = dates[-1]
                since = len(show_dates) - bisect.bisect_right(show_dates, last)
                rows.append(GapAnswer(song.slug, len(dates), last, since))
        return _longest_first(rows, limit)

    def window_query(
        self, vertical: str, as_of: dt.date, min_plays: int, limit: int
    ) -> list[GapAnswer]:
        """One statement: aggregates per song, window counts of later shows, top ``limit``."""
        s = self.schema
        sql = text(
            f"""
            WITH band AS (SELECT id FROM {s}.bands WHERE slug = :vertical),
            band_shows AS (
                SELECT sh.id, sh.date FROM {s}.shows sh, band
                WHERE sh.band_id = band.id AND sh.date <= :as_of
            ),
            per_song AS (
                SELECT p.song_id, count(*) AS total, max(bs.date) AS last
                FROM {s}.performances p JOIN band_shows bs ON bs.id = p.show_id
                GROUP BY p.song_id
                HAVING count(*) >= :min_plays
            ),
            later AS (
                SELECT DISTINCT date,
                       count(*) OVER (ORDER BY date DESC)
                       - count(*) OVER (PARTITION BY date) AS shows_after
                FROM band_shows
            )
            SELECT so.slug, ps.total, ps.last, later.shows_after
            FROM per_song ps
            JOIN {s}.songs so ON so.id = ps.song_id
            JOIN later ON later.date = ps.last
            ORDER BY ps.last ASC, so.slug COLLATE "C" ASC
            LIMIT :limit
            """
        )
        with self.engine.connect() as conn:
            result = conn.execute(
                sql, {"vertical": vertical, "as_of": as_of, "min_plays": min_plays, "limit": limit}
            )
            return [GapAnswer(r[0], int(r[1]), r[2], int(r[3])) for r in result]


def _longest_first(rows: list[GapAnswer], limit: int) -> list[GapAnswer]:
    rows.sort(key=lambda r: (r.last_played, r.song.encode()))
    return rows[:limit]


def same_answers(a: list[GapAnswer], b: list[Any]) -> bool:
    """Whether two gaps answers agree row by row (song, plays, last play, shows since)."""
    return [(r.song, r.total_plays, r.last_played, r.shows_since_played) for r in a] == [
        (r.song, r.total_plays, r.last_played, r.shows_since_played) for r in b
    ]
