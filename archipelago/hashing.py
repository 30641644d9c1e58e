"""Pithos+ hashing: content names of blocks and Merkle roots of objects.

These are the pure-Python reference implementations; the native kernels in
``archipelago.native`` must give identical results (checked at import there).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

BLOCK_SIZE = 4 * 1024 * 1024
HASH_ALGO = "sha256"
DIGEST_SIZE = 32
#: sha256(b"") -- the name every all-zero block has; it is never stored.
ZERO_HASH = hashlib.sha256(b"").hexdigest()


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """True when every byte of ``data`` is zero."""
    mv = memoryview(data).cast("B")
    n = len(mv)
    if n == 0:
        return True
    # Comparing against a zero bytes object is done in C by the bytes compare.
    step = 1 << 16
    zeros = bytes(min(step, n))
    for off in range(0, n, step):
        chunk = mv[off : off + step]
        if chunk != zeros[: len(chunk)]:
            return False
    return True


def token_hash(token: str) -> str:
    """How a secret token or key is stored: sha256 hex (they carry >= 192 random bits, so
    no salt or slow hash is needed; a leaked table gives no usable credential)."""
    return hashlib.sha256(token.encode()).hexdigest()


def block_hash(data: bytes | bytearray | memoryview) -> str:
    """Pithos content name: hex sha256 of the block with trailing zero bytes stripped."""
    return hashlib.sha256(bytes(data).rstrip(b"\0")).hexdigest()


def merkle_root(hexdigests: Sequence[str] | Iterable[str]) -> str:
    """Pithos Merkle root over block digests (leaves padded to a power of two)."""
    leaves = [bytes.fromhex(h) for h in hexdigests]
    if not leaves:
        return hashlib.sha256(b"").hexdigest()
    if len(leaves) == 1:
        return leaves[0].hex()
    size = 1
    while size < len(leaves):
        size <<= 1
    leaves += [b"\0" * DIGEST_SIZE] * (size - len(leaves))
    while len(leaves) > 1:
        leaves = [
            hashlib.sha256(leaves[i] + leaves[i + 1]).digest() for i in range(0, len(leaves), 2)
        ]
    return leaves[0].hex()


def object_hashmap(data: bytes | bytearray | memoryview, block_size: int = BLOCK_SIZE) -> list[str]:
    """Block hashes of a whole object (a 0-byte object has one entry, the zero hash)."""
    mv = memoryview(data)
    if len(mv) == 0:
        return [ZERO_HASH]
    return [block_hash(mv[i : i + block_size]) for i in range(0, len(mv), block_size)]


def object_hash(data: bytes | bytearray | memoryview, block_size: int = BLOCK_SIZE) -> str:
    """X-Object-Hash of a whole object: the Merkle root of its hashmap."""
    return merkle_root(object_hashmap(data, block_size))
