"""Small blocking file helpers for the file blocker (run in its thread pool)."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading

from archipelago.blocker.base import pid_alive

_COPY_CHUNK = 8 * 1024 * 1024


def sync_dir(d: str) -> None:
    """fsync a directory so the names created or removed in it are durable."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """pwrite all of ``data`` (pwrite may write less than asked)."""
    mv = memoryview(data).cast("B")
    while mv:
        n = os.pwrite(fd, mv, offset)
        mv = mv[n:]
        offset += n


def copy_range(sfd: int, dfd: int, length: int) -> None:
    """Copy ``length`` bytes from offset 0; falls back to read/write across filesystems."""
    off = 0
    while off < length:
        want = min(_COPY_CHUNK, length - off)
        try:
            n = os.copy_file_range(sfd, dfd, want, off, off)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = os.pwrite(dfd, os.pread(sfd, want, off), off)
        if n == 0:
            break
        off += n
    os.ftruncate(dfd, length)


def read_zero_filled(path: str, offset: int, size: int, missing_ok: bool = True) -> bytes:
    """Read ``size`` bytes at ``offset``; holes, the part past the end and (if
    ``missing_ok``, else FileNotFoundError) absent files are zeros."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if not missing_ok:
            raise
        return bytes(size)
    try:
        buf = bytearray(size)
        mv = memoryview(buf)
        done = 0
        while done < size:
            n = os.preadv(fd, [mv[done:]], offset + done)
            if n == 0:
                break
            done += n
        return bytes(buf)
    finally:
        os.close(fd)


def sweep_dead_temps(tmp_dir: str) -> None:
    """Remove temp files (named ``<pid>.<random>``) whose writer process is gone."""
    for entry in os.listdir(tmp_dir):
        pid_text = entry.partition(".")[0]
        if not pid_text.isdigit() or not pid_alive(int(pid_text)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(tmp_dir, entry))


def fdatasync_paths(paths: set[str]) -> None:
    """fdatasync each file (in path order); a file gone since holds nothing left to sync."""
    for path in sorted(paths):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)


def at_least(path: str, size: int) -> bool:
    """True if the file at ``path`` exists with at least ``size`` bytes."""
    try:
        return os.stat(path).st_size >= size
    except FileNotFoundError:
        return False


def read_lock(path: str) -> str | None:
    """Owner of the lock at ``path`` (a symlink to it), None if free."""
    try:
        return os.readlink(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    try:  # a regular file: a lock taken by an older version (the owner as content)
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def try_lock(path: str, owner: str, sync: bool) -> str | None:
    """Take the lock at ``path`` (durably if ``sync``): None when taken now, else the
    current holder.

    The lock is a symlink whose target is the owner: created atomically with its
    content, and a short one lives in the inode (ext4 "fast" symlinks, tmpfs inline
    links), so on a full filesystem a volume can still be opened to read or trim it,
    where writing a temp file first fails with ENOSPC.
    """
    while True:
        try:
            os.symlink(owner, path)
            if sync:
                sync_dir(os.path.dirname(path))
            return None
        except FileExistsError:
            holder = read_lock(path)
            if holder is not None:
                return holder
            # Released between our symlink and our read: try again.


class Spare:
    """A preallocated temp file that lets a put replacing an object of at least the
    same size proceed on a full filesystem (see FileBlocker._put).

    Freeing space needs space: a trim must rewrite a map chunk before it may delete
    the blocks the chunk pointed to, and a rewrite goes through a temp file. The
    spare is that temp file, allocated while space was free; the object it replaces
    frees at least as much, so the spare can be allocated again right after.
    """

    #: Bytes: above a map chunk (about 132 KiB) and any map header.
    SIZE = 256 * 1024

    def __init__(self, tmp_dir: str) -> None:
        self._tmp_dir = tmp_dir
        self.path = os.path.join(tmp_dir, f"{os.getpid()}.spare-{secrets.token_hex(4)}")
        self._lock = threading.Lock()
        self.wanted = False  # only writers keep one (set at their first put)
        self.ready = False

    def ensure(self) -> None:
        """Allocate the spare if it is wanted and missing (quietly fails on a full disk)."""
        if self.ready or not self.wanted:
            return
        with self._lock:
            if self.ready:
                return
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    os.posix_fallocate(fd, 0, self.SIZE)
                finally:
                    os.close(fd)
                self.ready = True
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)

    def take(self, data: bytes | memoryview, sync: bool) -> str | None:
        """A temp file holding ``data``, written into the spare's allocated blocks (the
        caller renames it into place); None if no spare is ready or ``data`` is larger."""
        if len(data) > self.SIZE:
            return None
        with self._lock:
            if not self.ready:
                return None
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            try:
                pwrite_all(fd, data, 0)
                os.ftruncate(fd, len(data))
                if sync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            tmp = os.path.join(self._tmp_dir, f"{os.getpid()}.{secrets.token_hex(8)}")
            os.rename(self.path, tmp)
            self.ready = False
            return tmp

    def remove(self) -> None:
        """Give the spare's space back (the blocker closes)."""
        with self._lock:
            self.ready = False
            with contextlib.suppress(OSError):
                os.unlink(self.path)
