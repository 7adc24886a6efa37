"""Redis clients and the RQ queue, built from the settings.

``STATSWORKER_REDIS_URL=memory://`` selects an in-process fakeredis server (with Lua),
shared by every client of the process: the embedded default of ``statsworker demo``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import hiredis
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import HiredisRespSerializer
from redis.retry import Retry
from rq import Queue

from events.publisher import job_queue
from stats.setlists import SetlistStore
from stats.settings import MEMORY_SCHEME, Settings
from stats.videos import VideoStore

MEMORY_URL = MEMORY_SCHEME
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

SERVE_REPLY_TIMEOUT_SECONDS = 6.0
"""Longest the API's clients wait for a reply (``statsworker api``): a read is one short
script, and Redis itself answers BUSY to every other client once a script has run 5 s.
A Redis that hangs (stopped, swapping) then gets 503 after this, where the state's
clients would wait out :data:`SOCKET_TIMEOUT_SECONDS` and send the command again."""

CONNECT_TIMEOUT_SECONDS = 5.0
"""Longest a client waits to connect before it retries."""

PROBE_CONNECTIONS = 4
"""Connections of the health check's own client (``Connections.probe``)."""

PROBE_POOL_WAIT_SECONDS = 0.25
"""Longest a health check waits for one of those connections: a PING of a live Redis
frees one in well under a millisecond, and with a Redis that hangs, the checks beyond
the first four answer 503 after this wait rather than after the connections' own
timeouts one after another (2 s for the fifth to eighth of twelve at once, with the
whole of PROBE_TIMEOUT_SECONDS as the wait)."""

PROBE_TIMEOUT_SECONDS = 1.0
"""Longest ``GET /health`` waits to connect to Redis and for its PING, trying once: a
health check (docker-compose gives it 3 s) gets its answer rather than a timeout."""


def eviction_risk(client: Any) -> str | None:
    """Why Redis may delete keys of statsworker's of its own accord, or None when it will
    not (``maxmemory-policy`` is ``noeviction``, Redis' default).

    State keys and queued jobs live without a TTL, so an ``allkeys-*`` policy at
    ``maxmemory`` drops a song's plays, a bucket of performance records or a queued
    batch, and reads and later events go wrong without an error. A ``volatile-*`` one
    drops keys with a TTL: failed batches (kept 30 days for ``statsworker failed``),
    which the log counts as queued, so no sweep sends them again. A server that keeps
    its configuration from this client (``CONFIG`` renamed, or denied by an ACL) tells
    nothing, and nothing is said.
    """
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.RedisError:
        return None
    if isinstance(policy, bytes):
        policy = policy.decode("ascii", "replace")
    if not isinstance(policy, str) or policy == "noeviction":
        return None
    if policy.startswith("allkeys-"):
        what = (
            "statsworker's state keys and queued batches, and answers go wrong without an"
            " error until `statsworker rebuild`"
        )
    else:
        what = "keys with a TTL, failed batches among them, which no sweep sends again"
    return (
        f"Redis' maxmemory-policy is {policy}: at maxmemory it evicts {what}; set"
        " maxmemory-policy to noeviction (a full Redis then refuses writes, and the"
        " batches wait and are retried)"
    )


class TLSConnection(redis.SSLConnection):
    """redis-py's TLS connection, whose handshake waits at most the connect timeout.

    redis-py runs the handshake under the reply timeout (:data:`SOCKET_TIMEOUT_SECONDS`),
    so a ``rediss://`` URL pointed at a plain-text Redis, which never answers a TLS
    hello, kept a command waiting for minutes, retries included."""

    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        sock.settimeout(self.socket_connect_timeout)
        wrapped = super()._wrap_socket_with_ssl(sock)  # type: ignore[no-untyped-call]
        wrapped.settimeout(self.socket_timeout)
        return wrapped


def memory_server() -> fakeredis.FakeServer:
    """The process-wide in-memory Redis server behind ``memory://``."""
    global _memory_server
    if _memory_server is None:
        _memory_server = fakeredis.FakeServer()
    return _memory_server


