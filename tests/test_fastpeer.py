"""The daemon's NBD export goes through its mapper peer (backend=peer) and its fast path.

The mapper peer reads and writes blocks it knows in place (service/direct_io.py); these
tests check that this stays coherent with snapshots taken, through the daemon, of a
volume that is exported and connected: the snapshot holds exactly what was written
before it, and later in-place writes never reach it (they must copy up).
"""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import Daemon

from archipelago.client import Client

nbd = pytest.importorskip("nbd", reason="python3-libnbd is not installed")

KiB = 1024
MiB = 1024 * KiB
BLOCK = 64 * KiB  # small map blocks: many blocks, cheap copy-ups
SIZE = 4 * MiB
SLOT = 4 * KiB  # the writer stamps 4 KiB slots, two per map block it visits


@pytest.fixture()
def exported(tmp_path: Path) -> Iterator[tuple[Daemon, nbd.NBD]]:
    """A started daemon (with its nbdkit child) and a libnbd handle on volume 'vm'."""
    # the Python map cache itself: the C filter in front of it is off here
    # (tests/test_nbd_cfilter.py runs these cases with it on)
    d = Daemon(tmp_path, overrides=["nbd.cfilter=false"])
    try:
        st = d.archip("daemon", "start", "--json", check=True).json()
        assert "nbdkit" in [c["name"] for c in st["children"]]
        d.archip("volume", "create", "vm", "--size", str(SIZE), "--block-size", str(BLOCK),
                 check=True)
        h = connect(tmp_path / "nbd.sock", "vm")
        try:
            yield d, h
        finally:
            with contextlib.suppress(nbd.Error):  # closed by the test, or nbdkit was killed
                h.shutdown()
    finally:
        d.stop()


def connect(sock: Path, export: str, timeout: float = 30.0) -> nbd.NBD:
    """Connect once the daemon's nbdkit accepts connections."""
    deadline = time.monotonic() + timeout
    while True:
        h = nbd.NBD()
        h.set_export_name(export)
        try:
            h.connect_unix(str(sock))
            return h
        except nbd.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stamp(seq: int, slot: int) -> bytes:
    """A 4 KiB slot image naming its write: (sequence, slot) repeated."""
    return struct.pack("<QQ", seq, slot) * (SLOT // 16)


def seq_of(data: bytes, slot: int) -> int:
    """The sequence number a slot holds (0: never written); checks the slot is whole."""
    if data == bytes(SLOT):
        return 0
    seq, s = struct.unpack_from("<QQ", data)
    assert s == slot and data == stamp(seq, slot), f"torn or misplaced slot {slot}"
    return seq


def read_volume(data_dir: Path, name: str) -> bytes:
    """Read a whole volume or snapshot through the daemon's client API."""
    with Client.connect(data_dir) as c, c.open(name) as v:
        return bytes(v.read(0, v.size))


def test_snapshot_of_a_connected_volume(exported: tuple[Daemon, nbd.NBD]) -> None:
    d, h = exported
    first = [bytes([i + 1]) * BLOCK for i in range(8)]
    for i, b in enumerate(first):
        h.pwrite(b, i * BLOCK)
    # in-place rewrites of owned blocks (the mapper peer's fast path), partial blocks too
    h.pwrite(b"\xaa" * 4096, 4096)
    h.pwrite(b"\xbb" * 1024, 3 * BLOCK - 512)  # across a block boundary
    h.flush()
    expected = bytearray(b"".join(first) + bytes(SIZE - 8 * BLOCK))
    expected[4096:8192] = b"\xaa" * 4096
    expected[3 * BLOCK - 512 : 3 * BLOCK + 512] = b"\xbb" * 1024

    r = d.archip("volume", "snapshot", "vm", "snap1")
    assert r.rc == 0, r.err  # was Locked while nbdkit held a private mapper
    # keep writing over the same connection: every block is shared now, so copy up
    for i in range(8):
        h.pwrite(b"\xcc" * 512, i * BLOCK + 1536)
    h.pwrite(b"\xdd" * BLOCK, 5 * BLOCK)
    h.flush()
    assert read_volume(d.data_dir, "snap1") == bytes(expected)
    now = bytearray(expected)
    for i in range(8):
        now[i * BLOCK + 1536 : i * BLOCK + 2048] = b"\xcc" * 512
    now[5 * BLOCK : 6 * BLOCK] = b"\xdd" * BLOCK
    assert h.pread(SIZE, 0) == bytes(now)
    # a second round: the fast path owns the copied-up blocks again; snapshot again
    h.pwrite(b"\xee" * 4096, 4096)
    assert d.archip("volume", "snapshot", "vm", "snap2").rc == 0
    h.pwrite(b"\xff" * 4096, 4096)
    assert read_volume(d.data_dir, "snap2")[4096:8192] == b"\xee" * 4096
    assert read_volume(d.data_dir, "snap1") == bytes(expected)
    assert h.pread(4096, 4096) == b"\xff" * 4096


def test_snapshot_while_writing(exported: tuple[Daemon, nbd.NBD]) -> None:
    """Writers on three connections keep stamping slots while the snapshot is taken: the
    snapshot holds every write acknowledged before it started, none started after it
    returned, and does not change afterwards."""
    d, h = exported
    nslots = SIZE // SLOT
    slots = list(range(0, nslots, 7))  # spread over many map blocks, two slots in some
    for s in slots:  # own every block first: the writes below start on the fast path
        h.pwrite(stamp(1, s), s * SLOT)
    acked = dict.fromkeys(slots, 1)  # slot -> last acknowledged sequence
    started = dict.fromkeys(slots, 1)  # slot -> last sequence sent
    stop = threading.Event()
    errors: list[BaseException] = []
    handles = [h] + [connect(d.data_dir / "nbd.sock", "vm") for _ in range(2)]

    def writer(conn: nbd.NBD, mine: list[int]) -> None:
        seq = 1
        try:
            while not stop.is_set():
                seq += 1
                for s in mine:
                    started[s] = seq
                    conn.pwrite(stamp(seq, s), s * SLOT)
                    acked[s] = seq
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(c, slots[k::3]), daemon=True)
               for k, c in enumerate(handles)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        before = dict(acked)
        assert d.archip("volume", "snapshot", "vm", "live").rc == 0
        after = dict(started)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for c in handles[1:]:
            c.shutdown()
    assert not any(t.is_alive() for t in threads) and not errors, errors
    snap = read_volume(d.data_dir, "live")
    for s in slots:
        got = seq_of(snap[s * SLOT : (s + 1) * SLOT], s)
        assert before[s] <= got <= after[s], (s, before[s], got, after[s])
    h.flush()
    assert read_volume(d.data_dir, "live") == snap  # later writes copied up, not in place
    vol = h.pread(SIZE, 0)
    for s in slots:  # and the volume has the newest writes
        assert seq_of(vol[s * SLOT : (s + 1) * SLOT], s) == acked[s]


