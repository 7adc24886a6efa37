"""Loads the Lua scripts that ship beside this module, registered once per client."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any
from weakref import WeakKeyDictionary

from redis.commands.core import Script

_registered: WeakKeyDictionary[Any, dict[str, Script]] = WeakKeyDictionary()


INCLUDE = "-- include: "
"""A line ``-- include: <name>`` of a script stands for the text of ``stats/<name>.lua``."""


def expand(text: str, read: Callable[[str], str]) -> str:
    """``text`` with each include line replaced by ``read(<name>)``, itself expanded."""
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith(INCLUDE):
            lines.append(expand(read(line[len(INCLUDE) :].strip()), read))
        else:
            lines.append(line)
    return "".join(lines)


def _read(name: str) -> str:
    return resources.files("stats").joinpath(f"{name}.lua").read_text(encoding="utf-8")


@cache
def lua_source(name: str) -> str:
    """The text of ``stats/<name>.lua``, includes expanded: what Redis runs."""
    return expand(_read(name), _read)


def script(client: Any, name: str) -> Script:
    """The script ``name`` registered on ``client`` (EVALSHA with a load on first miss)."""
    per_client = _registered.setdefault(client, {})
    found = per_client.get(name)
    if found is None:
        found = per_client[name] = client.register_script(lua_source(name))
    return found
