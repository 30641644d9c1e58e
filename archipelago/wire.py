"""What the daemon's mapper peer and its clients exchange: records, the port, placement, reserved names.

VolumeInfo and Extent are what the mapper returns and what travels (msgpack) to the
client library, nbd and the gateway; the encoders here are the one definition of their
wire form. Imports archipelago.errors only, so every layer may use it (tests/test_layers.py).
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import Any

import msgpack

from archipelago.errors import InvalidArgument

#: Static port of the mapper peer (blocker peers follow it: archipelago.service.peer_process).
MAPPER_PORT = 0
#: Block size of a new volume, and of a Pithos content block.
DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024

#: Prefix of the NBD plugin's scratch clones (``nbd-scratch.<host tag>.<pid>.<n>[.origin]``).
SCRATCH_PREFIX = "nbd-scratch."
#: Volume name prefixes the system keeps for volumes it makes and removes itself: a
#: user can never create, rename, clone into or remove one, so the startup sweep of a
#: dead nbdkit's scratch clones can never meet a user's volume.
RESERVED_PREFIXES = (SCRATCH_PREFIX,)


def is_reserved(name: str) -> bool:
    """True for names in the system's reserved namespace (see RESERVED_PREFIXES)."""
    return name.startswith(RESERVED_PREFIXES)


@dataclass(frozen=True)
class VolumeInfo:
    """What `archip info` shows about a map."""

    name: str
    size: int
    block_size: int
    epoch: int
    readonly: bool
    parent: str | None
    created: float
    kind: str
    lock_owner: str | None = None
    lock_stale: bool = False

    def to_dict(self) -> dict:
        """JSON-able form (also its wire form)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VolumeInfo:
        """The record of its wire form."""
        return cls(**d)


@dataclass(frozen=True)
class Extent:
    """A run of the volume that is either a hole (zero) or stored data."""

    offset: int
    length: int
    zero: bool


def encode_extents(extents: list[Extent]) -> bytes:
    """Wire form of an EXTENTS reply."""
    return msgpack.packb([[e.offset, e.length, e.zero] for e in extents])


def decode_extents(raw: bytes) -> list[Extent]:
    """Extents of an EXTENTS reply."""
    return [Extent(int(o), int(n), bool(z)) for o, n, z in msgpack.unpackb(raw)]


def encode_hashes(hashes: list[str]) -> bytes:
    """Hex content names packed as 32-byte digests."""
    return b"".join(bytes.fromhex(h) for h in hashes)


def decode_hashes(raw: bytes) -> list[str]:
    """Hex content names of packed 32-byte digests."""
    return [raw[i : i + 32].hex() for i in range(0, len(raw), 32)]


def ctrl_payload(op: str, **kw: Any) -> bytes:
    """Payload of a CTRL request: a volume op and its arguments."""
    return msgpack.packb({"op": op, **kw}, use_bin_type=True)


def block_placement(name: str, n: int) -> int:
    """Index of the blocker peer that owns object ``name`` among ``n`` (the mapper's rule)."""
    return zlib.crc32(name.encode()) % n


def check_hex(name: str) -> str:
    """A content block name: 64 lowercase hex digits."""
    if len(name) != 64 or name.strip("0123456789abcdef"):
        raise InvalidArgument(f"not a content block name: {name!r}")
    return name
