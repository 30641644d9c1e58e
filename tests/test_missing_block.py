"""Issue 23 point 6: a block a map references but the store lost is an error on every
read path (MissingBlock: EIO to NBD clients, exit code 22 in the CLI), never zeros.

The raw object API keeps the blocker contract (absent objects read as zeros): only a
read through a map entry that names the object fails. Every test deletes a block file
under a volume and reads it back through one path.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nbd_helpers import TEST_BLOCK, MiB, NbdServer, nbd, need, prepare

from archipelago.blocker.file import FileBlocker
from archipelago.blocker.memory import MemoryBlocker
from archipelago.errors import MissingBlock, NotFound
from archipelago.hashing import block_hash
from archipelago.mapper import Mapper

pytestmark = pytest.mark.timeout(120)

BS = TEST_BLOCK
ARCHIP = [sys.executable, "-m", "control"]


def block_object(data_dir: Path, volume: str, index: int) -> str:
    """The object name the map entry of block ``index`` of ``volume`` refers to."""

    async def run() -> str:
        b = FileBlocker(str(data_dir / "blocks"))
        try:
            m = Mapper(b, "test:0")
            h = await m.live(volume)
            from archipelago.mapper.volume import Volume

            kind, ident = await Volume(m, h, writable=False).entry(index)
            return h.name_of(kind, ident)
        finally:
            await b.close()

    return asyncio.run(run())


def delete_block(data_dir: Path, volume: str, index: int) -> str:
    """Unlink the file of block ``index`` of ``volume`` (as a lost object would be)."""
    fb = FileBlocker(str(data_dir / "blocks"))
    path = fb.path_of(block_object(data_dir, volume, index))
    asyncio.run(fb.close())
    os.unlink(path)
    return path


# -- the mapper library (Volume.read), every local blocker ------------------------------


@pytest.mark.parametrize("kind", ["memory", "file"])
async def test_volume_read_raises_missing_block(kind: str, tmp_path: Path) -> None:
    b = MemoryBlocker() if kind == "memory" else FileBlocker(str(tmp_path / "b"))
    m = Mapper(b, "test:1")
    try:
        await m.create("v", 4 * BS, block_size=BS)
        v = await m.open("v")
        await v.write(0, b"a" * BS)
        await v.write(BS, b"b" * 100)  # a short (partial) owned block: legitimately short
        await v.flush()
        h = v.header
        kind1, ident1 = await v.entry(1)
        await b.delete(h.name_of(kind1, ident1))
        assert await v.read(0, BS) == b"a" * BS
        assert await v.read(2 * BS, BS) == bytes(BS)  # a hole is not a missing block
        for off, n in ((BS, 100), (BS + 50, 10), (0, 4 * BS)):
            with pytest.raises(MissingBlock, match="block 1"):
                await v.read(off, n)
        # a write into it cannot copy it up either (snapshot: the block becomes shared)
        await m.snapshot("v", "s")
        with pytest.raises(MissingBlock):
            await v.write(BS + 10, b"x")
        # the raw object API keeps the contract: absent objects read as zeros
        assert await b.read(h.name_of(kind1, ident1), 0, 10) == bytes(10)
        with pytest.raises(NotFound):
            await b.read_existing(h.name_of(kind1, ident1), 0, 10)
        await v.close()

        # content-addressed maps (imports, gateway objects, hashed snapshots) too
        data = b"c" * 100  # a 4 MiB Pithos block, stored without its trailing zeros
        name = block_hash(data)
        await b.put(name, data)
        await m.clone_hashmap("img", [name, name], 4 * MiB + 100, readonly=True)
        img = await m.open("img")
        assert await img.read(4 * MiB - 10, 110) == bytes(10) + data
        await b.delete(name)
        with pytest.raises(MissingBlock):
            await img.read(4 * MiB + 10, 10)
        await img.close()
    finally:
        await m.close()
        await b.close()


async def test_gateway_block_reads_raise_missing_block(tmp_path: Path) -> None:
    """The gateway's object reads (BlockStore.read_range): a lost block is an error."""
    from pithos_gw.store import BlockStore

    b = FileBlocker(str(tmp_path / "b"))
    try:
        store = BlockStore(b, block_size=1000)  # hashes of 1000-byte blocks: a small object
        h1 = await store.put_block(b"1" * 1000)
        h2 = await store.put_block(b"2" * 1000)
        got = b"".join([c async for c in store.read_range([h1, h2], 2000, 0, 2000)])
        assert got == b"1" * 1000 + b"2" * 1000
        await b.delete(h2)
        with pytest.raises(MissingBlock):
            async for _ in store.read_range([h1, h2], 2000, 0, 2000):
                pass
    finally:
        await b.close()


