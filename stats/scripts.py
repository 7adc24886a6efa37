"""Loads the Lua scripts that ship beside this module, registered once per client."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any
from weakref import WeakKeyDictionary

from redis.commands.core import Script

_registered: WeakKeyDictionary[Any, dict[str, Script]] = WeakKeyDictionary()


@cache
def lua_source(name: str) -> str:
    """The text of ``stats/<name>.lua``."""
    return resources.files("stats").joinpath(f"{name}.lua").read_text(encoding="utf-8")


def script(client: Any, name: str) -> Script:
    """The script ``name`` registered on ``client`` (EVALSHA with a load on first miss)."""
    per_client = _registered.setdefault(client, {})
    found = per_client.get(name)
    if found is None:
        found = per_client[name] = client.register_script(lua_source(name))
    return found
