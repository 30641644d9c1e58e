"""Writer fencing on RADOS (docs/fencing.md, "RADOS"): a fence object per map and the
OSD blocklist.

RADOS has no operation spanning two objects, so a block write cannot assert a
generation kept in another object. The check the OSD does atomically with *every*
operation is the blocklist: an op from a blocklisted client instance is refused
whole. So:

* ``fence/<map uid>`` (omap) holds the generation (``gen``) and one ``w:<address>``
  key per client instance that writes for the map: a writer registers each of its
  client addresses with one write op that asserts ``gen`` (``omap_cmp``) in the same
  op; a registration at an old generation fails: Fenced.
* A bump raises ``gen`` (asserting the value it read), then reads the registrations
  (every one made at an older generation is visible: it was serialized on the fence
  object before the raise) and blocklists each address that is not its own, then
  waits for the osdmap that has them. Any OSD the new holder talks to has that map
  first, so no evicted writer's op is applied on a placement group after the new
  holder's first op there.
* A blocklisted client gets ESHUTDOWN for every op: Fenced. It is dead for good; a
  daemon's blocker peer exits and is restarted with a new client instance, whose
  writes for a stale map fail their registration.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import Any

from archipelago.blocker.base import check_name
from archipelago.errors import Fenced, InvalidArgument

#: Fence objects are "fence/<uid>": "/" never occurs in a valid object name.
FENCE_PREFIX = "fence/"
GEN_KEY = "gen"
WRITER_PREFIX = "w:"
#: Blocklist entries expire (the osdmap must not grow forever); a day outlives any
#: operation of the evicted client (they time out after the blocker timeout).
BLOCKLIST_EXPIRE = 24 * 3600
#: Under a daemon's run directory: one file per blocker peer with its client address.
CLIENTS_DIR = "rados-clients"
#: A writer re-registers (re-checking the generation) at least this often.
REVALIDATE = 10.0


def fenced_message(key: str) -> str:
    """The one-line error of a fenced RADOS writer."""
    return f"map {key}: this writer was fenced (its lock was taken over): reopen the volume"


def _omap(io: Any, oid: str) -> dict[str, bytes] | None:
    """The fence object's omap (None if the object is absent)."""
    import rados

    with rados.ReadOpCtx() as op:
        it, _ = io.get_omap_vals(op, "", "", 100000)
        try:
            io.operate_read_op(op, oid)
        except rados.ObjectNotFound:
            return None
        return dict(it)


def _write(io: Any, oid: str, build: Callable[[Any], None]) -> int:
    """Run one compound write op on ``oid``; 0 or a negative errno."""
    import rados

    with rados.WriteOpCtx() as op:
        build(op)
        try:
            io.operate_write_op(op, oid)
        except rados.Error as e:
            err = getattr(e, "errno", None)
            if not isinstance(err, int):
                raise
            return -abs(err)
    return 0


def bump_sync(io: Any, cluster: Any, key: str, own: frozenset[str]) -> tuple[int, list[str]]:
    """Raise the generation of ``key``; blocklist older writers that are not ``own``.
    Returns (new generation, addresses blocklisted). Blocking."""
    import rados

    from archipelago.blocker.rados_locks import RadosCallError

    oid = FENCE_PREFIX + key
    while True:
        vals = _omap(io, oid)
        if vals is None:
            rc = _write(io, oid, lambda op: (op.new(rados.LIBRADOS_CREATE_EXCLUSIVE),
                                             io.set_omap(op, (GEN_KEY,), (b"1",))))
            if rc == -errno.EEXIST:
                continue
            if rc < 0:
                raise RadosCallError(f"create {oid}", rc)
            return 1, []  # nobody could register before the first grant
        cur = vals.get(GEN_KEY, b"0").decode()
        new = int(cur) + 1
        rc = _write(io, oid, lambda op, c=cur, n=new: (
            op.omap_cmp(GEN_KEY, c, rados.LIBRADOS_CMPXATTR_OP_EQ),
            io.set_omap(op, (GEN_KEY,), (str(n).encode(),))))
        if rc == -errno.ECANCELED:
            continue  # a concurrent bump: read again
        if rc < 0:
            raise RadosCallError(f"bump {oid}", rc)
        break
    # From here no registration at an older generation succeeds; those that did are here.
    vals = _omap(io, oid) or {}
    stale = [k for k, v in vals.items()
             if k.startswith(WRITER_PREFIX) and int(v or b"0") < new]
    evict = sorted(k[len(WRITER_PREFIX):] for k in stale if k[len(WRITER_PREFIX):] not in own)
    for addr in evict:
        # librados waits for the osdmap with the entry: our next ops carry it.
        cluster.blocklist_add(addr, BLOCKLIST_EXPIRE)
    if stale:
        _write(io, oid, lambda op: io.remove_omap_keys(op, tuple(stale)))
    return new, evict


