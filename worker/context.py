"""The connections a worker process applies jobs with, made once per process."""

from __future__ import annotations

from worker.connections import Connections

_current: Connections | None = None


def set_current(conns: Connections) -> None:
    """Use ``conns`` for every job this process runs (the CLI and the demo call this)."""
    global _current
    _current = conns


def get(serving: bool = False) -> Connections:
    """The process's connections; built from the environment on first use (``serving``:
    with the API's clients, see ``worker.connections.make_clients``)."""
    global _current
    if _current is None:
        from stats.settings import get_settings

        _current = Connections.from_settings(get_settings(), serving)
    return _current
