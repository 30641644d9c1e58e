"""Reaching an instance's daemon: the instance, its control socket, NotRunning, reply decoding."""

from __future__ import annotations

import os
from typing import Any

import msgpack

from archipelago.errors import NotRunning
from archipelago.instance import Instance
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import Reply

#: Extents are asked for in windows of this many bytes (bounds the reply size).
EXTENT_WINDOW = 64 << 30
DEFAULT_TIMEOUT = 120.0


def instance_of(instance: Instance | str | os.PathLike[str] | None) -> Instance:
    """The instance of a data dir (None: $ARCHIPELAGO_DATA_DIR or the default)."""
    if isinstance(instance, Instance):
        return instance
    return Instance.from_args(instance)


def start_command(inst: Instance) -> str:
    """The command that starts the daemon of ``inst``."""
    return f"archip --data-dir {inst.data_dir} daemon start"


def link_to(inst: Instance) -> PeerLink:
    """Join the daemon's segment; NotRunning naming the start command when there is none."""
    try:
        return PeerLink(str(inst.control_socket))
    except NotRunning:
        raise NotRunning(f"archipelago daemon not running for {inst.data_dir} "
                         f"(start it with: {start_command(inst)})") from None
    except OSError as e:
        raise NotRunning(f"cannot reach the archipelago daemon for {inst.data_dir}: "
                         f"{e.strerror} (start it with: {start_command(inst)})") from None


def unpack(r: Reply) -> Any:
    """The msgpack result of a CTRL reply (None when empty); releases the reply."""
    try:
        return msgpack.unpackb(bytes(r.data)) if len(r.data) else None
    finally:
        r.release()
