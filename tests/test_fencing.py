"""Fencing of evicted writers (docs/fencing.md): two real mapper processes on one file
store. A writes; A is stopped (or killed); B opens the volume with force; A resumes and
its next write, zero and flush fail with "fenced"; none of A's bytes land after B's
open: B's data reads back intact from a third, fresh mapper."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from archipelago.blocker.base import make_owner
from archipelago.blocker.file import FileBlocker
from archipelago.blocker.memory import MemoryBlocker
from archipelago.errors import Fenced
from archipelago.mapper import Mapper

pytestmark = pytest.mark.timeout(120)

BS = 64 * 1024
HERE = Path(__file__).parent


class Writer:
    """A fence_writer.py process."""

    def __init__(self, root: Path, tag: str) -> None:
        env = dict(os.environ, PYTHONPATH=f"{HERE.parent}:{HERE}")
        self.p = subprocess.Popen([sys.executable, str(HERE / "fence_writer.py"), str(root),
                                   "vol", tag], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env=env)

    def send(self, cmd: str) -> None:
        """Send one command without waiting for its answer."""
        assert self.p.stdin is not None
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def answer(self) -> str:
        """The next answer line."""
        assert self.p.stdout is not None
        return self.p.stdout.readline().strip()

    def do(self, cmd: str) -> str:
        """Send a command and return its answer."""
        self.send(cmd)
        return self.answer()

    def close(self) -> None:
        """Stop the process."""
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGCONT)
            self.p.kill()
        self.p.wait()


async def _read(root: Path, off: int, n: int) -> bytes:
    m = Mapper(FileBlocker(str(root)), make_owner("reader"))
    v = await m.open("vol", force=True)
    try:
        return await v.read(off, n)
    finally:
        await m.close()
        await m.blocker.close()


@pytest.mark.parametrize("evict", ["stop", "kill"])
def test_evicted_writer_is_fenced(tmp_path: Path, evict: str) -> None:
    """A (stopped or killed) loses the volume to B's forced open; nothing of A lands after."""
    root = tmp_path / "store"

    async def create() -> None:
        m = Mapper(FileBlocker(str(root)), make_owner("setup"))
        await m.create("vol", 4 * BS, block_size=BS)
        await m.blocker.close()

    asyncio.run(create())
    a, b = Writer(root, "a"), Writer(root, "b")
    try:
        assert a.do("open") == "ok"
        assert a.do(f"write 0 {0xA1} {BS}") == "ok"  # allocates an owned block
        assert a.do(f"write 100 {0xA2} 1000") == "ok"  # in place, into the owned block
        assert a.do("flush") == "ok"
        assert b.do("open") == "err locked"  # A holds it
        os.kill(a.p.pid, signal.SIGSTOP if evict == "stop" else signal.SIGKILL)
        if evict == "kill":
            a.p.wait()
        assert b.do("open force") == "ok"  # takes the volume over
        assert b.do(f"write 0 {0xB1} 512") == "ok"  # in place into A's block, now B's
        assert b.do(f"write {BS} {0xB2} {BS}") == "ok"
        assert b.do("flush") == "ok"
        if evict == "stop":
            os.kill(a.p.pid, signal.SIGCONT)
            # A wakes up believing it still owns the volume: every mutation is refused.
            assert a.do(f"write 0 {0xAA} 4096") == "err fenced"  # in place
            assert a.do(f"write {2 * BS} {0xAB} {BS}") == "err fenced"  # new block
            assert a.do(f"write {BS} {0xAC} 10") == "err fenced"  # copy-up of B's block
            assert a.do(f"zero 0 {BS}") == "err fenced"  # would delete B's block
            assert a.do("flush") == "err fenced"
            assert a.do("read 0 512") == "ok " + __import__("hashlib").sha256(
                bytes([0xB1]) * 512).hexdigest()  # reads still work: B's data
        assert b.do("flush") == "ok"
    finally:
        a.close()
        b.close()
    want = bytearray([0xA1]) * BS + bytearray([0xB2]) * BS + bytes(2 * BS)
    want[100:1100] = bytes([0xA2]) * 1000
    want[0:512] = bytes([0xB1]) * 512
    assert asyncio.run(_read(root, 0, 4 * BS)) == bytes(want)


