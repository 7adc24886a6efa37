"""Shared fixtures: every Redis-backed test runs on fakeredis and on the real server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

REAL_REDIS_URL = os.environ.get("STATSWORKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""The real server the suite runs against; a missing server fails the tests, never skips them."""

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The real data sets beside the checkout (``../shared/data``)."""


class Backend:
    """A Redis backend for one test: clients on the same server and a private key prefix."""

    def __init__(self, name: str, client: Any, raw: Any) -> None:
        self.name = name
        self.client = client  # decode_responses=True, for state
        self.raw = raw  # bytes client, for RQ
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.queue = f"{self.prefix}-q"

    def cleanup(self) -> None:
        batch: list[Any] = []
        for pattern in (f"{self.prefix}:*", f"*{self.queue}*"):
            batch += self.raw.scan_iter(pattern, count=1000)
        # RQ's job hashes are named by job id alone: those of this test's queue.
        origin = self.queue.encode()
        for key in self.raw.scan_iter("rq:job:*", count=1000):
            if self.raw.type(key) == b"hash" and self.raw.hget(key, "origin") == origin:
                batch.append(key)
        for start in range(0, len(batch), 500):
            self.raw.delete(*batch[start : start + 500])


def _real_clients() -> tuple[Any, Any]:
    client = redis.Redis.from_url(REAL_REDIS_URL, decode_responses=True)
    raw = redis.Redis.from_url(REAL_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - only when the server is down
        pytest.fail(f"real Redis at {REAL_REDIS_URL} is not reachable: {exc}")
    return client, raw


@pytest.fixture(params=["fakeredis", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The same test on fakeredis (with Lua) and on the machine's real Redis."""
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()
        b = Backend(
            "fakeredis",
            fakeredis.FakeRedis(server=server, decode_responses=True),
            fakeredis.FakeRedis(server=server),
        )
    else:
        b = Backend("redis", *_real_clients())
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def real_backend() -> Iterator[Backend]:
    """The machine's real Redis only, for tests of processes and crashes."""
    b = Backend("redis", *_real_clients())
    try:
        yield b
    finally:
        b.cleanup()


def data_file(name: str) -> Path:
    """A file of ``../shared/data``; fails the test when the data set is missing."""
    path = DATA_DIR / name
    if not path.exists():
        pytest.fail(f"data set {path} is missing")
    return path
