"""Shared pieces of the client API: instance lookup, NotRunning, wire encoders."""

from __future__ import annotations

import os
import zlib
from typing import Any

import msgpack

from archipelago.errors import InvalidArgument, NotRunning
from archipelago.instance import Instance
from archipelago.mapper.common import Extent, VolumeInfo
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import Reply

MAPPER_PORT = 0
DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024
#: Extents are asked for in windows of this many bytes (bounds the reply size).
EXTENT_WINDOW = 64 << 30
DEFAULT_TIMEOUT = 120.0
#: In the message of the NotFound a mapper peer answers for I/O on a volume not open there
#: (it was restarted since the open): the client reopens and re-issues.
STALE = "stale handle"


BLOCK_SIZE = 4 * 1024 * 1024  # a Pithos content block


def block_placement(name: str, n: int) -> int:
    """Index of the blocker peer that owns object ``name`` among ``n`` (the mapper's rule)."""
    return zlib.crc32(name.encode()) % n


def check_hex(name: str) -> str:
    """A content block name: 64 lowercase hex digits."""
    if len(name) != 64 or name.strip("0123456789abcdef"):
        raise InvalidArgument(f"not a content block name: {name!r}")
    return name


def _instance(instance: Instance | str | os.PathLike[str] | None) -> Instance:
    if isinstance(instance, Instance):
        return instance
    return Instance.from_args(instance)


def start_command(inst: Instance) -> str:
    """The command that starts the daemon of ``inst``."""
    return f"archip --data-dir {inst.data_dir} daemon start"


def _link(inst: Instance) -> PeerLink:
    try:
        return PeerLink(str(inst.control_socket))
    except NotRunning:
        raise NotRunning(f"archipelago daemon not running for {inst.data_dir} "
                         f"(start it with: {start_command(inst)})") from None
    except OSError as e:
        raise NotRunning(f"cannot reach the archipelago daemon for {inst.data_dir}: "
                         f"{e.strerror} (start it with: {start_command(inst)})") from None


def _info(d: dict[str, Any]) -> VolumeInfo:
    return VolumeInfo(**d)


def _extents(raw: bytes) -> list[Extent]:
    return [Extent(int(o), int(n), bool(z)) for o, n, z in msgpack.unpackb(raw)]


def _hashes_bin(hashes: list[str]) -> bytes:
    return b"".join(bytes.fromhex(h) for h in hashes)


def _hashes_hex(raw: bytes) -> list[str]:
    return [raw[i : i + 32].hex() for i in range(0, len(raw), 32)]


def _unpack(r: Reply) -> Any:
    try:
        return msgpack.unpackb(bytes(r.data)) if len(r.data) else None
    finally:
        r.release()


class _Ops:
    """Volume-op argument builders shared by both clients (result decoders beside them)."""

    @staticmethod
    def args(op: str, **kw: Any) -> bytes:
        return msgpack.packb({"op": op, **kw}, use_bin_type=True)



def data_dir_of(client: Any) -> Any:
    """The instance directory a client talks to."""
    return client.instance.data_dir


