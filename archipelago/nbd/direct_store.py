"""The blocker of the direct backend, which runs the mapper and its blocker inside nbdkit.

The one nbd module besides backend.py that imports archipelago.blocker (tests/test_layers.py
lists both): the peer backend leaves every blocker to the daemon's peers.
"""

from __future__ import annotations

from collections.abc import Callable

from archipelago.blocker.base import Blocker
from archipelago.errors import ConfigError


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
