"""Redis clients and the RQ queue, built from the settings.

``STATSWORKER_REDIS_URL=memory://`` selects an in-process fakeredis server (with Lua),
shared by every client of the process: the embedded default of ``statsworker demo``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import fakeredis
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from rq import Queue

from events.publisher import job_queue
from stats.setlists import SetlistStore
from stats.settings import Settings
from stats.videos import VideoStore

MEMORY_URL = "memory://"
"""Redis URL of the in-process fakeredis server."""

CLIENT_RETRIES = 6
"""Connection and timeout errors are retried this many times, with exponential backoff."""

_memory_server: fakeredis.FakeServer | None = None


class _TransientRetry(Retry):
    """Retries lost connections and timeouts, but not a refused password.

    redis-py's AuthenticationError is a ConnectionError; retrying it only delays
    the answer that the credentials are wrong.
    """

    def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        def once() -> Any:
            try:
                return do()
            except redis.AuthenticationError as exc:
                raise _Final(exc) from exc

        try:
            return super().call_with_retry(once, fail, *args, **kwargs)
        except _Final as final:
            raise final.error from None


class _Final(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


SOCKET_TIMEOUT_SECONDS = 120.0
"""Longest a state client waits for a reply: past any script this project runs (Redis
itself answers BUSY to every other client after 5 s of one script)."""

CONNECT_TIMEOUT_SECONDS = 5.0
"""Longest a client waits to connect before it retries."""


def memory_server() -> fakeredis.FakeServer:
    """The process-wide in-memory Redis server behind ``memory://``."""
    global _memory_server
    if _memory_server is None:
        _memory_server = fakeredis.FakeServer()
    return _memory_server


def make_clients(url: str) -> tuple[Any, Any]:
    """A text client for state and a bytes client for RQ, on the same server."""
    if url.startswith(MEMORY_URL):
        server = memory_server()
        return (
            fakeredis.FakeRedis(server=server, decode_responses=True),
            fakeredis.FakeRedis(server=server),
        )
    retry = _TransientRetry(ExponentialBackoff(cap=5.0, base=0.05), CLIENT_RETRIES)
    common: dict[str, Any] = {
        # redis-py 8 gives up on a reply after 5 s and then sends the command again: an
        # apply script that runs 5 s (a large batch on a loaded server) got BUSY back.
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "retry": retry,
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        "health_check_interval": 30,
    }
    return (
        redis.Redis.from_url(url, decode_responses=True, **common),
        redis.Redis.from_url(url, **common),
    )


@dataclass
class Connections:
    """Everything a process needs to reach state and queue."""

    settings: Settings
    state: Any
    raw: Any
    queue: Queue = field(init=False)
    setlists: SetlistStore = field(init=False)
    videos: VideoStore = field(init=False)

    def __post_init__(self) -> None:
        self.queue = job_queue(self.settings.queue, self.raw)
        self.setlists = SetlistStore(self.state, self.settings.key_prefix)
        self.videos = VideoStore(self.state, self.settings.key_prefix)

    @classmethod
    def from_settings(cls, settings: Settings) -> Connections:
        """Clients for ``settings.redis_url``."""
        state, raw = make_clients(settings.redis_url)
        return cls(settings, state, raw)
