"""Local-file blocker, the embedded default: one file per object under a fan-out tree.

Layout under ``path``: ``objects/ab/cd/<name>`` (ab/cd from a hash of the name),
``locks/<name>`` (one symlink per held lock, its target the owner string), ``fences/<uid>``
(writer generations, fence.py) and ``tmp/`` (temp files ``<pid>.<random>``; ones left by
dead processes are swept on open).
New names appear only by rename/link of a complete temp file, so a crash never
exposes a half-written object. With ``fsync`` (the default) data is fdatasync'ed on
FUA and flush, and directories are fsync'ed once a new name in them must be durable.
All blocking calls run in a small private thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from archipelago.blocker.base import Blocker, LockInfo, check_name, check_range, parse_owner
from archipelago.blocker.file_fence import FileFenceMixin
from archipelago.blocker.fileio import (
    Spare,
    at_least,
    copy_range,
    fdatasync_paths,
    pwrite_all,
    read_lock,
    read_zero_filled,
    sweep_dead_temps,
    sync_dir,
    try_lock,
)
from archipelago.errors import ArchipelagoError, Locked, NotFound, from_errno
from archipelago.hashing import ZERO_HASH

T = TypeVar("T")
_READ_CHUNK = 1024 * 1024


class FileBlocker(FileFenceMixin, Blocker):
    """Objects as files in a directory tree (see module doc)."""

    kind = "file"

    def __init__(self, path: str, fsync: bool = True, threads: int = 4) -> None:
        self.root = os.path.abspath(path)
        self.fsync = fsync
        self._objects = os.path.join(self.root, "objects")
        self._locks = os.path.join(self.root, "locks")
        self._tmp = os.path.join(self.root, "tmp")
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="file-blocker")
        self._mutex = threading.Lock()
        self._dirty_files: set[str] = set()
        self._dirty_dirs: set[str] = set()
        self._closed = False
        self._spare = Spare(self._tmp)
        try:
            for d in (self.root, self._objects, self._locks, self._tmp):
                os.makedirs(d, mode=0o700, exist_ok=True)
            sweep_dead_temps(self._tmp)
            self._fences = self.new_fences(self.root)
        except OSError as e:
            self._pool.shutdown(wait=False)
            raise from_errno(e.errno, f"file blocker at {self.root}: {e.strerror}") from e

    # -- plumbing ---------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise ArchipelagoError("file blocker is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        except OSError as e:
            what = f" {os.path.basename(args[0])!r}" if args and isinstance(args[0], str) else ""
            raise from_errno(e.errno, f"{fn.__name__.strip('_')}{what}: {e.strerror}") from e

    def _path(self, name: str) -> str:
        h = hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()
        return os.path.join(self._objects, h[:2], h[2:4], name)

    def _temp(self, fill: Callable[[int], object], sync: bool) -> str:
        """A complete temp file written by ``fill(fd)``; removed again if anything fails."""
        tmp = os.path.join(self._tmp, f"{os.getpid()}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                fill(fd)
                if sync and self.fsync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def _ensure_parent(self, path: str) -> str:
        """Create the fan-out directories of ``path``; new ones are dirty in their parent."""
        d = os.path.dirname(path)
        if not os.path.isdir(d):
            for sub in (os.path.dirname(d), d):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(sub, 0o700)
                    self._note_dir(os.path.dirname(sub))
        return d

    def _note_dir(self, d: str) -> None:
        if not self.fsync:
            return
        with self._mutex:
            self._dirty_dirs.add(d)

    def _note_file(self, path: str) -> None:
        with self._mutex:
            self._dirty_files.add(path)

    def _sync_dirs_now(self, *dirs: str) -> None:
        """Sync ``dirs`` plus any pending fan-out parents (a new name must be reachable)."""
        with self._mutex:
            pending = set(self._dirty_dirs)
            self._dirty_dirs.clear()
        for d in sorted(pending | set(dirs), key=len, reverse=True):
            sync_dir(d)

    def _publish(self, tmp: str, path: str, replace: bool, durable: bool) -> bool:
        """Give the complete temp file its name; False if ``path`` appeared meanwhile."""
        d = self._ensure_parent(path)
        try:
            if replace:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
                finally:
                    os.unlink(tmp)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        if self.fsync:
            if durable:
                self._sync_dirs_now(d)
            else:
                self._note_dir(d)
                self._note_file(path)
        return True

    # -- data ---------------------------------------------------------------------

    async def read(self, name: str, offset: int, size: int) -> bytes:
        """Read with zero fill for holes, short and absent objects."""
        check_name(name)
        check_range(offset, size)
        return await self._run(read_zero_filled, self._path(name), offset, size)

    async def read_existing(self, name: str, offset: int, size: int) -> bytes:
        """Read with zero fill past the end; NotFound if the object is absent."""
        check_name(name)
        check_range(offset, size)
        try:
            return await self._run(read_zero_filled, self._path(name), offset, size, False)
        except NotFound:
            raise NotFound(f"object {name!r} not found") from None

    async def write(self, name: str, offset: int, data: bytes | memoryview, fua: bool = False) -> None:
        """pwrite into the object, creating it atomically when absent."""
        check_name(name)
        check_range(offset, len(data))
        await self._run(self._write, self._path(name), offset, data, fua)

    def _write(self, path: str, offset: int, data: bytes | memoryview, fua: bool) -> None:
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                tmp = self._temp(lambda fd: pwrite_all(fd, data, offset), sync=fua)
                if self._publish(tmp, path, replace=False, durable=fua):
                    return
                continue  # someone created it first: write into theirs
            try:
                pwrite_all(fd, data, offset)
                if self.fsync:
                    if fua:
                        os.fdatasync(fd)
                        if self._dirty_dirs:  # its name may not be durable yet
                            self._sync_dirs_now()
                    else:
                        self._note_file(path)
            finally:
                os.close(fd)
            return

    async def put(self, name: str, data: bytes | memoryview, fua: bool = True) -> None:
        """Atomically replace the whole object (temp file + rename)."""
        check_name(name)
        check_range(0, len(data))
        await self._run(self._put, self._path(name), data, fua)

    def _put(self, path: str, data: bytes | memoryview, fua: bool) -> None:
        self._spare.wanted = True
        self._spare.ensure()
        # Data before name, always: a crash must show the old or the new content.
        try:
            tmp = self._temp(lambda fd: pwrite_all(fd, data, 0), sync=True)
        except OSError as e:
            # Full: a put that does not grow the store (a map chunk rewritten by a
            # trim) may use the spare, so space can be freed on a full disk.
            if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not at_least(path, len(data)):
                raise
            tmp = self._spare.take(data, sync=self.fsync)
            if tmp is None:
                raise
            self._publish(tmp, path, replace=True, durable=fua)
            self._spare.ensure()
            return
        self._publish(tmp, path, replace=True, durable=fua)

    async def copy(self, src: str, dst: str, fua: bool = False) -> None:
        """Copy src over dst in the kernel (copy_file_range), atomically replacing dst."""
        check_name(src)
        check_name(dst)
        await self._run(self._copy, self._path(src), self._path(dst), fua)

    def _copy(self, src: str, dst: str, fua: bool) -> None:
        try:
            sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"object {os.path.basename(src)!r} not found") from None
        try:
            size = os.fstat(sfd).st_size
            tmp = self._temp(lambda dfd: copy_range(sfd, dfd, size), sync=True)
        finally:
            os.close(sfd)
        self._publish(tmp, dst, replace=True, durable=fua)

    async def delete(self, name: str) -> None:
        """Unlink the object; NotFound if absent."""
        check_name(name)
        await self._run(self._delete, self._path(name), name)

    def _delete(self, path: str, name: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise NotFound(f"object {name!r} not found") from None
        with self._mutex:
            self._dirty_files.discard(path)
        if self.fsync:
            self._note_dir(os.path.dirname(path))
        self._spare.ensure()  # space was freed: a spare used on a full disk comes back

    async def size(self, name: str) -> int:
        """File size; NotFound if absent."""
        check_name(name)
        return await self._run(self._size, self._path(name), name)

    def _size(self, path: str, name: str) -> int:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            raise NotFound(f"object {name!r} not found") from None

    async def list(self, prefix: str = "") -> list[str]:
        """Walk the fan-out tree; sorted names starting with ``prefix``."""
        return await self._run(self._list, prefix)

    def _list(self, prefix: str) -> list[str]:
        out: list[str] = []
        for top in os.scandir(self._objects):
            if not top.is_dir():
                continue
            for mid in os.scandir(top.path):
                if not mid.is_dir():
                    continue
                out.extend(e.name for e in os.scandir(mid.path)
                           if e.name.startswith(prefix) and not e.name.startswith("."))
        return sorted(out)

    async def flush(self) -> None:
        """fdatasync every file written since the last flush, then the changed directories."""
        await self._run(self._flush)

    def _flush(self) -> None:
        if not self.fsync:
            return
        with self._mutex:
            files, self._dirty_files = self._dirty_files, set()
        fdatasync_paths(files)
        self._sync_dirs_now()

    async def hash(self, name: str) -> str:
        """Store a content-addressed copy (trailing zeros stripped, deduplicated)."""
        check_name(name)
        return await self._run(self._hash, self._path(name), name)

    def _hash(self, path: str, name: str) -> str:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"object {name!r} not found") from None
        try:
            h = hashlib.sha256()
            kept = 0  # bytes up to the last non-zero byte seen so far
            pending = 0  # zero bytes after it, hashed only if data follows them
            off = 0
            while chunk := os.pread(fd, _READ_CHUNK, off):
                stripped = chunk.rstrip(b"\0")
                if stripped:
                    h.update(bytes(pending))
                    h.update(stripped)
                    kept = off + len(stripped)
                    pending = len(chunk) - len(stripped)
                else:
                    pending += len(chunk)
                off += len(chunk)
            if kept == 0:
                return ZERO_HASH
            content = h.hexdigest()
            target = self._path(content)
            with contextlib.suppress(FileNotFoundError):
                os.utime(target)  # dedup: same name, same content; young again for GC
                return content
            tmp = self._temp(lambda dfd: copy_range(fd, dfd, kept), sync=True)
            # link, not replace: a concurrent hasher of equal content may win; both are fine.
            self._publish(tmp, target, replace=False, durable=True)
            return content
        finally:
            os.close(fd)

    # -- locks --------------------------------------------------------------------

    async def lock(self, name: str, owner: str, wait: bool = False, timeout: float | None = None) -> None:
        """Create locks/<name>, a symlink whose target is ``owner`` (needs no free bytes)."""
        check_name(name)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            holder = await self._run(try_lock, os.path.join(self._locks, name), owner, self.fsync)
            if holder is None or holder == owner:
                return
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                raise Locked(f"{name!r} is locked by {holder}")
            await asyncio.sleep(0.02)

    def _read_lock(self, name: str) -> str | None:
        return read_lock(os.path.join(self._locks, name))

    async def unlock(self, name: str, owner: str, force: bool = False) -> None:
        """Remove the lock; Locked if another owner holds it and not ``force``."""
        check_name(name)
        await self._run(self._unlock, name, owner, force)

    def _unlock(self, name: str, owner: str, force: bool) -> None:
        holder = self._read_lock(name)
        if holder is None:
            return
        if holder != owner and not force:
            raise Locked(f"{name!r} is locked by {holder}")
        try:
            os.unlink(os.path.join(self._locks, name))
        except FileNotFoundError:
            return
        if self.fsync:
            sync_dir(self._locks)

    async def lock_info(self, name: str) -> LockInfo | None:
        """Holder of the lock (None if free), stale when its process is gone."""
        check_name(name)
        holder = await self._run(self._read_lock, name)
        return None if holder is None else parse_owner(holder)

    async def close(self) -> None:
        """Flush pending writes and stop the thread pool."""
        if self._closed:
            return
        try:
            await self.flush()
        finally:
            self._closed = True
            self._pool.shutdown(wait=True)
            self._spare.remove()
            self._fences.close()
