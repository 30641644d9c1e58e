"""Object stores behind one async contract (base.Blocker): memory, file, rados.

May import archipelago.errors, archipelago.hashing and archipelago.config only.
Backends are found through the entry-point group "archipelago.blockers"; the
constructor keywords of backend X are the keys of config section [blocker.X].
"""

from __future__ import annotations

import dataclasses
import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from archipelago.blocker.base import Blocker
from archipelago.errors import ConfigError

if TYPE_CHECKING:
    from archipelago.config import Config

ENTRY_POINT_GROUP = "archipelago.blockers"
#: Used when the package metadata is missing (running from a source tree).
_BUILTIN = {
    "memory": "archipelago.blocker.memory:MemoryBlocker",
    "file": "archipelago.blocker.file:FileBlocker",
    "rados": "archipelago.blocker.rados:RadosBlocker",
}


def backend_class(name: str) -> type[Blocker]:
    """Import the Blocker class registered as ``name`` (lazily: rados needs librados)."""
    target = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}.get(name)
    target = target or _BUILTIN.get(name)
    if target is None:
        raise ConfigError(f"unknown blocker backend {name!r}")
    module, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise ConfigError(f"blocker backend {name!r} unavailable: {e}") from e
    return cls


def open_blocker(config: Config) -> Blocker:
    """Build the blocker chosen by config.blocker.backend with its [blocker.<name>] keys."""
    name = config.blocker.backend
    cls = backend_class(name)
    section = getattr(config.blocker, name, None)
    kwargs = dataclasses.asdict(section) if dataclasses.is_dataclass(section) else {}
    return cls(**kwargs)


__all__ = ["Blocker", "ENTRY_POINT_GROUP", "backend_class", "open_blocker"]