def fast_io(d: Daemon) -> dict[str, dict[str, int]]:
    """The daemon's direct-block counters (``archip --json daemon status``: mapper.fast_io)."""
    return d.archip("--json", "daemon", "status", check=True).json()["mapper"]["fast_io"]


def test_cache_serves_known_blocks(exported: tuple[Daemon, nbd.NBD]) -> None:
    """After the first touch, reads and in-place writes are served by nbdkit's map cache
    (its counts reach the daemon's status at every flush)."""
    d, h = exported
    before = fast_io(d)["nbd_cache"]
    h.pwrite(b"\x11" * BLOCK, 0)  # allocation: through the mapper
    for k in range(20):
        h.pwrite(bytes([k]) * 4096, 4096 * (k % 16))
        assert h.pread(4096, 4096 * (k % 16)) == bytes([k]) * 4096
    h.flush()
    after = fast_io(d)["nbd_cache"]
    assert after["reads"] - before["reads"] >= 15, after
    assert after["writes"] - before["writes"] >= 15, after  # in place: fails if they stop
    assert after["fills"] > before["fills"]


def test_mapper_writes_in_place(exported: tuple[Daemon, nbd.NBD]) -> None:
    """The mapper peer's own fast path (service/direct_io.py) serves rewrites of owned
    blocks by any client: fails if in-place writes silently stop happening."""
    d, _ = exported
    before = fast_io(d)["mapper"]
    with Client.connect(d.data_dir) as c, c.open("vm") as v:
        v.write(0, b"\x01" * BLOCK)  # allocation: through the blocker peers
        for k in range(8):
            v.write(4096 * k, bytes([k + 2]) * 4096, fua=k % 2 == 0)
        v.flush()
        assert bytes(v.read(0, 8 * 4096)) == b"".join(bytes([k + 2]) * 4096 for k in range(8))
    after = fast_io(d)["mapper"]
    assert after["writes"] - before["writes"] >= 8, after
    assert after["reads"] > before["reads"], after
    text = d.archip("daemon", "status", check=True).out  # and in the human form
    assert f"direct block I/O (reads/writes): mapper {after['reads']}/{after['writes']}" in text


def test_kill9_nbdkit_during_cached_writes(exported: tuple[Daemon, nbd.NBD]) -> None:
    """kill -9 the daemon's nbdkit while it writes in place: the supervisor restarts it,
    acknowledged (FUA / flushed) writes read back, and a snapshot is not held off by the
    dead process's write locks."""
    import os
    import random
    import signal

    d, h = exported
    h.pwrite(b"\x01" * SIZE, 0)  # own every block: later writes go in place
    h.flush()
    acked: dict[int, bytes] = {}
    stop = threading.Event()

    def writer() -> None:
        rng = random.Random(7)
        pending: dict[int, bytes] = {}
        try:
            while not stop.is_set():
                off = rng.randrange(SIZE // SLOT) * SLOT
                data = rng.randbytes(SLOT)
                acked.pop(off, None)  # superseded: the slot may hold the new data from now
                pending.pop(off, None)
                if rng.random() < 0.5:
                    h.pwrite(data, off, nbd.CMD_FLAG_FUA)
                    acked[off] = data
                else:
                    h.pwrite(data, off)
                    pending[off] = data
                    if len(pending) >= 8:
                        h.flush()
                        acked.update(pending)
                        pending.clear()
        except nbd.Error:
            pass  # nbdkit died under us: an error, not a hang

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 64:
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.02)
    old = d.child_pid("nbdkit")
    os.kill(old, signal.SIGKILL)
    t.join(30)
    assert not t.is_alive(), "client hung after nbdkit died"
    assert d.archip("volume", "snapshot", "vm", "after-crash").rc == 0
    deadline = time.monotonic() + 30
    while d.child_pid("nbdkit") == old:
        assert time.monotonic() < deadline, "nbdkit was not restarted"
        time.sleep(0.1)
    h2 = connect(d.data_dir / "nbd.sock", "vm")
    try:
        for off, data in acked.items():
            assert h2.pread(SLOT, off) == data, f"acknowledged write at {off} lost"
        h2.pwrite(b"\x02" * SLOT, 0, nbd.CMD_FLAG_FUA)
        assert h2.pread(SLOT, 0) == b"\x02" * SLOT
    finally:
        h2.shutdown()
    assert read_volume(d.data_dir, "after-crash")[:SLOT] != b"\x02" * SLOT