class CommandPacker:
    """Packs a command into the bytes redis-py's hiredis packer makes of it, without that
    packer's pass over every argument in Python (which only turns a bytearray or a
    memoryview into bytes): an apply call of 1,000 events carries 8,000 arguments, and
    packing it took 2.4 us an event that way against 0.7 (one-off timing, 2026-12-02).
    A command whose name is not one plain word, or with an argument hiredis refuses,
    goes through redis-py's packer."""

    def __init__(self) -> None:
        self._standard = HiredisRespSerializer()

    def pack(self, *args: Any) -> list[bytes]:
        name = args[0]
        # redis-py splits a name such as "SCRIPT LOAD" into words; a plain one stays whole.
        if type(name) is str and name.isascii() and name.isalnum():
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        packed: list[bytes] = self._standard.pack(*args)
        return packed


def make_clients(url: str, serving: bool = False) -> tuple[Any, Any]:
    """A text client for state and a bytes client for RQ, on the same server.

    With ``serving`` (the API's), a reply is waited for :data:`SERVE_REPLY_TIMEOUT_SECONDS`
    and a timeout is not retried: a request answers 503 instead of hanging on a Redis
    that accepts and does not answer. Lost connections are retried as elsewhere.
    """
    if url.startswith(MEMORY_URL):
        server = memory_server()
        return (
            fakeredis.FakeRedis(server=server, decode_responses=True),
            fakeredis.FakeRedis(server=server),
        )
    # redis-py's Retry retries timeouts whatever retry_on_error says: the API's does not.
    retried: tuple[type[Exception], ...] = (redis.ConnectionError,)
    if not serving:
        retried += (redis.TimeoutError, socket.timeout)  # redis-py's default
    retry = _TransientRetry(
        ExponentialBackoff(cap=5.0, base=0.05), CLIENT_RETRIES, supported_errors=retried
    )
    common: dict[str, Any] = {
        # redis-py 8 gives up on a reply after 5 s and then sends the command again: an
        # apply script that runs 5 s (a large batch on a loaded server) got BUSY back.
        "socket_timeout": SERVE_REPLY_TIMEOUT_SECONDS if serving else SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "retry": retry,
        "retry_on_error": list(retried),
        "health_check_interval": 30,
        "command_packer": CommandPacker(),
    }
    if url.startswith("rediss://"):
        common["connection_class"] = TLSConnection
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
    _probe: Any = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.queue = job_queue(self.settings.queue, self.raw)
        self.setlists = SetlistStore(self.state, self.settings.key_prefix)
        self.videos = VideoStore(self.state, self.settings.key_prefix)

    def probe(self) -> Any:
        """A client of the state's server that tries once, within
        :data:`PROBE_TIMEOUT_SECONDS` (the state's clients retry for seconds)."""
        client = self._probe
        if client is None:
            state = self.state
            client = state
            if isinstance(state, redis.Redis) and not isinstance(state, fakeredis.FakeRedis):
                pool = state.connection_pool
                kwargs = {
                    **pool.connection_kwargs,
                    "socket_timeout": PROBE_TIMEOUT_SECONDS,
                    "socket_connect_timeout": PROBE_TIMEOUT_SECONDS,
                    "retry": Retry(NoBackoff(), 0),
                    "retry_on_error": [],
                }
                # Blocking: health checks at once wait their turn for a connection (for
                # PROBE_POOL_WAIT_SECONDS at most) where a plain pool of two refused the third
                # ("Too many connections") and the API called a healthy Redis down.
                client = redis.Redis(
                    connection_pool=redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
                        connection_class=pool.connection_class,
                        max_connections=PROBE_CONNECTIONS,
                        timeout=PROBE_POOL_WAIT_SECONDS,
                        **kwargs,
                    )
                )
            self._probe = client
        return client

    @classmethod
    def from_settings(cls, settings: Settings, serving: bool = False) -> Connections:
        """Clients for ``settings.redis_url`` (``serving``: the API's, see make_clients)."""
        state, raw = make_clients(settings.redis_url, serving)
        return cls(settings, state, raw)