def register_sync(io: Any, key: str, gen: int, addrs: frozenset[str]) -> int:
    """Register ``addrs`` as writers of ``key`` at ``gen``, asserting ``gen`` in the same
    op; 0, or a negative errno (ECANCELED/ENOENT: ``gen`` is not current). Blocking."""
    import rados

    g = str(gen)
    keys = tuple(WRITER_PREFIX + a for a in sorted(addrs))
    return _write(io, FENCE_PREFIX + key, lambda op: (
        op.omap_cmp(GEN_KEY, g, rados.LIBRADOS_CMPXATTR_OP_EQ),
        io.set_omap(op, keys, tuple(g.encode() for _ in keys))))


def current_sync(io: Any, key: str) -> int:
    """The generation of ``key`` now (0: never granted). Blocking."""
    vals = _omap(io, FENCE_PREFIX + key)
    return int((vals or {}).get(GEN_KEY, b"0") or b"0")


def unregister_sync(io: Any, key: str, addrs: frozenset[str]) -> None:
    """Remove our registrations of ``key`` (its volume was closed cleanly). Blocking."""
    keys = tuple(WRITER_PREFIX + a for a in sorted(addrs))
    _write(io, FENCE_PREFIX + key, lambda op: io.remove_omap_keys(op, keys))


def drop_sync(io: Any, key: str) -> None:
    """Remove the fence object of a removed map. Blocking."""
    import rados

    try:
        io.remove_object(FENCE_PREFIX + key)
    except rados.ObjectNotFound:
        pass


