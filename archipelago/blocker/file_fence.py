"""Fencing (and object ages) for the file blocker: each fenced mutation runs under the fence's shared lock
in the same worker thread as its syscalls (archipelago.blocker.fence)."""

from __future__ import annotations

import fcntl
import os
from typing import Any

from archipelago.blocker.base import check_name, check_range
from archipelago.blocker.fence import FenceFiles
from archipelago.errors import Fenced, InvalidArgument, NotFound


class FileFenceMixin:
    """fence_bump / fence_check / fenced_op / fence_drop (and mtime / touch) of FileBlocker."""

    _fences: FenceFiles
    _run: Any
    _path: Any
    _note_file: Any

    def path_of(self, name: str) -> str:
        """File of object ``name``, for fast paths that pread/pwrite it directly."""
        return self._path(check_name(name))

    def note_dirty(self, path: str) -> None:
        """Record a file written outside the blocker (see path_of) so flush() syncs it."""
        self._note_file(path)

    @staticmethod
    def new_fences(root: str) -> FenceFiles:
        """The fence files under ``root``."""
        return FenceFiles(root)

    @property
    def fences(self) -> FenceFiles:
        """The fence files (for in-place fast paths that write objects themselves)."""
        return self._fences

    async def fence_bump(self, key: str) -> int:
        """Grant a new writer generation of map ``key``: older writers become Fenced."""
        check_name(key)
        return await self._run(self._fences.bump, key)

    async def fence_check(self, key: str, gen: int) -> None:
        """Fenced unless ``gen`` is the current generation of ``key``."""
        check_name(key)
        if await self._run(self._fences.current, key) != gen:
            from archipelago.blocker.fence import fenced_message

            raise Fenced(fenced_message(key))

    async def fenced_op(self, key: str, gen: int, op: str, *args: Any) -> None:
        """Run mutation ``op`` (write, put, copy, delete) only while ``gen`` is current."""
        check_name(key)
        s: Any = self
        if op == "write":
            name, offset, data, fua = args
            check_name(name)
            check_range(offset, len(data))
            call: tuple = (s._write, self._path(name), offset, data, fua)
        elif op == "put":
            name, data, fua = args
            check_name(name)
            check_range(0, len(data))
            call = (s._put, self._path(name), data, fua)
        elif op == "copy":
            src, dst, fua = args
            call = (s._copy, self._path(check_name(src)), self._path(check_name(dst)), fua)
        elif op == "delete":
            (name,) = args
            call = (s._delete, self._path(check_name(name)), name)
        else:
            raise InvalidArgument(f"not a fenced operation: {op!r}")
        await self._run(self._fences.call, key, gen, *call)

    async def fence_forget(self, key: str) -> None:
        """Close the cached fence descriptor of a volume closed here."""
        self._fences.forget(check_name(key))

    async def fence_drop(self, key: str) -> None:
        """Forget the fence of a removed map."""
        check_name(key)
        await self._run(self._fences.drop, key)

    async def mtime(self, name: str) -> float:
        """When the object file was last written or touched."""
        return await self._run(_mtime, self._path(check_name(name)), name)

    async def touch(self, name: str) -> bool:
        """Make an existing object young again (False if absent)."""
        return await self._run(_touch, self._path(check_name(name)))

    async def delete_if_old(self, name: str, cutoff: float) -> bool:
        """Delete unless written or touched at or after ``cutoff``: the age check and the
        unlink hold the object file's exclusive flock, a touch holds it shared, so a
        touch is either seen by the check or finds the object gone (and re-uploads)."""
        return await self._run(self._delete_if_old, self._path(check_name(name)), name, cutoff)

    def _delete_if_old(self, path: str, name: str, cutoff: float) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"object {name!r} not found") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_mtime >= cutoff or not _same_file(fd, path):
                return False  # touched, or replaced by a new put: young either way
            self._delete(path, name)  # type: ignore[attr-defined]
            return True
        finally:
            os.close(fd)


def _mtime(path: str, name: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        raise NotFound(f"object {name!r} not found") from None


def _touch(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        # Shared with other touches, exclusive against GC's age check + unlink.
        fcntl.flock(fd, fcntl.LOCK_SH)
        if not _same_file(fd, path):
            return False  # GC unlinked it meanwhile: the caller uploads it again
        os.utime(fd)
        return True
    finally:
        os.close(fd)


def _same_file(fd: int, path: str) -> bool:
    """True if ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    f = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (f.st_dev, f.st_ino)
