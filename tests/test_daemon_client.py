"""The client library against a real daemon: async API, handle cleanup of dead clients, NBD child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import BS, ROOT, Daemon, MiB, start_daemon

from archipelago.client import AsyncClient, Client
from archipelago.errors import AlreadyExists, InvalidArgument, Locked, NotFound, ReadOnly

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("cli"), ["blocker.file.fsync=false"])
    try:
        yield d
    finally:
        d.stop()


async def test_async_client_volume_ops_and_io(daemon: Daemon) -> None:
    async with await AsyncClient.connect(daemon.data_dir) as c:
        await c.ping()
        info = await c.create("av", 3 * BS + 512, block_size=BS)
        assert info.size == 3 * BS + 512 and info.kind == "volume"
        with pytest.raises(AlreadyExists):
            await c.create("av", MiB)
        data = os.urandom(9 * MiB)  # spans arena-sized pieces issued concurrently
        async with await c.open("av") as v:
            await v.write(100, data, fua=True)
            assert await v.read(100, len(data)) == data
            await v.zero(0, BS)
            await v.trim(2 * BS, BS)
            await v.flush()
            got = await v.read(0, 3 * BS + 512)
            assert got[:BS] == bytes(BS) and got[2 * BS : 3 * BS] == bytes(BS)
            assert got[BS : 2 * BS] == data[BS - 100 : 2 * BS - 100]
            exts = await v.extents()
            assert [(e.offset, e.zero) for e in exts][:2] == [(0, True), (BS, False)]
            with pytest.raises(InvalidArgument):
                await v.read(3 * BS, 2 * BS)  # past the end
        snap = await c.snapshot("av", "av-snap")
        assert snap.readonly and snap.parent == "av"
        async with await c.open("av-snap") as s:
            with pytest.raises(ReadOnly):
                await s.write(0, b"x")
        h = await c.hash("av-snap")
        hashes, nbytes = await c.hashmap(h.name)
        assert nbytes == 3 * BS + 512 and len(hashes) == 4
        clone = await c.clone_hashmap("av-from-hashmap", hashes, nbytes)
        assert clone.size == nbytes
        async with await c.open("av-from-hashmap") as v2:
            assert (await v2.read(BS, BS)) == data[BS - 100 : 2 * BS - 100]
        assert (await c.resize("av-from-hashmap", 8 * BS)).size == 8 * BS
        assert (await c.rename("av-from-hashmap", "av2")).name == "av2"
        await c.remove("av2")
        with pytest.raises(NotFound):
            await c.info("av2")
        names = [i.name for i in await c.list()]
        assert "av" in names and "av-snap" in names
        st = await c.status()
        assert st["open_volumes"] == [] and st["port"] == 0


def test_blocking_handles_share_one_open_and_lock(daemon: Daemon) -> None:
    with Client.connect(daemon.data_dir) as c:
        c.create("shared", 2 * BS)
        a, b = c.open("shared"), c.open("shared")
        a.write(0, b"one")
        b.flush()
        assert bytes(b.read(0, 3)) == b"one"
        assert c.info("shared").lock_owner.endswith(":mapper")
        assert [v["handles"] for v in c.status()["open_volumes"]] == [2]
        a.close()
        assert c.info("shared").lock_owner is not None  # b still has it open
        b.close()
        assert c.info("shared").lock_owner is None
        with pytest.raises(NotFound):
            c.open("nope")


def test_handles_of_a_killed_client_are_closed(daemon: Daemon, tmp_path: Path) -> None:
    with Client.connect(daemon.data_dir) as c:
        c.create("orphan", BS)
    code = ("import sys, time; from archipelago.client import Client; "
            "c = Client.connect(sys.argv[1]); v = c.open('orphan'); v.write(0, b'z' * 10); "
            "v.flush(); print('open', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(daemon.data_dir)], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "open"
        with Client.connect(daemon.data_dir) as c:
            assert c.info("orphan").lock_owner is not None
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            deadline = time.monotonic() + 20
            while c.info("orphan").lock_owner is not None:
                assert time.monotonic() < deadline, "dead client's handle never closed"
                time.sleep(0.1)
            assert c.status()["open_volumes"] == []
            with c.open("orphan") as v:
                assert bytes(v.read(0, 10)) == b"z" * 10
    finally:
        if p.poll() is None:
            p.kill()
    assert "went away: closing its handle of 'orphan'" in daemon.log()


def test_lock_held_by_another_owner_refuses_open(daemon: Daemon) -> None:
    with Client.connect(daemon.data_dir) as c:
        c.create("foreign", BS)
        (daemon.data_dir / "blocks" / "locks" / "lock:foreign").write_text("elsewhere:7:mapper")
        with pytest.raises(Locked, match="elsewhere:7"):
            c.open("foreign")
        with c.open("foreign", force=True) as v:
            v.write(0, b"mine")
        assert c.info("foreign").lock_owner is None


def test_default_start_serves_volumes_over_nbd(tmp_path: Path) -> None:
    nbd = pytest.importorskip("nbd")
    d = Daemon(tmp_path)
    try:
        st = d.archip("daemon", "start", "--json", check=True).json()
        assert "nbdkit" in [c["name"] for c in st["children"]]
        d.archip("volume", "create", "exported", "--size", "8M", check=True)
        sock = tmp_path / "nbd.sock"
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        h = nbd.NBD()
        h.set_export_name("exported")
        for _ in range(100):
            try:
                h.connect_unix(str(sock))
                break
            except nbd.Error:
                time.sleep(0.1)
                h = nbd.NBD()
                h.set_export_name("exported")
        assert h.get_size() == 8 * MiB
        deadline = time.monotonic() + 10
        while sock.stat().st_mode & 0o777 != 0o600:  # the supervisor makes it private
            assert time.monotonic() < deadline, oct(sock.stat().st_mode)
            time.sleep(0.05)
        h.pwrite(b"via nbd".ljust(512, b"!"), 4096)
        h.flush()
        assert h.pread(512, 4096) == b"via nbd".ljust(512, b"!")
        h.shutdown()
    finally:
        d.stop()
    assert not (tmp_path / "nbd.sock").exists()


async def test_content_blocks_direct_to_blocker_peers(daemon: Daemon) -> None:
    from archipelago.hashing import block_hash

    blocks = [os.urandom(BS), os.urandom(MiB) + bytes(100)]
    names = [block_hash(b) for b in blocks]
    with Client.connect(daemon.data_dir) as c:
        assert c.missing(names) == names
        assert c.store_block(names[0], blocks[0]) is True
        assert c.store_block(names[0], blocks[0]) is False
        assert bytes(c.read_block(names[0], 5, 10)) == blocks[0][5:15]
        with pytest.raises(InvalidArgument):
            c.read_block("not-a-hash")
    async with await AsyncClient.connect(daemon.data_dir) as ac:
        assert await ac.store_block(names[1], blocks[1]) is True
        assert await ac.store_block(names[1], blocks[1]) is False
        assert (await ac.read_block(names[1], 0, MiB)) == blocks[1][:MiB]
        assert await ac.missing(names) == []
        nbytes = BS + len(blocks[1])
        await ac.clone_hashmap("from-blocks", names, nbytes, readonly=True)
        async with await ac.open("from-blocks") as v:
            assert v.info.kind == "pithos" and v.info.readonly
            assert (await v.read(0, nbytes)) == blocks[0] + blocks[1]
