"""Typed wrapper over the cffi extension ``archipelago._native`` with pure-Python twins.

At import the kernels are checked against the twins of :mod:`archipelago.hashing`
on known vectors. ``ARCHIPELAGO_NO_NATIVE=1`` opts out (logged): hashing and zero
detection then use the twins and :func:`require` raises. If the extension is
expected but missing or wrong, importing this module raises NativeUnavailable.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

from archipelago import hashing
from archipelago.errors import NativeUnavailable

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview

OPTED_OUT = os.environ.get("ARCHIPELAGO_NO_NATIVE", "") not in ("", "0")
ffi: Any = None
lib: Any = None

if OPTED_OUT:
    log.info("ARCHIPELAGO_NO_NATIVE set: native kernels disabled, using pure-Python twins")
else:
    try:
        from archipelago._native import ffi, lib  # type: ignore[no-redef]
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise NativeUnavailable(
            f"archipelago._native is not built ({exc}); run `pip install -e .` "
            "(needs build-essential, python3-dev, libssl-dev) or set ARCHIPELAGO_NO_NATIVE=1"
        ) from exc

AVAILABLE = lib is not None


def require() -> tuple[Any, Any]:
    """Return (ffi, lib) or raise NativeUnavailable when the kernels are disabled."""
    if lib is None:
        raise NativeUnavailable("shared-memory peers need the native extension "
                                "(ARCHIPELAGO_NO_NATIVE is set)")
    return ffi, lib


def _ptr(data: Buffer) -> Any:
    return ffi.from_buffer(data)


def is_zero(data: Buffer) -> bool:
    """True when every byte of ``data`` is zero."""
    if lib is None:
        return hashing.is_zero(data)
    return bool(lib.ap_is_zero(_ptr(data), len(memoryview(data).cast("B"))))


def sha256(data: Buffer) -> bytes:
    """Raw sha256 digest (OpenSSL EVP: SHA-NI where the CPU has it; GIL released)."""
    if lib is None:
        return hashlib.sha256(data).digest()
    out = ffi.new("unsigned char[32]")
    lib.ap_sha256(_ptr(data), len(memoryview(data).cast("B")), out)
    return bytes(ffi.buffer(out))


def block_hash(data: Buffer) -> str:
    """Pithos content name: hex sha256 of ``data`` with trailing zeros stripped."""
    if lib is None:
        return hashing.block_hash(data)
    out = ffi.new("unsigned char[32]")
    lib.ap_block_hash(_ptr(data), len(memoryview(data).cast("B")), out)
    return bytes(ffi.buffer(out)).hex()


def _check(ret: int) -> int:
    if ret < 0:
        raise OSError(-ret, os.strerror(-ret))
    return ret


def pread_into(fd: int, buf: memoryview | bytearray, offset: int) -> int:
    """Read up to len(buf) bytes at ``offset`` into ``buf`` (short only at EOF); GIL released."""
    ffi_, lib_ = require()
    return _check(lib_.ap_pread_full(fd, ffi_.from_buffer(buf), len(buf), offset))


def pwrite_from(fd: int, buf: Buffer, offset: int) -> int:
    """Write all of ``buf`` at ``offset``; GIL released."""
    ffi_, lib_ = require()
    return _check(lib_.ap_pwrite_full(fd, ffi_.from_buffer(buf), len(buf), offset))


_VECTORS: list[bytes] = [
    b"",
    b"\0",
    b"a",
    b"abc" + b"\0" * 13,
    bytes(range(256)) * 3 + b"\0" * 4093,
    b"\0" * 65536,
    b"\0" * 4097 + b"\1",
]


def self_test() -> None:
    """Compare kernels and twins on known vectors; raise NativeUnavailable on mismatch."""
    if lib is None:
        return
    for v in _VECTORS:
        if is_zero(v) != hashing.is_zero(v) or block_hash(v) != hashing.block_hash(v):
            raise NativeUnavailable(f"native kernel self-test failed on a {len(v)}-byte vector")
        if sha256(v) != hashlib.sha256(v).digest():
            raise NativeUnavailable("native sha256 self-test failed")


self_test()
