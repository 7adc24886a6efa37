"""Reading the log ahead of its consumer, in a thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

T = TypeVar("T")

PREFETCH_BATCHES = 4
"""Batches of log rows read ahead while the previous ones are processed."""


def prefetch(batches: Iterator[T], depth: int = PREFETCH_BATCHES) -> Iterator[T]:
    """``batches``, read ahead by a thread: the database driver works (outside the GIL)
    while this thread processes the previous batch."""
    ahead: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("done", None))
        except BaseException as exc:  # handed to the reading thread, which raises it
            put(("error", exc))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="statsworker-log-reader", daemon=True)
    reader.start()
    try:
        while True:
            kind, item = ahead.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=30)
