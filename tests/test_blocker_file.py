"""File-blocker specifics: on-disk layout, permissions, fsync policy, no I/O on the loop."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from archipelago.blocker.file import FileBlocker

pytestmark = pytest.mark.timeout(60)


async def test_fanout_layout_and_permissions(tmp_path: Path) -> None:
    b = FileBlocker(str(tmp_path / "s"))
    try:
        await b.write("vol-1", 0, b"data")
        await b.lock("vol-1", "h:1")
        h = hashlib.md5(b"vol-1").hexdigest()
        obj = tmp_path / "s" / "objects" / h[:2] / h[2:4] / "vol-1"
        assert obj.read_bytes() == b"data"
        assert stat.S_IMODE(obj.stat().st_mode) == 0o600
        for d in (tmp_path / "s", obj.parent, obj.parent.parent, tmp_path / "s" / "locks"):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        lock = tmp_path / "s" / "locks" / "vol-1"
        # A symlink naming the owner (private: the locks directory is 0700).
        assert lock.is_symlink() and os.readlink(lock) == "h:1"
        assert await b.list() == ["vol-1"]
    finally:
        await b.close()


class _SyncSpy:
    """Counts fdatasync/fsync calls by the inode they hit, and the thread they run on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.data: list[int] = []
        self.dirs: list[int] = []
        self.threads: set[str] = set()
        real_fdatasync, real_fsync = os.fdatasync, os.fsync

        def fdatasync(fd: int) -> None:
            self.data.append(os.fstat(fd).st_ino)
            self.threads.add(threading.current_thread().name)
            real_fdatasync(fd)

        def fsync(fd: int) -> None:
            self.dirs.append(os.fstat(fd).st_ino)
            real_fsync(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "fsync", fsync)


async def test_fsync_policy_follows_fua_and_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = FileBlocker(str(tmp_path / "s"))
    try:
        await b.write("x", 0, b"first")  # created (temp + link), not yet durable
        spy = _SyncSpy(monkeypatch)
        await b.write("x", 5, b"more")
        assert spy.data == [] and spy.dirs == []
        await b.flush()
        ino = os.stat(b._path("x")).st_ino
        assert spy.data == [ino]
        # The new name's directory (and its new fan-out parents) became durable too.
        assert os.stat(os.path.dirname(b._path("x"))).st_ino in spy.dirs
        spy.data.clear()
        await b.flush()
        assert spy.data == []  # nothing written since
        await b.write("x", 0, b"F", fua=True)
        assert spy.data == [ino]
        await b.write("y", 0, b"new", fua=True)
        assert os.stat(os.path.dirname(b._path("y"))).st_ino in spy.dirs
        assert spy.threads and all(t.startswith("file-blocker") for t in spy.threads)
    finally:
        await b.close()


async def test_no_fsync_when_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = FileBlocker(str(tmp_path / "s"), fsync=False)
    try:
        spy = _SyncSpy(monkeypatch)
        await b.write("x", 0, b"a", fua=True)
        await b.put("y", b"b")
        await b.copy("y", "z", fua=True)
        await b.hash("y")
        await b.lock("l", "o")
        await b.flush()
        assert spy.data == [] and spy.dirs == []
    finally:
        await b.close()


async def test_blocking_calls_never_run_on_the_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.current_thread()
    seen: list[threading.Thread] = []
    for fn in ("open", "pwrite", "preadv", "pread", "unlink", "replace", "link", "stat"):
        real = getattr(os, fn)

        def spy(*a: object, _real: object = real, **k: object) -> object:
            seen.append(threading.current_thread())
            return _real(*a, **k)  # type: ignore[operator]

        monkeypatch.setattr(os, fn, spy)
    b = FileBlocker(str(tmp_path / "s"))
    seen.clear()  # the constructor runs where it is called
    try:
        await b.write("a", 0, b"1" * 10000)
        await b.read("a", 0, 100)
        await b.put("b", b"2")
        await b.copy("a", "c")
        await b.hash("a")
        await b.size("a")
        await b.lock("l", "o")
        await b.lock_info("l")
        await b.unlock("l", "o")
        await b.delete("c")
        await b.list()
        await b.flush()
        assert seen and loop_thread not in seen
    finally:
        monkeypatch.undo()
        await b.close()


async def test_closed_blocker_refuses_work(tmp_path: Path) -> None:
    from archipelago.errors import ArchipelagoError

    b = FileBlocker(str(tmp_path / "s"))
    await b.close()
    await b.close()  # idempotent
    with pytest.raises(ArchipelagoError, match="closed"):
        await b.read("a", 0, 1)


async def test_unusable_root_is_a_clear_error(tmp_path: Path) -> None:
    from archipelago.errors import ArchipelagoError

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ArchipelagoError, match="file blocker at"):
        FileBlocker(str(f / "sub"))


async def test_public_path_of_and_note_dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from archipelago.errors import InvalidArgument

    b = FileBlocker(str(tmp_path / "s"))
    try:
        await b.put("blk", b"abcd")
        path = b.path_of("blk")
        assert open(path, "rb").read() == b"abcd"
        with pytest.raises(InvalidArgument):
            b.path_of("../x")
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, b"Z", 0)  # a direct write, as the NBD fast path does
        os.close(fd)
        spy = _SyncSpy(monkeypatch)
        b.note_dirty(path)
        await b.flush()
        assert spy.data == [os.stat(path).st_ino]
        assert await b.read("blk", 0, 4) == b"Zbcd"
    finally:
        await b.close()
