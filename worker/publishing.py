"""The publisher every entry point uses: event log first (when configured), then the queue."""

from __future__ import annotations

from events.publisher import Publisher
from worker.connections import Connections
from worker.metrics import record_rejected


def make_publisher(conns: Connections) -> Publisher:
    """A publisher on the connections' queue, counting rejections in the metrics."""
    settings = conns.settings

    def count(n: int) -> None:
        record_rejected(conns.state, settings.key_prefix, n)

    return Publisher(conns.queue, settings.batch_size, sink=None, on_rejected=count)