# -- the daemon: the mapper peer's read paths and the CLI --------------------------------


@pytest.mark.parametrize("fast", ["fastread", "forward"])
def test_daemon_reads_raise_missing_block(fast: str, tmp_path: Path) -> None:
    """Mapper peer: the file fast path (service/direct_io.py) and the one-block forward
    (forward.py) fall back to Volume.read, which fails; the CLI exits 22."""
    from archipelago.client.blocking import Client

    env = dict(os.environ)
    if fast == "forward":
        env["ARCHIPELAGO_NO_FAST_READ"] = "1"
    d = str(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ARCHIPELAGO_CLI, "--data-dir", d, *args], capture_output=True,
                              text=True, timeout=60, env=env)

    assert cli("daemon", "start", "--no-nbd").returncode == 0
    try:
        with Client.connect(d) as c:
            c.create("v", 3 * 4 * MiB)
            with c.open("v") as h:
                h.write(0, b"x" * 4 * MiB)
                h.write(4 * MiB, b"y" * 4 * MiB)
                h.flush()
                delete_block(tmp_path, "v", 1)
                assert h.read(0, 4096) == b"x" * 4096  # its map chunk is cached now
                for off, n in ((4 * MiB, 4096), (4 * MiB + 10, 100), (0, 8 * MiB)):
                    with pytest.raises(MissingBlock):
                        h.read(off, n)
        r = cli("export", "v", str(tmp_path / "out.raw"))
        assert r.returncode == 22, r.stderr  # MissingBlock's exit code
        assert r.stderr.startswith("archip: error:") and "Traceback" not in r.stderr
    finally:
        cli("daemon", "stop")


ARCHIPELAGO_CLI = ARCHIP


# -- NBD: every plugin path ---------------------------------------------------------------


@pytest.fixture(params=["fastpath=yes", "fastpath=no", "backend=peer", "backend=peer+nocache",
                        "backend=peer+cfilter"])
def nbd_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NbdServer]:
    """nbdkit over a volume with two written blocks, on each backend and fast path."""
    need("nbdkit")
    prepare(tmp_path, volumes=[("v", 4 * BS)], writes=[("v", 0, b"a" * BS), ("v", BS, b"b" * BS)])
    mode = request.param
    peer = mode.startswith("backend=peer")
    env = os.environ.copy()
    if peer:
        r = subprocess.run([*ARCHIP, "--data-dir", str(tmp_path), "daemon", "start", "--no-nbd"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    srv = NbdServer(tmp_path, mode.split("+")[0])
    if mode.endswith("+cfilter"):
        from archipelago.nbd.cfilter import build

        srv.filters.append(str(build()))
    if mode.endswith("+nocache"):
        os.environ["ARCHIPELAGO_NBD_PEER_CACHE"] = "0"  # read by nbdkit's plugin at start
    try:
        srv.start()
    finally:
        os.environ.clear()
        os.environ.update(env)
    yield srv
    srv.stop()
    if peer:
        subprocess.run([*ARCHIP, "--data-dir", str(tmp_path), "daemon", "stop"],
                       capture_output=True, timeout=60)


@pytest.mark.nbd
def test_nbd_reads_fail_with_eio(nbd_server: NbdServer) -> None:
    """Direct (with/without fastpath.py), peer (with/without the peer cache) and the C
    filter: a lost block is EIO, neighbours still read, and the log has one line."""
    h = nbd_server.connect("v")
    assert h.pread(BS, BS) == b"b" * BS  # warm every cache with the block's entry
    h.shutdown()
    delete_block(nbd_server.data_dir, "v", 1)
    h = nbd_server.connect("v")
    assert h.pread(4096, 0) == b"a" * 4096
    for off, n in ((BS, 4096), (BS + 512, 512), (0, 2 * BS)):
        with pytest.raises(nbd.Error) as ei:
            h.pread(n, off)
        assert ei.value.errnum == errno.EIO
    assert h.pread(4096, 2 * BS) == bytes(4096)  # a hole still reads as zeros
    h.shutdown()
    log = nbd_server.log_text()
    assert "MissingBlock" in log and "Traceback" not in log
