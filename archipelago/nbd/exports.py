"""Exports of one nbdkit process: names, refcounted opens, scratch clones, errnos.

Export name = volume name. ``VOL@scratch`` (``@`` never occurs in volume names)
is a scratch export: the connection gets a private writable clone of VOL (of a
temporary snapshot when VOL is writable), removed again on disconnect; COW is
the mapper's. The clone has a reserved name (``nbd-scratch.…``, see
mapper/format.py): hidden from listings, refused as an export name, never removed
by anyone but its connection (or the sweep of a dead nbdkit's). Every other
connection to a volume shares one open ``Volume`` (refcount), so the lock is taken
by the first and released by the last.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from archipelago.blocker.base import pid_alive
from archipelago.errors import ArchipelagoError, NotFound, NotRunning
from archipelago.nbd.backend import Backend, VolumeSummary
from archipelago.wire import SCRATCH_PREFIX, is_reserved

log = logging.getLogger("archipelago.nbd")

SCRATCH_SUFFIX = "@scratch"
# Temporary clones of scratch exports are named SCRATCH_PREFIX<host tag>.<pid>.<n>[.origin]
# (a reserved name), swept at startup when their nbdkit is dead.


def _host_tag() -> str:
    # Volume names allow few characters: a short digest names this host.
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def errno_of(exc: BaseException) -> int:
    """The errno an NBD client should see for ``exc``."""
    if isinstance(exc, NotRunning):
        return errno.ESHUTDOWN  # NBD has no ECONNREFUSED (it would become EINVAL)
    if isinstance(exc, ArchipelagoError):
        # NBD carries few errnos (nbdkit sends others as EINVAL): a fenced writer
        # (ESTALE, docs/fencing.md) must look like an I/O error to the guest.
        return errno.EIO if exc.errno == errno.ESTALE else int(exc.errno)
    if isinstance(exc, OSError) and exc.errno:
        return int(exc.errno)
    if isinstance(exc, TimeoutError):
        return errno.ETIMEDOUT
    return errno.EIO


def parse_export(name: str, default: str | None) -> tuple[str, bool]:
    """Split an export name into (volume, scratch); the empty name means ``default``."""
    scratch = name.endswith(SCRATCH_SUFFIX)
    if scratch:
        name = name[: -len(SCRATCH_SUFFIX)]
    if not name:
        if not default:
            raise NotFound("no export name given and no default export configured")
        name = default
    if is_reserved(name):  # another connection's scratch clone: private to it
        raise NotFound(f"no export {name!r} (a reserved name)")
    return name, scratch


@dataclass
class _Open:
    vol: Any
    refs: int = 0


@dataclass
class Conn:
    """One NBD connection: what it opened and what it must undo on close."""

    export: str
    volume: str
    vol: Any
    size: int
    block_size: int
    writable: bool
    scratch: bool
    cleanup: list[str] = field(default_factory=list)


class ExportTable:
    """Maps export names to open volumes for every connection of this process."""

    def __init__(self, backend: Backend, default_export: str | None, allow_scratch: bool) -> None:
        self.backend = backend
        self.default_export = default_export
        self.allow_scratch = allow_scratch
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        self._stale: dict[int, _Open] = {}  # id(vol) -> entry replaced after a restart
        self._seq = itertools.count(1)

    def list(self) -> list[VolumeSummary]:
        """Volumes and snapshots clients may ask for (scratch clones hidden)."""
        return self.backend.list_volumes()

    def sweep_scratch(self) -> None:
        """Remove scratch clones left by a dead nbdkit of this host (clones before origins)."""
        mine = f"{SCRATCH_PREFIX}{_host_tag()}."
        dead: list[str] = []
        for v in self.backend.list_volumes(internal=True):
            if not v.name.startswith(mine):
                continue
            pid = v.name[len(mine):].split(".")[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                dead.append(v.name)
        self._remove_all(sorted(dead, key=lambda n: n.endswith(".origin")))

    def connect(self, export: str, client_readonly: bool) -> Conn:
        """Open the export for one connection."""
        volume, scratch = parse_export(export, self.default_export)
        if scratch:
            if not self.allow_scratch:
                raise NotFound(f"scratch exports are disabled ({export!r})")
            return self._connect_scratch(export, volume, client_readonly)
        vol = self._acquire(volume)
        try:
            return self._conn(export, volume, vol, client_readonly, scratch=False, cleanup=[])
        except BaseException:
            self._release(volume, vol)
            raise

    def _conn(
        self, export: str, volume: str, vol: Any, ro: bool, scratch: bool, cleanup: list[str]
    ) -> Conn:
        b = self.backend
        return Conn(
            export=export,
            volume=volume,
            vol=vol,
            size=b.size(vol),
            block_size=b.block_size(vol),
            writable=b.can_write(vol) and not ro,
            scratch=scratch,
            cleanup=cleanup,
        )

    def _connect_scratch(self, export: str, volume: str, ro: bool) -> Conn:
        b = self.backend
        src = b.info(volume)
        tmp = f"{SCRATCH_PREFIX}{_host_tag()}.{os.getpid()}.{next(self._seq)}"
        cleanup: list[str] = []
        try:
            source = volume
            if not src.readonly:
                # Clones need a read-only origin; a writable volume is frozen first.
                source = tmp + ".origin"
                b.snapshot(volume, source, internal=True)
                cleanup.append(source)
            b.clone(source, tmp, internal=True)
            cleanup.insert(0, tmp)  # the clone goes before its origin
            vol = self._acquire(tmp)
        except BaseException:
            self._remove_all(cleanup)
            raise
        try:
            return self._conn(export, tmp, vol, ro, scratch=True, cleanup=cleanup)
        except BaseException:
            self._release(tmp, vol)
            self._remove_all(cleanup)
            raise

    def disconnect(self, conn: Conn) -> None:
        """Close the connection's volume if it was the last user; drop scratch clones."""
        try:
            self._release(conn.volume, conn.vol)
        finally:
            self._remove_all(conn.cleanup)

    def _acquire(self, volume: str) -> Any:
        with self._lock:
            ent = self._open.get(volume)
            if ent is not None and not self.backend.usable(ent.vol):
                # Its daemon went away: new connections open anew (on the restarted
                # daemon); the old ones keep the old entry until they disconnect.
                self._stale[id(ent.vol)] = self._open.pop(volume)
                ent = None
            if ent is None:
                ent = _Open(self.backend.open(volume))
                self._open[volume] = ent
            ent.refs += 1
            return ent.vol

    def _release(self, volume: str, vol: Any) -> None:
        with self._lock:
            ent = self._open.get(volume)
            if ent is None or ent.vol is not vol:
                ent = self._stale.get(id(vol))
                if ent is None:
                    return
            ent.refs -= 1
            if ent.refs > 0:
                return
            if self._open.get(volume) is ent:
                del self._open[volume]
            else:
                del self._stale[id(vol)]
            self.backend.close(ent.vol)

    def _remove_all(self, names: list[str]) -> None:
        for name in names:
            try:
                self.backend.remove(name, internal=True)
            except ArchipelagoError as e:
                log.warning("could not remove scratch volume %s: %s", name, e)

    def open_volumes(self) -> dict[str, int]:
        """Volume name -> number of connections (for tests and status)."""
        with self._lock:
            return {k: v.refs for k, v in self._open.items()}
