"""Small filesystems for full-disk tests: a private tmpfs, and filling one up."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def mounted_tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "16m") mounted 0700 at ``mnt`` (created), unmounted after;
    the test is skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(path: Path, chunks: tuple[int, ...] = (64 * 1024,)) -> None:
    """Write ``path`` until the filesystem is full, in each of ``chunks`` (bytes) in turn:
    smaller chunks after larger ones take what a larger one did not fit in."""
    with open(path, "wb", buffering=0) as f:
        for size in chunks:
            chunk = os.urandom(size)
            try:
                while True:
                    f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