class RadosFence:
    """The fence of a RADOS writer process: ``blk`` (a RadosBlocker) does the fence
    object's ops; ``own_addrs`` are the client addresses that write for this process:
    ``blk``'s own unless ``blk_writes`` is False (a daemon's mapper peer, whose blocker
    peers write: their published addresses; its fence client must stay unblocklisted)."""

    def __init__(self, blk: Any, own_addrs: Callable[[], frozenset[str]],
                 blk_writes: bool = True) -> None:
        self.blk = blk
        self.own_addrs = own_addrs
        self.blk_writes = blk_writes
        self._ok: dict[str, tuple[int, frozenset[str], float]] = {}
        self._self: tuple[Any, str] = (None, "")

    async def _run(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        io = await self.blk._ioctx()
        return await self.blk._thread(what, fn, io, *args)

    async def bump(self, key: str) -> int:
        """A new generation of ``key``; writers registered at older ones are blocklisted."""
        check_name(key)
        self._ok.pop(key, None)  # our own older grant is stale too
        own = await self.addrs() | {await self.self_addr()}  # never blocklist ourselves
        gen, _ = await self.blk._thread(f"fence {key}", bump_sync, self.blk._io,
                                        self.blk._cluster, key, own)
        return gen

    async def current(self, key: str) -> int:
        """The generation of ``key`` now."""
        return int(await self._run(f"fence {key}", current_sync, check_name(key)))

    async def self_addr(self) -> str:
        """The client address of ``blk`` (fixed for the life of its client instance)."""
        await self.blk._ioctx()
        cluster = self.blk._cluster
        if self._self[0] is not cluster:
            self._self = (cluster, str(cluster.get_addrs()))
        return self._self[1]

    async def addrs(self) -> frozenset[str]:
        """The client addresses that write for this process (registered as writers)."""
        own = self.own_addrs()
        return own | {await self.self_addr()} if self.blk_writes else own

    async def ensure(self, key: str, gen: int, fresh: bool = False) -> None:
        """Fenced unless ``gen`` is current; registers our writing addresses (again if
        they changed, every REVALIDATE seconds, or ``fresh``)."""
        own = await self.addrs()
        if not own:
            raise self.blk._map(errno.ENOTCONN, f"fence {key}: no writing client published")
        ok = self._ok.get(key)
        now = time.monotonic()
        if (not fresh and ok is not None and ok[0] == gen and own <= ok[1]
                and now - ok[2] < REVALIDATE):
            return
        rc = await self._run(f"fence {key}", register_sync, check_name(key), gen, own)
        if rc in (-errno.ECANCELED, -errno.ENOENT):
            self._ok.pop(key, None)
            raise Fenced(fenced_message(key))
        if rc < 0:
            raise self.blk._map(-rc, f"fence {key}")
        self._ok[key] = (gen, own, now)

    def registered(self, key: str, gen: int, addr: str) -> bool:
        """True if ``addr`` was registered as a writer of ``key`` at ``gen`` (still current
        when registered) less than REVALIDATE seconds ago; synchronous (hot paths)."""
        ok = self._ok.get(key)
        return (ok is not None and ok[0] == gen and addr in ok[1]
                and time.monotonic() - ok[2] < REVALIDATE)

    async def forget(self, key: str) -> None:
        """Drop our registrations of ``key`` (its volume was closed here)."""
        ok = self._ok.pop(check_name(key), None)
        if ok is not None:
            await self._run(f"fence {key}", unregister_sync, key, ok[1])

    async def drop(self, key: str) -> None:
        """Remove the fence of a removed map."""
        self._ok.pop(check_name(key), None)
        await self._run(f"fence {key}", drop_sync, key)


class RadosFenceMixin:
    """fence_bump / fence_check / fenced_op / fence_forget / fence_drop of RadosBlocker."""

    _rfence: RadosFence | None = None

    @property
    def rados_fence(self) -> RadosFence:
        """This blocker's fence (its own connection is its only writer)."""
        if self._rfence is None:
            self._rfence = RadosFence(self, frozenset)
        return self._rfence

    async def fence_bump(self, key: str) -> int:
        """Grant a new writer generation of map ``key``: older writers become Fenced."""
        return await self.rados_fence.bump(key)

    async def fence_check(self, key: str, gen: int) -> None:
        """Fenced unless ``gen`` is the current generation of ``key``."""
        if await self.rados_fence.current(key) != gen:
            raise Fenced(fenced_message(key))

    async def fenced_op(self, key: str, gen: int, op: str, *args: Any) -> None:
        """Run mutation ``op`` once this client is registered at the current ``gen``."""
        if op not in ("write", "put", "copy", "delete"):
            raise InvalidArgument(f"not a fenced operation: {op!r}")
        await self.rados_fence.ensure(key, gen)
        await getattr(self, op)(*args)

    async def fence_forget(self, key: str) -> None:
        """Drop this client's registration of a volume closed here."""
        await self.rados_fence.forget(key)

    async def fence_drop(self, key: str) -> None:
        """Remove the fence object of a removed map."""
        await self.rados_fence.drop(key)


def publish_addr(directory: str, name: str, addr: str) -> None:
    """Publish a blocker peer's client address (a daemon's mapper registers them all)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(addr)
    os.replace(tmp, os.path.join(directory, name))


class PublishedAddrs:
    """The addresses published in ``directory`` (re-read when it changes)."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self._seen: tuple[int, frozenset[str]] = (-1, frozenset())

    def __call__(self) -> frozenset[str]:
        """Current addresses."""
        try:
            stamp = os.stat(self.dir).st_mtime_ns
        except FileNotFoundError:
            return frozenset()
        if stamp != self._seen[0]:
            addrs = set()
            for n in os.listdir(self.dir):
                if not n.startswith("."):
                    try:
                        with open(os.path.join(self.dir, n)) as f:
                            addrs.add(f.read().strip())
                    except FileNotFoundError:
                        continue
            self._seen = (stamp, frozenset(a for a in addrs if a))
        return self._seen[1]
