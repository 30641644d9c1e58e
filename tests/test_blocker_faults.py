"""File blocker under faults: a full disk and a crash between temp write and rename."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from archipelago.blocker.file import FileBlocker
from archipelago.errors import NoSpace
from archipelago.hashing import block_hash
from tests.fs_helpers import mounted_tmpfs

pytestmark = pytest.mark.timeout(60)


def _enospc(*_args: Any, **_kw: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


def _visible_tmp(root: Path) -> list[str]:
    """Temp files in the store, except the spares writers keep for a full disk."""
    return [n for n in os.listdir(root / "tmp") if ".spare-" not in n]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Directory of the file store under test."""
    return tmp_path / "store"


@pytest.mark.parametrize("failing", ["pwrite", "fdatasync", "copy_file_range"])
async def test_injected_enospc_leaves_nothing_half_written(
    store: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    b = FileBlocker(str(store))
    src = b"source" * 100
    # name -> (content before, content if the operation succeeds, operation)
    cases: dict[str, tuple[bytes | None, bytes, Callable[[], Any]]] = {
        "new": (None, b"new content", lambda: b.put("new", b"new content")),
        "old": (b"old content", b"replacement", lambda: b.put("old", b"replacement")),
        "fresh": (None, b"x" * 4096, lambda: b.write("fresh", 0, b"x" * 4096, fua=True)),
        "old2": (b"old2 content", src, lambda: b.copy("src", "old2", fua=True)),
        "copied": (None, src, lambda: b.copy("src", "copied")),
    }
    try:
        await b.write("src", 0, src)
        for name, (before, _, _) in cases.items():
            if before is not None:
                await b.put(name, before)
        monkeypatch.setattr(os, failing, _enospc)
        failures = 0
        for _, _, op in cases.values():
            try:
                await op()
            except NoSpace:
                failures += 1
        for op in (lambda: b.hash("src"), lambda: b.lock("vol", "host:1")):
            try:
                await op()
            except NoSpace:
                failures += 1
        assert failures >= 2  # each fault point is on the path of several operations
        monkeypatch.undo()
        # Every object shows its old content or its complete new content, never a mix.
        for name, (before, after, _) in cases.items():
            now = None
            if await b.exists(name):
                size = await b.size(name)
                now = await b.read(name, 0, size)
            assert now in (before, after), name
        assert set(await b.list()) <= {"src", *cases, block_hash(src)}
        assert _visible_tmp(store) == []
        # And the store is still usable.
        await b.put("after", b"fine")
        assert await b.read("after", 0, 4) == b"fine"
        assert await b.hash("src") == block_hash(src)
    finally:
        monkeypatch.undo()
        await b.close()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root); skipped where mounting is not allowed."""
    with mounted_tmpfs(tmp_path / "tiny", "1m") as mnt:
        yield mnt


async def test_real_full_disk(tiny_fs: Path) -> None:
    b = FileBlocker(str(tiny_fs / "store"))
    try:
        await b.put("small", b"kept")
        with pytest.raises(NoSpace):
            await b.put("huge", os.urandom(2 * 1024 * 1024))
        assert not await b.exists("huge")
        with pytest.raises(NoSpace):
            await b.write("huge2", 0, os.urandom(2 * 1024 * 1024))
        assert not await b.exists("huge2")
        assert await b.read("small", 0, 4) == b"kept"
        assert _visible_tmp(tiny_fs / "store") == []
        await b.put("small", b"still usable")
        assert await b.read("small", 0, 12) == b"still usable"
    finally:
        await b.close()


CRASHER = textwrap.dedent("""
    import asyncio, os, sys
    from archipelago.blocker.file import FileBlocker

    async def main(root, how):
        b = FileBlocker(root)
        await b.put("victim", b"original")
        await b.write("src", 0, b"copy source")
        def die(*a, **k):
            os._exit(9)  # the process dies between the temp write and the rename/link
        if how == "put":
            os.replace = die
            await b.put("victim", b"REPLACED")
        elif how == "copy":
            os.replace = die
            await b.copy("src", "victim")
        elif how == "create":
            os.link = die
            await b.write("newborn", 0, b"half")
        elif how == "hash":
            os.link = die
            await b.hash("src")
    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


@pytest.mark.parametrize("how", ["put", "copy", "create", "hash"])
async def test_crash_between_temp_write_and_rename(store: Path, how: str) -> None:
    r = subprocess.run([sys.executable, "-c", CRASHER, str(store), how],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 9, r.stderr
    assert len(_visible_tmp(store)) == 1  # the crashed writer's temp file is left behind
    b = FileBlocker(str(store))  # reopening sweeps temp files of dead writers
    try:
        assert os.listdir(store / "tmp") == []  # and their spares
        assert await b.read("victim", 0, 8) == b"original"
        assert await b.list() == ["src", "victim"]
        await b.write("newborn", 0, b"whole")
        await b.copy("src", "victim")
        assert await b.read("victim", 0, 11) == b"copy source"
        assert await b.read("newborn", 0, 5) == b"whole"
    finally:
        await b.close()


async def test_sweep_keeps_temp_files_of_live_writers(store: Path) -> None:
    FileBlocker(str(store))._pool.shutdown()
    mine = store / "tmp" / f"{os.getpid()}.inflight"
    mine.write_bytes(b"being written")
    b = FileBlocker(str(store))
    try:
        assert mine.exists()
    finally:
        await b.close()