async def test_every_grant_fences_the_previous_one() -> None:
    """Unit level (memory store): each writable open bumps the generation, and the writer
    granted before loses every mutation path; block names are never reused."""
    b = MemoryBlocker()
    m1, m2 = Mapper(b, "h:1:a"), Mapper(b, "h:2:b")
    await m1.create("v", 4 * BS, block_size=BS)
    v1 = await m1.open("v")
    await v1.write(0, b"\x01" * BS)
    names1 = set(await b.list("v+"))
    await v1.zero(0, BS)  # deletes the owned block...
    await v1.write(0, b"\x02" * BS)  # ...and the new one gets a new name
    names2 = set(await b.list("v+"))
    assert len(names1) == len(names2) == 1 and names1 != names2
    v2 = await m2.open("v", force=True)
    assert v2.gen is not None and v1.gen is not None and v2.gen > v1.gen
    for op in (v1.write(0, b"x"), v1.write(BS, b"y" * BS), v1.zero(0, BS), v1.flush()):
        with pytest.raises(Fenced):
            await op
    with pytest.raises(Fenced):
        await m1.snapshot("v", "s")  # a map-level operation through the fenced open
    await v2.write(0, b"z")
    assert await v2.read(0, 2) == b"z\x02"
    await m2.close()
    await m1.close()


async def test_forced_unlock_fences_the_holder_at_once() -> None:
    """`archip volume unlock --force` (Mapper.unlock) bumps the fence itself: the evicted
    holder is refused even before anybody else opens the volume."""
    b = MemoryBlocker()
    m1, m2 = Mapper(b, "h:1:a"), Mapper(b, "h:2:b")
    await m1.create("v", 4 * BS, block_size=BS)
    v1 = await m1.open("v")
    await v1.write(0, b"a" * BS)
    await m2.unlock("v", force=True)
    with pytest.raises(Fenced):
        await v1.write(0, b"b")
    await m1.close()


def test_two_daemons_over_nbd_file_store(tmp_path: Path) -> None:
    """Two daemons (A, B) on one file store, volumes over NBD with the C filter: A writes
    (in place, through its filter); B breaks A's lock by force and writes; A's next
    writes fail (in place and allocating) and B's data reads back intact."""
    nbd = pytest.importorskip("nbd", reason="python3-libnbd is not installed")
    from daemon_helpers import Daemon

    store = tmp_path / "store"
    opts = [f"blocker.file.path={store}", "blocker.file.fsync=false", "metrics.listen="]
    a, b = Daemon(tmp_path / "a", opts), Daemon(tmp_path / "b", opts)

    def connect(d: Daemon) -> nbd.NBD:
        h = nbd.NBD()
        h.set_export_name("vm")
        h.connect_unix(str(d.data_dir / "nbd.sock"))
        return h

    try:
        a.archip("daemon", "start", "--json", check=True)
        b.archip("daemon", "start", "--json", check=True)
        a.archip("volume", "create", "vm", "--size", str(8 * BS), "--block-size", "64K",
                 check=True)
        ha = connect(a)
        ha.pwrite(b"\xa1" * (2 * BS), 0)  # allocations (mapper)
        for k in range(4):  # in place (C filter or map cache)
            ha.pwrite(b"\xa2" * 4096, k * 4096)
        ha.flush()
        r = b.archip("volume", "unlock", "--force", "vm")
        assert r.rc == 0, r.err
        hb = connect(b)
        hb.pwrite(b"\xb1" * 4096, 0)  # into the block A wrote in place
        hb.pwrite(b"\xb2" * BS, 2 * BS)
        hb.flush()
        for off, n in ((4096, 4096), (0, 512), (4 * BS, BS)):  # in place, in place, new
            with pytest.raises(nbd.Error) as e:
                ha.pwrite(b"\xee" * n, off)
            assert e.value.errno in ("EIO", errno.EIO), e.value  # NBD has no ESTALE
        with pytest.raises(nbd.Error):
            ha.flush()
        want = bytearray(b"\xa1" * (2 * BS) + b"\xb2" * BS + bytes(5 * BS))
        want[0:4 * 4096] = b"\xa2" * (4 * 4096)
        want[0:4096] = b"\xb1" * 4096
        assert hb.pread(8 * BS, 0) == bytes(want)
        hb.shutdown()
        with contextlib.suppress(nbd.Error):
            ha.shutdown()
    finally:
        a.stop()
        b.stop()


async def test_closed_volume_keeps_no_fence_descriptor(tmp_path: Path) -> None:
    """Fence files are held open only while their volume is (a long-running mapper
    opening thousands of volumes must not run out of descriptors)."""
    b = FileBlocker(str(tmp_path / "store"))
    m = Mapper(b, make_owner("fd"))

    def fence_fds() -> int:
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                n += "/fences/" in os.readlink(f"/proc/self/fd/{fd}")
        return n

    for k in range(3):
        await m.create(f"v{k}", 4 * BS, block_size=BS)
        v = await m.open(f"v{k}")
        await v.write(0, b"x" * BS)  # a fenced write holds the fence file open
        assert fence_fds() >= 1
        await v.close()
        await m.snapshot(f"v{k}", f"s{k}")  # a grant without an open volume
        assert fence_fds() == 0
    await m.close()
    await b.close()
