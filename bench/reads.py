"""Read latency per route: in process (the route function) and over HTTP (uvicorn)."""

from __future__ import annotations

import http.client
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Response

from api_stub import setlist_routes
from stats.setlists import trend_lines


@dataclass(frozen=True)
class Route:
    """One read: its table label, its in-process call and its HTTP path (given a song)."""

    label: str
    call: Callable[[Any, str, str], Any]
    path: Callable[[str, str], str] | None
    """None: timed in process only."""


ROUTES: tuple[Route, ...] = (
    Route(
        "song (one song)",
        lambda c, v, s: setlist_routes.song(c, v, s),
        lambda v, s: f"/analytics/songs/{v}/{s}",
    ),
    Route(
        "gaps (50 rows)",
        lambda c, v, s: setlist_routes.gaps(c, v),
        lambda v, s: f"/analytics/gaps/{v}",
    ),
    Route(
        "velocity (50 rows)",
        lambda c, v, s: setlist_routes.velocity(c, v),
        lambda v, s: f"/analytics/velocity/{v}",
    ),
    Route(
        "trends month",
        lambda c, v, s: setlist_routes.trends(c, v, period="month"),
        lambda v, s: f"/analytics/trends/{v}?period=month",
    ),
    Route(
        "trends month, history changed",
        lambda c, v, s: _changed(lambda: setlist_routes.trends(c, v, period="month")),
        None,
    ),
    Route(
        "trends quarter",
        lambda c, v, s: setlist_routes.trends(c, v, period="quarter"),
        lambda v, s: f"/analytics/trends/{v}?period=quarter",
    ),
    Route(
        "stats",
        lambda c, v, s: setlist_routes.stats(c, v),
        lambda v, s: f"/analytics/stats/{v}",
    ),
    Route(
        "bustouts",
        lambda c, v, s: setlist_routes.bustouts(c, v),
        lambda v, s: f"/analytics/bustouts/{v}",
    ),
    Route(
        "debut-songs",
        lambda c, v, s: setlist_routes.debut_songs(c, v),
        lambda v, s: f"/analytics/debut-songs/{v}",
    ),
)
"""Every setlist route with its default parameters (as a front end calls them), and
the trends read as it runs right after a write changed a month (in process only)."""


def _changed(call: Callable[[], Any]) -> Any:
    # Forget the rows cut from the stored trend string, as a new string (a write to
    # any month) would: the cost of a trends read after each write.
    trend_lines.cache_clear()
    return call()


def rows_returned(answer: Any) -> int:
    """How many rows a route answered (k of O(log n + k)); 1 for a single object.

    The routes answer a ``Response`` holding the JSON bytes.
    """
    found = json.loads(answer.body) if isinstance(answer, Response) else answer
    if isinstance(found, list):
        return len(found)
    for name in ("trends", "bustouts", "debuts"):
        if isinstance(found, dict) and name in found:
            return len(found[name])
        if hasattr(found, name):
            return len(getattr(found, name))
    return 1


def answer_sizes(conns: Any, vertical: str, song: str) -> dict[str, int]:
    """Rows each route answers on this state, to read latency growth against."""
    return {r.label: rows_returned(r.call(conns, vertical, song)) for r in ROUTES}


@dataclass(frozen=True)
class Latency:
    """p50 and p99 of one route, in milliseconds."""

    p50: float
    p99: float


def summarize(samples: list[float]) -> Latency:
    """p50 and p99 of samples in seconds, as milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Latency(statistics.median(ordered) * 1e3, p99 * 1e3)


Timer = Callable[[Route, int], float]
"""Seconds one call of a route takes; the int picks the song of the one-song route."""


def interleaved(
    timers: dict[str, Timer], calls: int, rounds: int, warmup: int = 3, http: bool = False
) -> dict[str, dict[str, Latency]]:
    """p50 and p99 of every route under each timer (one per scale), by timer and route.

    Routes take turns, round after round, and within a route the timers take turns, so
    that a burst of load on the shared machine, or its speed moving over the minutes a
    run takes, lands on every route and every scale alike: the growth from one scale to
    the next is read off samples taken side by side.
    """
    routes = [r for r in ROUTES if r.path is not None or not http]
    samples: dict[str, dict[str, list[float]]] = {
        name: {r.label: [] for r in routes} for name in timers
    }
    for timed in timers.values():
        for route in routes:
            for i in range(warmup):
                timed(route, i)
    per_round = max(1, calls // rounds)
    for rnd in range(rounds):
        for route in routes:
            for name, timed in timers.items():
                for i in range(per_round):
                    samples[name][route.label].append(timed(route, rnd * per_round + i))
    return {
        name: {label: summarize(s) for label, s in by_route.items()}
        for name, by_route in samples.items()
    }


def in_process_timer(conns: Any, vertical: str, songs: list[str]) -> Timer:
    """Times a route function called directly with the process's connections; the
    one-song route asks about ``songs`` in turn."""

    def timed(route: Route, i: int) -> float:
        song = songs[i % len(songs)]
        started = time.perf_counter()
        route.call(conns, vertical, song)
        return time.perf_counter() - started

    return timed


def http_timer(conn: http.client.HTTPConnection, vertical: str, songs: list[str]) -> Timer:
    """Times a route over HTTP/1.1 keep-alive on ``conn`` (to ``statsworker api``)."""

    def timed(route: Route, i: int) -> float:
        assert route.path is not None
        path = route.path(vertical, songs[i % len(songs)])
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET {path} -> {response.status}: {body[:200]!r}")
        return elapsed

    return timed


def in_process(
    conns: Any, vertical: str, songs: list[str], calls: int, rounds: int
) -> dict[str, Latency]:
    """Latency of each route function called directly with the process's connections."""
    return interleaved({"": in_process_timer(conns, vertical, songs)}, calls, rounds)[""]


def over_http(
    port: int, vertical: str, songs: list[str], calls: int, rounds: int
) -> dict[str, Latency]:
    """Latency of each route over HTTP/1.1 keep-alive to the API on ``port``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        return interleaved({"": http_timer(conn, vertical, songs)}, calls, rounds, http=True)[""]
    finally:
        conn.close()
