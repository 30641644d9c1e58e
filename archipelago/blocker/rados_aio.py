"""Helpers bridging librados completions to asyncio (used by the RADOS blocker)."""

from __future__ import annotations

import asyncio
import errno
import json
import time
from collections.abc import Callable
from typing import Any

from archipelago.errors import (
    ArchipelagoError,
    BackendUnavailable,
    Fenced,
    InvalidArgument,
    NoSpace,
    TimedOut,
    from_errno,
)

#: Our own in-flight limits stay below librados' objecter throttles (raised by the
#: blocker's config), because a throttled aio_* call would block the event loop thread.
MAX_INFLIGHT_BYTES = 256 * 1024 * 1024
MAX_INFLIGHT_OPS = 512


def errno_of(exc: BaseException) -> int:
    """The positive errno carried by a rados or ctypes error (EIO if none)."""
    value = getattr(exc, "errno", None)
    return abs(value) if isinstance(value, int) else errno.EIO


class Budget:
    """Bounds in-flight operations and bytes without blocking the loop."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._bytes = 0
        self._ops = 0

    async def acquire(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more fit in flight."""
        async with self._cond:
            # A single request larger than the budget still goes, alone.
            await self._cond.wait_for(
                lambda: self._ops < MAX_INFLIGHT_OPS
                and (self._bytes == 0 or self._bytes + nbytes <= MAX_INFLIGHT_BYTES)
            )
            self._bytes += nbytes
            self._ops += 1

    async def release(self, nbytes: int) -> None:
        """Return ``nbytes`` to the budget."""
        async with self._cond:
            self._bytes -= nbytes
            self._ops -= 1
            self._cond.notify_all()


def settle(fut: asyncio.Future[Any], result: Any) -> None:
    """Set a future's result unless it was cancelled meanwhile (runs in the loop)."""
    if not fut.done():
        fut.set_result(result)


def pool_is_full(cluster: Any, pool: str) -> bool:
    """True if the osdmap marks the cluster or ``pool`` full (blocking mon call)."""
    ret, out, _ = cluster.mon_command(json.dumps({"prefix": "osd dump", "format": "json"}),
                                      b"", timeout=5)
    if ret != 0:
        return False
    dump = json.loads(out)
    if "full" in dump.get("flags", "").split(","):
        return True
    return any("full" in p.get("flags_names", "").split(",")
               for p in dump.get("pools", []) if p.get("pool_name") == pool)


def client_conf(timeout: float, keyring: str | None) -> dict[str, str]:
    """librados settings for a blocker client with operation timeout ``timeout``."""
    t = str(max(1, round(timeout)))
    conf = {
        "rados_osd_op_timeout": t,
        "rados_mon_op_timeout": t,
        "client_mount_timeout": t,
        # Ops older than objecter_timeout make the client fetch a new osdmap; it
        # must be shorter than the op timeout, or a client whose OSD restarted on
        # a new address times out forever against the old one.
        "objecter_timeout": f"{max(0.5, min(10.0, timeout / 4)):g}",
        "objecter_tick_interval": "1",
        "objecter_inflight_op_bytes": str(2 * MAX_INFLIGHT_BYTES),
        "objecter_inflight_ops": str(2 * MAX_INFLIGHT_OPS),
    }
    if keyring:
        conf["keyring"] = keyring
    return conf


def map_error(err: int, what: str, conffile: str, pool: str, timeout: float,
              cluster: str) -> ArchipelagoError:
    """Turn a librados errno into the archipelago error class."""
    # The cause comes first: the peers' wire format keeps only 95 bytes of a message,
    # and object names are long (the daemon's client would lose "within Ns").
    where = f"({what}; {conffile}, pool {pool!r})"
    if err == errno.ETIMEDOUT:
        return TimedOut(f"no answer from the Ceph cluster within {timeout:g}s {where}")
    if err in (errno.EACCES, errno.EPERM):
        return BackendUnavailable(f"permission denied by the Ceph cluster {where}")
    if err in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"the Ceph pool {pool!r} is full ({what})")
    if err == errno.ESHUTDOWN:  # EBLOCKLISTED: a forced lock break fenced this client
        return Fenced(f"the Ceph cluster blocklisted this client: its lock was taken over {where}")
    if err in (errno.ENOTCONN, errno.ECONNREFUSED, errno.EHOSTUNREACH):
        return BackendUnavailable(f"the Ceph cluster is unreachable {where}")
    if err in (errno.EFBIG, errno.E2BIG, errno.EMSGSIZE):
        return InvalidArgument(f"{what}: too large for RADOS")
    return from_errno(err, f"{what}: {errno.errorcode.get(err, err)} from the {cluster}")


def compound_write(io: Any, cb: Callable[..., None], name: str, data: bytes | None,
                   create: bool = False, exclusive: bool = False) -> Any:
    """Submit a compound write: optional (exclusive) create, optional write_full."""
    import rados

    op = io.create_write_op()
    try:
        if create:
            op.new(rados.LIBRADOS_CREATE_EXCLUSIVE if exclusive
                   else rados.LIBRADOS_CREATE_IDEMPOTENT)
        if data is not None:
            op.write_full(data)
        # python-rados passes mtime=0 as "the epoch": the object would look decades old
        # to garbage collection (docs/gc.md) and be swept before its map is recorded.
        return io.operate_aio_write_op(op, name, oncomplete=cb, mtime=int(time.time()))
    finally:
        # librados moves the operation into the request at submission.
        io.release_write_op(op)


def touch_write(io: Any, cb: Callable[..., None], name: str) -> Any:
    """Submit a touch: fail with ENOENT if absent (an omap assertion, which never creates
    the object), else a 0-byte write that only stamps the object's mtime with now."""
    import rados

    op = io.create_write_op()
    try:
        op.omap_cmp("archipelago.touch", "", rados.LIBRADOS_CMPXATTR_OP_EQ)
        op.write(b"", 0)
        return io.operate_aio_write_op(op, name, oncomplete=cb, mtime=int(time.time()))
    finally:
        io.release_write_op(op)
