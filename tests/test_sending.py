"""Commands sent as they are built (``stats.sending``): replies, errors, lost connections."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from events.publisher import can_defer
from stats.sending import CommandStream
from tests.conftest import Backend

COUNT_RUNS = """
-- {tag}
redis.call('RPUSH', KEYS[1], ARGV[1])
if ARGV[1] == 'fail' then return redis.error_reply('FAILED on purpose') end
return {{ARGV[1], redis.call('LLEN', KEYS[1])}}
"""
"""Appends its argument to a list (so each run is counted) and answers it with the
list's length; the argument ``fail`` makes it answer an error after the append."""


def _script(client: Any) -> Any:
    # A body of its own: Redis has never seen it, so the first EVALSHA is a NOSCRIPT.
    return client.register_script(COUNT_RUNS.format(tag=uuid.uuid4().hex))


def _in_use(client: Any) -> int:
    return len(client.connection_pool._in_use_connections)


def test_replies_in_order_with_errors_in_place(backend: Backend) -> None:
    runs = f"{backend.prefix}:runs"
    stream = CommandStream(backend.client)
    script = _script(backend.client)
    stream.command("SADD", f"{backend.prefix}:set", "a")
    stream.script(script, [runs], ["x"])
    stream.script(script, [runs], ["fail"])
    stream.command("INCR", f"{backend.prefix}:set")  # WRONGTYPE: a set
    stream.script(script, [runs], ["y"])
    replies = stream.replies()
    assert replies[0] == 1
    assert replies[1] == ["x", 1]
    assert isinstance(replies[2], redis.ResponseError) and "on purpose" in str(replies[2])
    assert isinstance(replies[3], redis.ResponseError) and "WRONGTYPE" in str(replies[3])
    assert replies[4] == ["y", 3]
    # Each call ran once, the first one (NOSCRIPT, on the real server) included.
    assert backend.client.lrange(runs, 0, -1) == ["x", "fail", "y"]
    if backend.name == "redis":
        assert _in_use(backend.client) == 0


def test_each_call_reaches_redis_before_the_replies_are_read(real_backend: Backend) -> None:
    client = real_backend.client
    assert can_defer(client)
    script = _script(client)
    script(keys=[f"{real_backend.prefix}:warm"], args=["loaded"])  # no NOSCRIPT below
    runs = f"{real_backend.prefix}:runs"
    stream = CommandStream(client)
    stream.script(script, [runs], ["first"])
    # Another connection sees the first call's effect while its reply is still unread.
    other = redis.Redis.from_url(_url(client), decode_responses=True)
    assert other.blpop([runs], timeout=5) == (runs, "first")
    stream.script(script, [runs], ["second"])
    assert stream.replies() == [["first", 1], ["second", 1]]
    assert _in_use(client) == 0


def test_a_connection_lost_before_the_replies_sends_everything_again(
    real_backend: Backend,
) -> None:
    client = real_backend.client
    script = _script(client)
    script(keys=[f"{real_backend.prefix}:warm"], args=["loaded"])
    runs = f"{real_backend.prefix}:runs"
    other = redis.Redis.from_url(_url(client), decode_responses=True)
    stream = CommandStream(client)
    other.client_pause(10_000, all=False)  # writes held: the commands wait unrun
    try:
        stream.script(script, [runs], ["a"])
        stream.command("SADD", f"{real_backend.prefix}:set", "m")
        killed = other.client_kill_filter(_id=_stream_client_id(other, client), skipme=True)
        assert killed == 1
    finally:
        other.client_unpause()
    # The killed connection's commands never ran; the pipeline sent again runs each once.
    assert stream.replies() == [["a", 1], 1]
    assert client.lrange(runs, 0, -1) == ["a"]
    assert client.smembers(f"{real_backend.prefix}:set") == {"m"}
    assert _in_use(client) == 0


def test_an_interrupted_read_gives_up_its_connection(
    real_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = real_backend.client
    stream = CommandStream(client)
    stream.command("SET", f"{real_backend.prefix}:k", "v")

    class Stop(BaseException):
        pass

    def stop(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise Stop

    monkeypatch.setattr(redis.connection.AbstractConnection, "read_response", stop)
    with pytest.raises(Stop):
        stream.replies()
    monkeypatch.undo()
    assert _in_use(client) == 0
    assert client.get(f"{real_backend.prefix}:k") == "v"  # the pool's next connection works


def test_fakeredis_goes_through_a_pipeline(backend: Backend) -> None:
    stream = CommandStream(backend.client)
    assert can_defer(backend.client) == (backend.name == "redis")
    stream.command("RPUSH", f"{backend.prefix}:l", "a", "b")
    stream.command("LLEN", f"{backend.prefix}:l")
    assert len(stream) == 2
    assert stream.replies() == [2, 2]


def _url(client: Any) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _stream_client_id(other: Any, client: Any) -> int:
    """The server's id of ``client``'s one checked-out connection (the stream's)."""
    (conn,) = client.connection_pool._in_use_connections
    port = conn._sock.getsockname()[1]
    for entry in other.client_list():
        if entry["addr"].endswith(f":{port}"):
            return int(entry["id"])
    raise AssertionError("the stream's connection is not in CLIENT LIST")


def test_leaving_unread_gives_the_connection_up(real_backend: Backend) -> None:
    client = real_backend.client
    with pytest.raises(KeyError), CommandStream(client) as stream:
        stream.command("SET", f"{real_backend.prefix}:k", "v")
        assert _in_use(client) == 1
        raise KeyError("the caller failed before reading")
    assert _in_use(client) == 0
    # The unread reply went with the connection: the next command gets its own reply.
    assert client.get(f"{real_backend.prefix}:k") == "v"


def test_a_health_check_falling_due_mid_stream_sends_no_ping(real_backend: Backend) -> None:
    # A PING sent with a reply pending would read that reply as its own, fail, and
    # reconnect: the commands sent before it would then be lost and sent again.
    client = redis.Redis.from_url(
        _url(real_backend.client), decode_responses=True, health_check_interval=30
    )
    script = _script(client)
    script(keys=[f"{real_backend.prefix}:warm"], args=["loaded"])
    runs = f"{real_backend.prefix}:runs"
    with CommandStream(client) as stream:
        stream.script(script, [runs], ["a"])
        (conn,) = client.connection_pool._in_use_connections
        conn.next_health_check = -1.0  # the interval has passed since the last reply
        stream.script(script, [runs], ["b"])
        replies = stream.replies()
    assert replies == [["a", 1], ["b", 2]]
    assert client.lrange(runs, 0, -1) == ["a", "b"]  # each call ran once
