"""Small helpers for the plugin's KEY=VALUE config (kept out of plugin.py to keep it thin)."""

from __future__ import annotations

import re

from archipelago.errors import ConfigError, InvalidArgument

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Parse ``4096``, ``64K``, ``1G``, ``1GiB`` into bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise InvalidArgument(f"bad size {text!r} (examples: 4096, 64K, 1G)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def blocker_path(data_dir: str | None, kind: str) -> str | None:
    """The file blocker root of the instance at ``data_dir`` (honours its archipelago.toml)."""
    if kind != "file":
        return None
    if not data_dir:
        raise ConfigError("the archipelago NBD plugin needs dir=DATA_DIR (or blocker-path=)")
    from archipelago.config import load
    from archipelago.instance import Instance

    inst = Instance.from_args(data_dir)
    return str(load(inst.data_dir).blocker.file.path)
