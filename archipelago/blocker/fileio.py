"""Small blocking file helpers for the file blocker (run in its thread pool)."""

from __future__ import annotations

import contextlib
import errno
import os

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
