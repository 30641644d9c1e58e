"""Small helpers for the plugin's KEY=VALUE config (kept out of plugin.py to keep it thin)."""

from __future__ import annotations

import re
from collections.abc import Callable

from archipelago.blocker.base import Blocker
from archipelago.errors import ConfigError, InvalidArgument

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Parse ``4096``, ``64K``, ``1G``, ``1GiB`` into bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise InvalidArgument(f"bad size {text!r} (examples: 4096, 64K, 1G)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def blocker_factory(data_dir: str | None, kind: str, path: str | None) -> Callable[[], Blocker]:
    """How the backend builds its blocker (called on the loop thread, after fork).

    ``blocker=memory``: a RAM-only instance; ``blocker-path=P``: a file blocker at P;
    otherwise the blocker configured for the instance at ``dir=`` (its archipelago.toml).
    """
    if kind == "memory":
        from archipelago.blocker.memory import MemoryBlocker

        return MemoryBlocker
    if path:
        from archipelago.blocker.file import FileBlocker

        return lambda: FileBlocker(path)
    if not data_dir:
        raise ConfigError("the archipelago NBD plugin needs dir=DATA_DIR (or blocker-path=)")
    from archipelago.blocker import open_blocker
    from archipelago.config import load
    from archipelago.instance import Instance

    cfg = load(Instance.from_args(data_dir).data_dir)
    if kind:
        cfg.blocker.backend = kind
    return lambda: open_blocker(cfg)
