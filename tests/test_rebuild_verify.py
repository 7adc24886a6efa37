"""``statsworker rebuild`` and ``verify``: after Redis loses everything, a rebuild from the
log answers every route as before; verify agrees, and names a figure corrupted in Redis.
Runs on SQLite and PostgreSQL logs, on fakeredis and the real Redis."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api_stub.app import create_app
from events.schemas import Event, PerformanceRecorded, PerformanceRetracted, parse_event
from stats import keys
from stats.setlists import SetlistStore, StateNeedsRebuild
from tests.conftest import Backend
from tests.log_support import (
    LOG_DATABASES,
    TODAY,
    answers,
    as_current,
    log_database,
    make_conns,
    random_stream,
    state_dump,
    wipe,
)
from tests.setlist_oracle import SetlistOracle, check_all_reads, recorded, retracted
from worker import cli, log_table, publishing, rebuild_setlists
from worker.connections import Connections
from worker.eventlog import PerformanceRow, setlist_fields
from worker.read_ahead import prefetch
from worker.rebuild import Rebuilder
from worker.runner import failed_jobs, run_worker
from worker.verify import Drift, Verifier, verify

SONGS = ["song-00", "song-03", "song-17", "song-39", "no-such-song"]
"""Songs whose ``/analytics/songs`` answer is compared (one of them never played)."""


@pytest.fixture(params=LOG_DATABASES)
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated event log on SQLite and on PostgreSQL."""
    yield from log_database(request.param, tmp_path)


def publish_and_apply(conns: Connections, events: list[Event], seed: int) -> None:
    """Publish each event once or twice, shuffled, then drain the queue."""
    rng = random.Random(seed)
    stream = [e for e in events for _ in range(rng.randint(1, 2))]
    rng.shuffle(stream)
    publishing.make_publisher(conns).publish(stream)
    run_worker(conns, burst=True, with_scheduler=False)
    assert failed_jobs(conns) == []


def logged_state(
    backend: Backend, log_url: str, seed: int, performances: int, videos: int
) -> tuple[Connections, Any]:
    """Connections and their event log, with a random stream published and applied."""
    conns = make_conns(backend, log_url)
    log = publishing.event_log(conns)
    stream = random_stream(seed=seed, performances=performances, videos=videos)
    publish_and_apply(conns, stream, seed=seed)
    return conns, log


def all_answers(conns: Connections) -> dict[str, object]:
    return answers(conns, ["band-a", "band-b", "band-z"], ["ann", "bo", "zed"], SONGS)


