"""Commands sent as soon as they are built, their replies read once all are sent.

A job of 5,000 events is five script calls. Sent as one pipeline, Redis waits while
the worker builds all five; sent one by one as each is built, Redis runs the first
while the worker builds the second. The replies are read at the end, as a pipeline's.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError, ResponseError

from events.publisher import can_defer


class CommandStream:
    """Commands on one connection, each sent when added; :meth:`replies` reads them.
    Used as a context manager, so that the connection goes back to its pool however
    the caller leaves.

    With a client that cannot defer (fakeredis), or when the connection fails, the
    commands go again as one pipeline through the client's retries, as a pipeline that
    failed would be sent again: a script call may then run twice, which the apply
    scripts make harmless (an event applied twice changes nothing).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._entries: list[tuple[Script | None, Any, Any]] = []  # script, keys, args
        self._conn: Any = None
        self._direct = can_defer(client)

    def __len__(self) -> int:
        return len(self._entries)

    def __enter__(self) -> CommandStream:
        return self

    def __exit__(self, *exc: object) -> None:
        """Give up a connection whose replies were not read (the caller raised)."""
        if self._conn is not None:
            self._drop()

    def command(self, *args: Any) -> None:
        """Send one command (``"SADD", key, member``)."""
        self._entries.append((None, None, args))
        self._send(args)

    def script(self, script: Script, keys: list[Any], args: list[Any]) -> None:
        """Send one call of ``script`` (EVALSHA; loaded when Redis answers NOSCRIPT)."""
        self._entries.append((script, keys, args))
        self._send(("EVALSHA", script.sha, len(keys), *keys, *args))

    def _send(self, args: tuple[Any, ...]) -> None:
        if not self._direct:
            return
        pool = self.client.connection_pool
        try:
            first = self._conn is None
            if first:
                self._conn = pool.get_connection()
            # A health check's PING is only safe with no reply pending: after the first
            # send it would read a command's reply as its own and drop the connection.
            self._conn.send_packed_command(self._conn.pack_command(*args), check_health=first)
        except (redis.ConnectionError, redis.TimeoutError):
            self._drop()
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        """Give up the connection; what was sent goes again by :meth:`_resend`."""
        self._direct = False
        if self._conn is not None:
            self._conn.disconnect()
            self.client.connection_pool.release(self._conn)
            self._conn = None

    def replies(self) -> list[Any]:
        """The reply of each command in order, a ResponseError where Redis answered one."""
        if not self._direct:
            return self._resend(range(len(self._entries)))
        conn, self._conn = self._conn, None
        replies: list[Any] = []
        try:
            for _ in self._entries:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:  # a whole reply: the connection is fine
                    replies.append(exc)
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()
            self.client.connection_pool.release(conn)
            return self._resend(range(len(self._entries)))
        except BaseException:
            conn.disconnect()  # part of the reply may be unread: the connection is spent
            self.client.connection_pool.release(conn)
            raise
        self.client.connection_pool.release(conn)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:  # not run: Redis did not have the script (a restart, SCRIPT FLUSH)
            for i, reply in zip(missing, self._resend(missing), strict=True):
                replies[i] = reply
        return replies

    def _resend(self, indexes: Any) -> list[Any]:
        """The entries at ``indexes`` as one pipeline (scripts loaded as needed)."""
        pipe = self.client.pipeline(transaction=False)
        for i in indexes:
            script, keys, args = self._entries[i]
            if script is None:
                pipe.execute_command(*args)
            else:
                script(keys=keys, args=args, client=pipe)
        return list(pipe.execute(raise_on_error=False))
