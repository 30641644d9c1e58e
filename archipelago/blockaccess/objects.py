"""Object I/O of direct block access: reads with zero fill, in-place writes, dirty sets.

A plan is a list of :data:`Piece`: (object file, "" for a hole; offset in the object;
offset in the caller's buffer; length). Plans come from locate.py (the mapper's own
chunks) or from a client's ``locate`` answers (archipelago/nbd/peer_cache.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

from archipelago.blocker.fileio import fdatasync_paths
from archipelago.hashing import is_zero

#: (object file or "" = hole, offset in the object, offset in the buffer, length)
Piece = tuple[str, int, int, int]
_ZEROS = memoryview(bytes(4 * 1024 * 1024))


def zero_fill(buf: memoryview, start: int, end: int) -> None:
    """Zeros into ``buf[start:end]`` (holes and the unstored tail of short objects)."""
    n = end - start
    buf[start:end] = _ZEROS[:n] if n <= len(_ZEROS) else bytes(n)


def read_pieces(plan: Sequence[Piece], buf: memoryview) -> bool:
    """Fill ``buf`` from the plan's objects; False (buf partly written) if an object file
    is gone (its block was zeroed or its volume removed meanwhile): ask the mapper."""
    for path, o, p, ln in plan:
        if not path:
            zero_fill(buf, p, p + ln)
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            got = os.preadv(fd, [buf[p : p + ln]], o)
        finally:
            os.close(fd)
        if got < ln:  # objects may be short: what is not stored reads as zeros
            zero_fill(buf, p + got, p + ln)
    return True


def makes_zero_entry(o: int, ln: int, blen: int, data: memoryview) -> bool:
    """True if a piece covers its whole block (``blen`` long) with zeros: the mapper turns
    that into a zero entry (a map update), so it never goes in place."""
    return o == 0 and ln >= blen and is_zero(data)


def write_pieces(plan: Sequence[Piece], data: memoryview, fua: bool,
                 dirty: Callable[[str], None] | None) -> bool:
    """pwrite ``data`` into the plan's existing objects; False (nothing written) if one is
    gone. All files are opened first. ``fua``: fdatasync each before returning; else
    ``dirty(path)`` so the next flush syncs it (None: syncing is off)."""
    if len(plan) == 1:  # the common case (a request inside one block), without the lists
        path, o, p, ln = plan[0]
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            _write_piece(fd, path, data, o, p, ln, fua, dirty)
        finally:
            os.close(fd)
        return True
    fds: list[int] = []
    try:
        for path, _, _, _ in plan:
            fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
    except FileNotFoundError:
        for fd in fds:
            os.close(fd)
        return False
    try:
        for fd, (path, o, p, ln) in zip(fds, plan, strict=True):
            _write_piece(fd, path, data, o, p, ln, fua, dirty)
    finally:
        for fd in fds:
            os.close(fd)
    return True


def _write_piece(fd: int, path: str, data: memoryview, o: int, p: int, ln: int, fua: bool,
                 dirty: Callable[[str], None] | None) -> None:
    done = os.pwrite(fd, data[p : p + ln], o)
    while done < ln:  # short writes are rare: one syscall per piece on the hot path
        done += os.pwrite(fd, data[p + done : p + ln], o + done)
    if fua:
        os.fdatasync(fd)
    elif dirty is not None:
        dirty(path)


class DirtyFiles:
    """Files written in place since the last flush (one set per writing process)."""

    def __init__(self) -> None:
        self._paths: set[str] = set()
        self._mu = threading.Lock()

    def add(self, path: str) -> None:
        """Note ``path`` as written and not yet synced."""
        with self._mu:
            self._paths.add(path)

    def __len__(self) -> int:
        return len(self._paths)

    def flush(self) -> None:
        """fdatasync every noted file (a file gone since holds nothing left to sync)."""
        with self._mu:
            paths, self._paths = self._paths, set()
        fdatasync_paths(paths)