def test_rebuild_after_losing_redis_answers_every_route_as_before(
    backend: Backend,
    log_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conns = make_conns(backend, log_url)
    events = random_stream(seed=21, performances=400, videos=40)
    publish_and_apply(conns, events, seed=21)
    before = all_answers(conns)
    assert before["/analytics/stats/band-a"][0] == 200
    assert before["/analytics/insights/ann/overview"][0] == 200

    wipe(backend)
    assert all_answers(conns)["/analytics/stats/band-a"][0] == 404

    with as_current(conns, monkeypatch):
        assert cli.main(["rebuild"]) == 0
        assert all_answers(conns) == before
        capsys.readouterr()
        assert cli.main(["verify"]) == 0
        assert capsys.readouterr().out == ""
        ticks: list[int] = []
        verifier = Verifier(conns, publishing.event_log(conns))
        listed: list[str] = []
        logged = verifier.eventlog.verticals
        verifier.eventlog.verticals = lambda: listed.append("v") or logged()  # type: ignore[method-assign]
        verticals, creators = verifier.scopes(None, None)  # as the command sizes its bar
        assert verifier.run(progress=ticks.append) == []
        assert listed == ["v", "v"]  # the scopes once, the registry check once
        assert (verticals, creators) == (conns.setlists.verticals(), conns.videos.creators())
        assert ticks == [1] * (len(verticals) + len(creators)) and len(ticks) >= 4
        assert verifier.scopes("band-a", None) == (["band-a"], [])

        vkeys = keys.vertical_keys(conns.settings.key_prefix, "band-b")
        total, title = conns.state.hget(vkeys.songs, "song-03").split("\x1f")
        conns.state.hset(vkeys.songs, "song-03", f"{int(total) + 1}\x1f{title}")
        assert cli.main(["verify"]) == 1
        out = capsys.readouterr().out.splitlines()
        assert out == [
            f"{vkeys.songs}\tsong-03\texpected {total}\\x1f{title}"
            f"\tfound {int(total) + 1}\\x1f{title}"
        ]

        ckeys = keys.creator_keys(conns.settings.key_prefix, "bo")
        conns.state.hincrby(ckeys.totals, "views", 7)
        assert cli.main(["verify", "--creator", "bo"]) == 1
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 1 and out[0].startswith(f"{ckeys.totals}\tviews\texpected ")


def _rows(events: list[Event]) -> list[PerformanceRow]:
    return [
        PerformanceRow(
            seq,
            e.performance_id,
            e.version,
            isinstance(e, PerformanceRecorded),
            setlist_fields(e),
        )
        for seq, e in enumerate(events)
        if isinstance(e, PerformanceRecorded | PerformanceRetracted)
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_bulk_build_writes_the_keys_the_incremental_apply_writes(
    backend: Backend, seed: int
) -> None:
    """Key for key and byte for byte, including windows, velocity and the bustout index."""
    events = [
        e
        for e in random_stream(seed=seed, performances=300, videos=0)
        if isinstance(e, PerformanceRecorded | PerformanceRetracted)
    ]
    only_retracted = parse_event(
        {
            "type": "performance.retracted",
            "event_id": "lonely",
            "occurred_at": "2024-01-01T00:00:00Z",
            "vertical": "band-x",
            "performance_id": "p1",
        }
    )
    events.append(only_retracted)
    incremental = f"{backend.prefix}:inc"
    bulk = f"{backend.prefix}:bulk"
    stream = events * 2
    random.Random(seed).shuffle(stream)
    SetlistStore(backend.client, incremental).apply(stream, TODAY)
    for vertical in ("band-a", "band-b", "band-x"):
        mine = [e for e in stream if e.vertical == vertical]
        titles: dict[str, str] = {}
        won = rebuild_setlists.winners([_rows(mine)], titles=titles)
        fresh = keys.vertical_keys(bulk, vertical)
        cmds = rebuild_setlists.commands(won, fresh, TODAY, titles)
        rebuild_setlists.write(backend.client, cmds)
        want = state_dump(backend.client, tuple(keys.vertical_keys(incremental, vertical)))
        got = state_dump(backend.client, tuple(keys.vertical_keys(bulk, vertical)))
        assert list(got.values()) == list(want.values()), vertical


@pytest.mark.parametrize("seed", [11, 12])
def test_titles_arriving_ever_smaller_keep_state_and_reads_exact(
    backend: Backend, seed: int
) -> None:
    """Each new least title of a song spells the old one out in the song's show entries:
    titles arriving from the greatest down, mixed with repeats and retractions, in
    batches, must leave the state the bulk build writes and the answers of the oracle."""
    rng = random.Random(seed)
    titles = [f"Title {chr(ord('Z') - k)}" for k in range(12)]  # Z, Y, X, ...: decreasing
    events: list[PerformanceRecorded | PerformanceRetracted] = []
    for k, title in enumerate(titles):
        for j in range(rng.randint(1, 4)):
            day = f"2023-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            events.append(
                recorded(
                    f"p{k}-{j}",
                    rng.choice(["s", "t"]),
                    f"show{rng.randint(1, 5)}",
                    day,
                    title=title,
                    at=k,
                )
            )
    events += [retracted(e.performance_id, at=50) for e in rng.sample(events, 5)]
    store = SetlistStore(backend.client, f"{backend.prefix}:inc")
    for start in range(0, len(events), 7):  # in order, a few events a call
        store.apply(events[start : start + 7], TODAY)
    titles_seen: dict[str, str] = {}
    won = rebuild_setlists.winners([_rows(list(events))], titles=titles_seen)
    fresh = keys.vertical_keys(f"{backend.prefix}:bulk", "band")
    rebuild_setlists.write(
        backend.client, rebuild_setlists.commands(won, fresh, TODAY, titles_seen)
    )
    want = state_dump(backend.client, tuple(keys.vertical_keys(f"{backend.prefix}:inc", "band")))
    got = state_dump(backend.client, tuple(fresh))
    assert list(got.values()) == list(want.values())
    least = {
        song: min(
            e.song_title or song
            for e in events
            if isinstance(e, PerformanceRecorded) and e.song == song
        )
        for song in ("s", "t")
    }
    assert titles_seen == least
    stored = backend.client.hgetall(keys.vertical_keys(f"{backend.prefix}:inc", "band").titles)
    assert stored.pop(keys.PIN_FIELD) == keys.PIN_TEXT
    assert stored == least
    check_all_reads(store, SetlistOracle(events), "band", TODAY)


def test_rebuilding_one_vertical_or_creator_leaves_the_others_alone(
    backend: Backend, log_url: str
) -> None:
    conns, log = logged_state(backend, log_url, seed=4, performances=120, videos=20)
    assert verify(conns, log) == []
    prefix = conns.settings.key_prefix
    a, b = keys.vertical_keys(prefix, "band-a"), keys.vertical_keys(prefix, "band-b")
    conns.state.delete(a.songs)
    conns.state.hset(b.months, "p:1999-01", "5")
    conns.state.delete(keys.creator_keys(prefix, "ann").totals)

    report = Rebuilder(conns, log).run(vertical="band-a")
    assert (report.verticals, report.creators) == (1, 0)
    assert verify(conns, log, vertical="band-a") == []
    assert verify(conns, log, vertical="band-b") == [Drift(b.months, "p:1999-01", None, "5")]
    assert verify(conns, log, creator="ann") != []
    Rebuilder(conns, log).run(creator="ann")
    assert verify(conns, log, creator="ann") == []

    # State that the log does not hold (applied behind its back) goes with a full rebuild.
    stray = [
        parse_event({**e.to_json_dict(), "vertical": "band-z"})
        for e in random_stream(seed=5, performances=10, videos=0)
    ]
    conns.setlists.apply(stray, TODAY)  # type: ignore[arg-type]
    assert "band-z" in conns.setlists.verticals()
    report = Rebuilder(conns, log).run()
    assert report.removed == 1
    assert conns.setlists.verticals() == ["band-a", "band-b"]
    assert list(backend.client.scan_iter(f"{prefix}:{{v:band-z}}:*")) == []
    assert list(backend.client.scan_iter(f"{prefix}:rebuild.*")) == []
    assert verify(conns, log) == []


def test_a_rebuild_removes_what_a_stopped_one_staged_and_keeps_a_running_ones(
    backend: Backend, log_url: str
) -> None:
    conns, log = logged_state(backend, log_url, seed=6, performances=40, videos=4)
    prefix, client = conns.settings.key_prefix, conns.state
    registry = keys.rebuilds_key(prefix)
    killed = keys.staging_prefix(prefix, "deadbeef0000") + ":{v:band-a}:songs"  # no note
    silent = keys.staging_prefix(prefix, "0ld000000000.old") + ":{v:band-a}:perf"
    running = keys.staging_prefix(prefix, "a11ve0000000") + ":{v:band-a}:songs"
    for key in (killed, silent, running):
        client.hset(key, "x", "1")
    client.hset(registry, mapping={"0ld000000000": "0", "a11ve0000000": f"{time.time():.3f}"})

    report = Rebuilder(conns, log).run()
    assert report.left_behind == 2
    assert [client.exists(k) for k in (killed, silent, running)] == [0, 0, 1]
    assert client.hkeys(registry) == ["a11ve0000000"]  # its own note went at the end
    assert verify(conns, log) == []
    client.delete(running, registry)


def test_events_logged_while_the_log_is_replayed_are_not_lost(
    backend: Backend, log_url: str
) -> None:
    conns = make_conns(backend, log_url)
    log = publishing.event_log(conns)
    events = random_stream(seed=6, performances=200, videos=20)
    publish_and_apply(conns, events[:150], seed=6)
    late = events[150:]
    published = threading.Event()

    def meanwhile(_n: int) -> None:
        # A publisher and a worker at work during the replay: these land in the live
        # keys that the switch is about to replace.
        if not published.is_set():
            published.set()
            publish_and_apply(conns, late, seed=7)

    rebuilder = Rebuilder(conns, log, progress=meanwhile)
    report = rebuilder.run()
    assert published.is_set()
    assert report.tail > 0
    assert verify(conns, log) == []


def test_readers_see_the_old_state_or_the_new_one_never_a_mix(
    real_backend: Backend, tmp_path: Path
) -> None:
    conns = make_conns(real_backend, f"sqlite:///{tmp_path / 'events.db'}")
    log = publishing.event_log(conns)
    events = random_stream(seed=8, performances=600, videos=0)
    publish_and_apply(conns, events, seed=8)
    new = conns.setlists.stats("band-a", TODAY)
    behind_its_back = [
        parse_event({**e.to_json_dict(), "event_id": f"extra-{e.event_id}", "performance_id":
                     f"extra-{e.performance_id}"})
        for e in events[:300]
        if isinstance(e, PerformanceRecorded)
    ]  # fmt: skip
    conns.setlists.apply(behind_its_back, TODAY)  # type: ignore[arg-type]
    old = conns.setlists.stats("band-a", TODAY)
    assert old != new

    seen: list[object] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(conns.setlists.stats("band-a", TODAY))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3):
            Rebuilder(conns, log).run(vertical="band-a")
    finally:
        done.set()
        reader.join(timeout=30)
    assert seen, "the reader never read"
    assert all(answer in (old, new) for answer in seen)
    assert conns.setlists.stats("band-a", TODAY) == new


