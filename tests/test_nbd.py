"""NBD protocol tests: the archipelago plugin in a real nbdkit, driven with libnbd."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nbd_helpers import (
    HOLE_ZERO,
    TEST_BLOCK,
    MiB,
    NbdServer,
    block_status,
    nbd,
    need,
    prepare,
    zero_at,
)

pytestmark = [pytest.mark.nbd, pytest.mark.timeout(60)]

BS = TEST_BLOCK
SIZE = 4 * MiB
ODD_SIZE = MiB + 4096 + 512  # not a multiple of the map block: exact size must survive
SNAP_DATA = bytes(random.Random(7).randbytes(BS + 1000))


@pytest.fixture(scope="module",
                params=["fastpath=yes", "fastpath=no", "backend=peer", "backend=peer+cfilter"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[NbdServer]:
    """Every protocol test runs on both backends: direct (with and without the fast
    path of fastpath.py) and peer (requests to a running daemon's mapper peer)."""
    need("nbdkit")
    d: Path = tmp_path_factory.mktemp("nbd")
    names = ["vol", "zt", "bs", "ro-src", "refs", "scr", "fua", "cow", "held"]
    prepare(d, volumes=[(n, SIZE) for n in names] + [("odd", ODD_SIZE)],
            writes=[("ro-src", 1000, SNAP_DATA), ("scr", 0, b"S" * BS)],
            snapshots=[("ro-src", "ro-snap")])
    peer = request.param.startswith("backend=peer")
    if peer:
        daemon(d, "start", "--no-nbd")
    srv = NbdServer(d, "default-export=vol", request.param.removesuffix("+cfilter"))
    if request.param.endswith("+cfilter"):  # the C filter archip-fast in front (cfilter.py)
        from archipelago.nbd.cfilter import build

        srv.filters.append(str(build()))
    srv.start()
    yield srv
    srv.stop()
    if peer:
        daemon(d, "stop")
    assert "Traceback" not in srv.log_text() or "NbdError" in srv.log_text()


def daemon(data_dir: Path, *args: str) -> None:
    """archip daemon start|stop for the peer backend."""
    p = subprocess.run([sys.executable, "-m", "control", "--data-dir", str(data_dir), "daemon",
                        *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_capabilities(server: NbdServer) -> None:
    h = server.connect("vol")
    assert h.get_size() == SIZE
    assert h.get_block_size(nbd.SIZE_MINIMUM) == 512
    assert h.get_block_size(nbd.SIZE_PREFERRED) == 4096
    assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 * MiB
    assert h.is_read_only() is False
    assert h.is_rotational() is False
    for flag in (h.can_flush, h.can_fua, h.can_trim, h.can_zero, h.can_fast_zero,
                 h.can_multi_conn, h.can_cache):
        assert flag() is True, flag.__name__
    assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION) is True
    h.shutdown()


def test_exact_size_not_block_multiple(server: NbdServer) -> None:
    h = server.connect("odd")
    assert h.get_size() == ODD_SIZE
    tail = os.urandom(512)
    h.pwrite(tail, ODD_SIZE - 512)
    assert h.pread(512, ODD_SIZE - 512) == tail
    with pytest.raises(nbd.Error):
        h.pread(512, ODD_SIZE)  # nbdkit itself refuses ranges past the end
    h.shutdown()


def test_list_and_default_export(server: NbdServer) -> None:
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_unix(str(server.sock))
    names: list[str] = []
    h.opt_list(lambda name, desc: names.append(name) or 0)
    h.opt_abort()
    assert {"vol", "zt", "odd", "ro-src", "ro-snap"} <= set(names)
    assert not [n for n in names if "scratch" in n]
    d = server.connect("")  # the empty name is the configured default export
    assert d.get_size() == SIZE
    d.shutdown()


def test_unknown_export_fails_clearly(server: NbdServer) -> None:
    h = nbd.NBD()
    h.set_export_name("no-such-volume")
    with pytest.raises(nbd.Error) as ei:
        h.connect_unix(str(server.sock))
    assert ei.value.errnum == errno.ENOENT or "no-such-volume" in str(ei.value)


def test_unaligned_io_across_blocks(server: NbdServer) -> None:
    model = bytearray(SIZE)
    rng = random.Random(1)
    h = server.connect("vol", strict=False)  # byte-granular requests reach the server
    cases = [(BS - 1000, 3000), (BS - 1, 2), (3 * BS - 7, 2 * BS + 13), (1, 511), (0, 1)]
    cases += [(rng.randrange(SIZE - 3 * BS), rng.randrange(1, 3 * BS)) for _ in range(20)]
    for off, n in cases:
        data = rng.randbytes(n)
        h.pwrite(data, off)
        model[off:off + n] = data
        assert h.pread(n, off) == data
    for off, n in cases:  # earlier writes survive later overlapping ones
        assert h.pread(n, off) == bytes(model[off:off + n])
    a = server.connect("vol")  # strict client: 512-aligned but block-unaligned
    assert a.pread(3 * BS + 1024, BS - 512) == bytes(model[BS - 512:4 * BS + 512])
    assert h.pread(SIZE, 0) == bytes(model)
    h.shutdown()
    a.shutdown()


def test_fua_and_flush(server: NbdServer) -> None:
    h = server.connect("fua")
    h.pwrite(b"F" * 4096, BS - 2048, nbd.CMD_FLAG_FUA)
    h.pwrite(b"G" * 4096, 2 * BS)
    h.flush()
    assert h.pread(4096, BS - 2048) == b"F" * 4096
    assert h.pread(4096, 2 * BS) == b"G" * 4096
    h.shutdown()


def test_zero_flags(server: NbdServer) -> None:
    # libnbd spells "without MAY_TRIM" as CMD_FLAG_NO_HOLE; a plain zero may trim.
    h = server.connect("zt")
    h.pwrite(b"z" * (4 * BS), 0)
    # Partial block without MAY_TRIM: zeros written, the block stays data.
    h.zero(4096, BS + 4096, nbd.CMD_FLAG_NO_HOLE)
    assert h.pread(4096, BS + 4096) == bytes(4096)
    assert h.pread(4096, BS) == b"z" * 4096
    assert not zero_at(block_status(h, 4 * BS, 0), BS)
    # Whole block with MAY_TRIM: becomes a hole.
    h.zero(BS, 2 * BS)
    assert h.pread(BS, 2 * BS) == bytes(BS)
    assert zero_at(block_status(h, 4 * BS, 0), 2 * BS)
    # Whole block without MAY_TRIM: reads zero (the volume stays thin: zero blocks are
    # never stored in this design, so it is a hole too).
    h.zero(BS, 3 * BS, nbd.CMD_FLAG_NO_HOLE)
    assert h.pread(BS, 3 * BS) == bytes(BS)
    h.pwrite(b"z" * BS, 3 * BS)
    # FAST_ZERO on whole blocks succeeds (a map update), with or without MAY_TRIM ...
    h.zero(BS, 3 * BS, nbd.CMD_FLAG_FAST_ZERO)
    assert zero_at(block_status(h, 4 * BS, 0), 3 * BS)
    h.pwrite(b"z" * BS, 3 * BS)
    h.zero(BS, 3 * BS, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
    assert h.pread(BS, 3 * BS) == bytes(BS)
    # ... and fails at once with ENOTSUP on a partial one, leaving data alone.
    for flags in (nbd.CMD_FLAG_FAST_ZERO, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE):
        with pytest.raises(nbd.Error) as ei:
            h.zero(4096, 0, flags)
        assert ei.value.errnum in (errno.ENOTSUP, errno.EOPNOTSUPP)
    assert h.pread(4096, 0) == b"z" * 4096
    h.zero(4 * BS, 0, nbd.CMD_FLAG_FUA)
    assert h.pread(4 * BS, 0) == bytes(4 * BS)
    h.shutdown()


def test_trim(server: NbdServer) -> None:
    h = server.connect("zt")
    h.pwrite(b"t" * (3 * BS), 5 * BS)
    h.trim(BS, 6 * BS)
    assert h.pread(BS, 6 * BS) == bytes(BS)
    assert zero_at(block_status(h, 8 * BS, 0), 6 * BS)
    h.trim(1024, 5 * BS, nbd.CMD_FLAG_FUA)  # partial trim: reads back zero here
    assert h.pread(1024, 5 * BS) == bytes(1024)
    assert h.pread(1024, 5 * BS + 1024) == b"t" * 1024
    assert h.pread(BS, 7 * BS) == b"t" * BS
    h.shutdown()


def test_block_status(server: NbdServer) -> None:
    h = server.connect("bs")
    ext = block_status(h, SIZE, 0)
    assert ext and all(f & HOLE_ZERO == HOLE_ZERO for _, _, f in ext)
    assert ext[0][0] == 0 and sum(n for _, n, _ in ext) >= SIZE or ext[-1][0] + ext[-1][1] >= SIZE
    h.pwrite(b"d" * 4096, 2 * BS + 100 * 512)
    ext = block_status(h, SIZE, 0)
    assert zero_at(ext, 0) and zero_at(ext, 3 * BS)
    assert not zero_at(ext, 2 * BS) and not zero_at(ext, 3 * BS - 1)
    one = block_status(h, SIZE, 0, req_one=True)
    assert len(one) == 1 and one[0][0] == 0 and one[0][2] & HOLE_ZERO == HOLE_ZERO
    assert one[0][1] == 2 * BS  # holes are merged up to the data block
    one = block_status(h, SIZE - 2 * BS, 2 * BS, req_one=True)
    assert len(one) == 1 and one[0] == (2 * BS, BS, 0)
    h.zero(BS, 2 * BS)  # a whole-block zero-write makes it a hole again
    assert zero_at(block_status(h, SIZE, 0), 2 * BS)
    h.pwrite(b"d" * BS, 5 * BS)
    h.trim(BS, 5 * BS)
    ext = block_status(h, SIZE, 0)
    assert all(f & HOLE_ZERO == HOLE_ZERO for _, _, f in ext)
    h.shutdown()


def test_snapshot_is_read_only(server: NbdServer) -> None:
    h = server.connect("ro-snap")
    assert h.is_read_only() is True
    assert h.pread(2 * BS, 0)[1000:1000 + len(SNAP_DATA)] == SNAP_DATA
    with pytest.raises(nbd.Error) as ei:  # refused by libnbd from the flags
        h.pwrite(b"x" * 512, 0)
    assert ei.value.errnum in (errno.EPERM, errno.EROFS)
    h.shutdown()
    h = server.connect("ro-snap", strict=False)  # let the write reach nbdkit
    for op in (lambda: h.pwrite(b"x" * 512, 0), lambda: h.zero(BS, 0), lambda: h.trim(BS, 0)):
        with pytest.raises(nbd.Error) as ei:
            op()
        assert ei.value.errnum in (errno.EPERM, errno.EROFS)
    assert h.pread(2 * BS, 0)[1000:1000 + len(SNAP_DATA)] == SNAP_DATA
    h.shutdown()


def test_scratch_exports(server: NbdServer) -> None:
    for export, base in (("ro-snap@scratch", "ro-snap"), ("scr@scratch", "scr")):
        orig = server.connect(base).pread(BS, 0)
        h = server.connect(export)
        assert h.is_read_only() is False
        assert h.can_multi_conn() is False  # each connection has its own clone
        assert h.pread(BS, 0) == orig
        h.pwrite(b"W" * 4096, 0)
        assert h.pread(4096, 0) == b"W" * 4096
        h.shutdown()
        assert server.connect(base).pread(BS, 0) == orig
        h = server.connect(export)
        assert h.pread(BS, 0) == orig  # a new connection starts from the origin again
        h.shutdown()
    time.sleep(0.5)
    names: list[str] = []
    lst = nbd.NBD()
    lst.set_opt_mode(True)
    lst.connect_unix(str(server.sock))
    lst.opt_list(lambda name, desc: names.append(name) or 0)
    lst.opt_abort()
    assert not [n for n in names if "scratch" in n]


def _lock_elsewhere(data_dir: Path, name: str, take: bool) -> None:
    """Take (or release) the volume lock as another live owner (this test process)."""
    from archipelago.blocker.base import make_owner
    from archipelago.blocker.file import FileBlocker
    from archipelago.mapper import Mapper

    async def run() -> None:
        blocker = FileBlocker(str(data_dir / "blocks"))
        mapper = Mapper(blocker, make_owner("test-holder"))
        if take:
            await mapper.lock(name)  # held in the blocker until unlocked
        else:
            await mapper.unlock(name)
        await blocker.close()

    asyncio.run(run())


def test_volume_locked_by_live_owner_is_busy(server: NbdServer) -> None:
    _lock_elsewhere(server.data_dir, "held", take=True)
    try:
        h = nbd.NBD()
        h.set_export_name("held")
        with pytest.raises(nbd.Error):  # NBD has no "busy" reply at handshake time ...
            h.connect_unix(str(server.sock))
        log = server.log_text()  # ... so the reason, with the holder, is in nbdkit's log
        assert "Locked" in log and "test-holder" in log, log[-2000:]
    finally:
        _lock_elsewhere(server.data_dir, "held", take=False)
    h = server.connect("held")  # free again: the lock is not stale-broken, just released
    h.pwrite(b"b" * 512, 0)
    h.shutdown()


def _try_open_elsewhere(data_dir: Path, name: str) -> bool:
    """True if another owner can open ``name`` now (nbdkit released its lock)."""
    from archipelago.blocker.base import make_owner
    from archipelago.blocker.file import FileBlocker
    from archipelago.errors import Locked
    from archipelago.mapper import Mapper

    async def run() -> bool:
        blocker = FileBlocker(str(data_dir / "blocks"))
        mapper = Mapper(blocker, make_owner("test-other"))
        try:
            vol = await mapper.open(name)
            await vol.close()
            return True
        except Locked:
            return False
        finally:
            await mapper.close()
            await blocker.close()

    return asyncio.run(run())


def test_last_close_releases_the_volume(server: NbdServer) -> None:
    a = server.connect("refs")
    b = server.connect("refs")
    assert not _try_open_elsewhere(server.data_dir, "refs")
    a.pwrite(b"a" * 512, 0)
    a.shutdown()
    b.pwrite(b"b" * 512, 512)  # still open for the other connection
    b.flush()
    assert not _try_open_elsewhere(server.data_dir, "refs")
    b.shutdown()
    deadline = time.monotonic() + 10
    while not _try_open_elsewhere(server.data_dir, "refs"):
        assert time.monotonic() < deadline, "lock not released after the last disconnect"
        time.sleep(0.1)
    c = server.connect("refs")
    assert c.pread(1024, 0) == b"a" * 512 + b"b" * 512
    c.shutdown()


def test_reads_follow_zero_rewrite_and_copy_up(server: NbdServer) -> None:
    h = server.connect("cow")
    a, b, c = b"A" * (3 * BS), b"B" * 4096, b"C" * 4096
    h.pwrite(a, 0)
    assert h.pread(3 * BS, 0) == a  # map chunk now cached: later reads may go direct
    h.zero(BS, BS)  # owned block deleted, entry zero
    assert h.pread(BS, BS) == bytes(BS)
    h.pwrite(b, BS + 8192)  # same block, a new object written from zeros
    assert h.pread(BS, BS) == bytes(8192) + b + bytes(BS - 8192 - 4096)
    s = server.connect("cow@scratch")  # snapshots "cow": its blocks become shared
    h.pwrite(c, 4096)  # copy-up of block 0 to a new object
    assert h.pread(BS, 0) == b"A" * 4096 + c + b"A" * (BS - 8192)
    assert s.pread(BS, 0) == b"A" * BS  # the clone still reads the shared object
    s.pwrite(b"S" * 4096, 0)
    assert h.pread(4096, 0) == b"A" * 4096
    s.shutdown()
    h.shutdown()