def test_verify_names_each_figure_that_drifted(backend: Backend, log_url: str) -> None:
    conns, log = logged_state(backend, log_url, seed=10, performances=150, videos=20)
    assert verify(conns, log) == []
    c = backend.client
    k = keys.vertical_keys(conns.settings.key_prefix, "band-a")
    v = keys.creator_keys(conns.settings.key_prefix, "ann")
    show, entries = sorted(c.hgetall(k.showplays).items())[0]
    c.hset(k.showplays, show, entries + "\x1fghost\x00p0")
    song, window = min((f, w) for f, w in c.hgetall(k.win).items() if f != keys.PIN_FIELD)
    c.hset(k.win, song, "99\x1f99\x1f99")
    c.zadd(k.bust, {"ghost": 20240101})
    c.hdel(k.meta, "today")
    plays = c.hincrby(k.meta, "plays", 1)
    c.sadd(keys.verticals_key(conns.settings.key_prefix), "band-q")
    date = c.zrange(v.days, 0, 0)[0]
    c.hincrby(v.day, f"{date}:rl", 5_000_000)  # 0.5 percent more engagement
    tag, views = c.zrange(v.tagviews, 0, 0, withscores=True)[0]
    c.zadd(v.tagviews, {tag: 5})
    found = {(d.key, d.figure): d for d in verify(conns, log)}
    ghost = entries + "\x1fghost\x00p0"
    assert found[(k.showplays, show)] == Drift(k.showplays, show, entries, ghost)
    assert found[(k.win, song)] == Drift(k.win, song, window, "99\x1f99\x1f99")
    assert found[(k.bust, "ghost")] == Drift(k.bust, "ghost", None, "20240101")
    assert (k.meta, "today") in found
    assert found[(k.meta, "plays")] == Drift(k.meta, "plays", str(plays - 1), str(plays))
    key = keys.verticals_key(conns.settings.key_prefix)
    assert found[(key, "band-q")] == Drift(key, "band-q", None, "member")
    assert (v.day, f"{date}:engagement_rate_sum") in found
    assert found[(v.tagviews, tag)] == Drift(v.tagviews, tag, str(int(views)), "5")
    assert len(found) == 8


def test_the_log_is_read_ahead_in_order_and_its_errors_reach_the_reader() -> None:
    def batches() -> Iterator[list[int]]:
        yield from ([i, i + 1] for i in range(0, 20, 2))
        raise RuntimeError("the database went away")

    got: list[int] = []
    with pytest.raises(RuntimeError, match="went away"):
        for batch in prefetch(batches(), depth=2):
            got.extend(batch)
    assert got == list(range(20))
    early = prefetch(iter([[1], [2], [3]]), depth=1)
    assert next(early) == [1]
    early.close()  # a reader that stops early does not leave the thread behind


def test_state_in_an_earlier_layout_is_refused_until_a_rebuild_rewrites_it(
    backend: Backend,
    log_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conns = make_conns(backend, log_url)
    events = random_stream(seed=5, performances=200, videos=0)
    publish_and_apply(conns, events, seed=5)
    before = all_answers(conns)
    c, prefix = backend.client, conns.settings.key_prefix
    k = keys.vertical_keys(prefix, "band-a")
    plays, showperfs = keys.retired_vertical_keys(prefix, "band-a")
    retired = (plays, showperfs)
    # What layout 1 left: no layout field, a `plays` sorted set and a `showperfs` hash.
    c.hdel(k.meta, "layout")
    c.zadd(plays, {"p-old": 20240101})
    c.hset(showperfs, "2024-01-01\x00s1", "3")
    kept = state_dump(c, (*k, *retired))

    with pytest.raises(StateNeedsRebuild, match="statsworker rebuild --vertical band-a"):
        conns.setlists.stats("band-a", TODAY)
    late = next(e for e in events if isinstance(e, PerformanceRecorded) and e.vertical == "band-a")
    moved = late.model_copy(update={"event_id": "late", "show_date": TODAY})
    with pytest.raises(StateNeedsRebuild):
        conns.setlists.apply([moved], TODAY)
    with pytest.raises(StateNeedsRebuild):
        conns.setlists.roll("band-a", TODAY)
    assert state_dump(c, (*k, *retired)) == kept  # refused means untouched
    # The commands that walk every vertical name it, and do the others (band-a is first).
    with as_current(conns, monkeypatch):
        capsys.readouterr()
        assert cli.main(["roll"]) == 1
        told = capsys.readouterr().err
        assert f"rolled 1 vertical(s) to {TODAY.isoformat()}" in told, told
        assert "not rolled: the state of vertical 'band-a' is in layout" in told, told
        c.delete(k.songplays)
        c.zadd(k.songplays, {"a": 1})  # a key of another type, as layout 1 kept it
        assert cli.main(["verify"]) == 1
        told = capsys.readouterr()
        assert "Traceback" not in told.err
        assert (
            "verify: vertical 'band-a' is kept in an earlier layout, not compared:"
            " run `statsworker rebuild --vertical band-a`"
        ) in told.err
        assert f"{k.meta}\tlayout\texpected {keys.SETLIST_LAYOUT}\tfound (absent)" in told.out
    http = TestClient(create_app(conns))
    route = "/analytics/stats/band-b"  # the other band is fine
    assert (http.get(route).status_code, http.get(route).json()) == before[route]
    response = http.get("/analytics/stats/band-a")
    assert response.status_code == 503
    assert "statsworker rebuild" in response.json()["detail"]

    with as_current(conns, monkeypatch):
        assert cli.main(["rebuild", "--vertical", "band-a"]) == 0
    assert not c.exists(*retired)
    assert c.hget(k.meta, "layout") == keys.SETLIST_LAYOUT
    assert all_answers(conns) == before
    assert verify(conns, publishing.event_log(conns)) == []


VIDEO_BODY = {
    "type": "video.posted",
    "occurred_at": "2024-01-01T00:00:00Z",
    "date_posted": "2024-01-01",
    "views": 10,
    "likes": 1,
    "comments": 0,
    "shares": 0,
    "bookmarks": 0,
    "new_followers": 0,
}
"""A ``video.posted`` body without its ids and creator, as a producer sends it."""


def publish_bodies_and_apply(conns: Connections, bodies: list[dict[str, Any]]) -> None:
    """Publish JSON bodies as lines (every one accepted), then drain the queue."""
    report = publishing.make_publisher(conns).publish_lines([json.dumps(b) for b in bodies])
    assert report.accepted == len(bodies) and not report.rejected
    run_worker(conns, burst=True, with_scheduler=False)
    assert failed_jobs(conns) == []


def test_verify_agrees_on_videos_without_hashtags(backend: Backend, log_url: str) -> None:
    """A video posted with no ``hashtags`` field, with ``null`` or with ``[]`` has no
    hashtag: the log stores each body as it arrived, and verify must not see a tag in it."""
    conns = make_conns(backend, log_url)
    base = {**VIDEO_BODY, "creator": "ann"}
    publish_bodies_and_apply(
        conns,
        [
            {**base, "event_id": "v-absent", "video_id": "v1"},
            {**base, "event_id": "v-null", "video_id": "v2", "hashtags": None},
            {**base, "event_id": "v-empty", "video_id": "v3", "hashtags": []},
            {**base, "event_id": "v-tagged", "video_id": "v4", "hashtags": ["#Fun"]},
        ],
    )
    assert conns.videos.hashtags("ann", 20).total_unique_hashtags == 1
    assert verify(conns, publishing.event_log(conns)) == []


def test_verify_agrees_on_counts_past_32_bits(backend: Backend, log_url: str) -> None:
    """Counts go up to 10**15: the log's query must read them as 64-bit integers."""
    conns = make_conns(backend, log_url)
    base = {**VIDEO_BODY, "creator": "big", "hashtags": ["#Big"]}
    publish_bodies_and_apply(
        conns,
        [
            {
                **base,
                "event_id": "b1",
                "video_id": "v1",
                "views": 3_000_000_000,
                "likes": 7,
                "new_followers": 2**31,
            },
            {
                **base,
                "event_id": "b2",
                "video_id": "v2",
                "views": 10**15,
                "likes": 10**15 - 1,
                "new_followers": 0,
            },
        ],
    )
    assert conns.videos.overview("big").metrics.total_views == 10**15 + 3_000_000_000
    assert verify(conns, publishing.event_log(conns)) == []


def test_verify_agrees_on_tag_views_past_2_to_the_53_and_videos_before_1970(
    backend: Backend, log_url: str
) -> None:
    """A hashtag's score is the double nearest its exact views, and a weekday before
    1970-01-01 is still 0-6 (SQL's % keeps the sign of the day number, Lua's does not)."""
    conns = make_conns(backend, log_url)
    base = {**VIDEO_BODY, "creator": "big", "hashtags": ["big"]}
    bodies = [
        {**base, "event_id": f"b{i}", "video_id": f"v{i}", "views": 10**15} for i in range(10)
    ]
    bodies.append({**base, "event_id": "one", "video_id": "one", "views": 1})  # 10**16 + 1
    bodies += [
        {**VIDEO_BODY, "creator": "old", "event_id": day, "video_id": day, "date_posted": day}
        for day in ("1969-12-27", "1969-12-31", "1950-06-05", "1900-01-01")
    ]
    publish_bodies_and_apply(conns, bodies)
    top = conns.videos.hashtags("big", 1).top_hashtags[0]
    assert (top.hashtag, top.total_views) == ("big", 10**16 + 1)
    assert verify(conns, publishing.event_log(conns)) == []


def test_tags_logged_before_every_leading_hash_was_dropped_rebuild_and_verify_alike(
    backend: Backend, log_url: str
) -> None:
    """An older log holds '#x' for a source's '##x': a rebuild reads it as 'x', and
    verify must count it so, once per video even beside a plain 'x'."""
    conns = make_conns(backend, log_url)
    publish_bodies_and_apply(
        conns,
        [
            {**VIDEO_BODY, "creator": "old", "event_id": "a", "video_id": "a", "hashtags": ["x"]},
            {**VIDEO_BODY, "creator": "old", "event_id": "b", "video_id": "b", "hashtags": ["y"]},
        ],
    )
    log = publishing.event_log(conns)
    with log.engine.begin() as conn:
        for event_id, tags in (("a", ["#x", "x"]), ("b", ["#y"])):
            row = conn.execute(
                sa.select(log_table.event_log.c.body).where(
                    log_table.event_log.c.event_id == event_id
                )
            ).scalar_one()
            body = {**(json.loads(row) if isinstance(row, str) else row), "hashtags": tags}
            conn.execute(
                sa.update(log_table.event_log)
                .where(log_table.event_log.c.event_id == event_id)
                .values(body=body)
            )
    Rebuilder(conns, log).run(None, "old")
    tags = conns.videos.hashtags("old", 20)
    assert [(t.hashtag, t.video_count) for t in tags.top_hashtags] == [("x", 1), ("y", 1)]
    assert verify(conns, log) == []
