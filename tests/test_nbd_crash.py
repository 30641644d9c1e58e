"""Crash test: kill -9 nbdkit under write load; what was acknowledged durable must survive."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from nbd_helpers import MiB, NbdServer, nbd, need, prepare

pytestmark = [pytest.mark.nbd, pytest.mark.timeout(90)]

SIZE = 32 * MiB
CHUNK = 8192


class Writer(threading.Thread):
    """Writes unique chunks; records a chunk only once it is durable (FUA or after flush)."""

    def __init__(self, srv: NbdServer, region: int, fua: bool) -> None:
        super().__init__(daemon=True)
        self.h = srv.connect("crash")
        self.region, self.fua = region, fua
        self.acked: dict[int, bytes] = {}
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(self.region)
        pending: dict[int, bytes] = {}
        off = self.region
        try:
            while not self.stop.is_set() and off + CHUNK <= self.region + SIZE // 2:
                data = rng.randbytes(CHUNK)
                if self.fua:
                    self.h.pwrite(data, off, nbd.CMD_FLAG_FUA)
                    self.acked[off] = data
                else:
                    self.h.pwrite(data, off)
                    pending[off] = data
                    if len(pending) == 8:
                        self.h.flush()
                        self.acked.update(pending)
                        pending.clear()
                off += CHUNK
        except nbd.Error as e:  # the server died under us: an error, not a hang
            self.error = e


def test_kill9_during_writes_keeps_acknowledged_data(tmp_path: Path) -> None:
    need("nbdkit")
    prepare(tmp_path, volumes=[("crash", SIZE)], block_size=64 * 1024)
    srv = NbdServer(tmp_path).start()
    scratch = srv.connect("crash@scratch")  # its private clone is orphaned by the crash
    scratch.pwrite(b"s" * 4096, 0)
    writers = [Writer(srv, 0, fua=True), Writer(srv, SIZE // 2, fua=False)]
    for w in writers:
        w.start()
    deadline = time.monotonic() + 10
    while min(len(w.acked) for w in writers) < 16:  # let both make durable progress
        assert time.monotonic() < deadline, "writers made no progress"
        time.sleep(0.02)
    srv.kill()
    for w in writers:
        w.join(timeout=20)
        assert not w.is_alive(), "client hung after nbdkit died"
        assert w.error is not None or w.stop.is_set() or w.acked

    with pytest.raises(nbd.Error):  # while it is down, clients get an error at once
        srv.connect("crash")
    srv.start()  # the dead nbdkit's lock is stale: reopening must break it
    h = srv.connect("crash")
    total = 0
    for w in writers:
        for off, data in w.acked.items():
            assert h.pread(CHUNK, off) == data, f"acknowledged chunk at {off} lost"
            total += 1
    assert total >= 32
    h.pwrite(b"after" * 1024, 0, nbd.CMD_FLAG_FUA)  # and the volume is writable again
    assert h.pread(5120, 0) == b"after" * 1024
    h.shutdown()
    srv.stop()
    log = srv.log_text()
    assert "Locked" not in log, log
    leftovers = [v for v in volume_names(tmp_path) if v.startswith("nbd-scratch.")]
    assert leftovers == [], "the restarted nbdkit did not sweep orphaned scratch clones"


def archip(data_dir: Path, *args: str) -> str:
    """Run the CLI; its stdout."""
    p = subprocess.run([sys.executable, "-m", "control", "--data-dir", str(data_dir), *args],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def mapper_pid(data_dir: Path) -> int:
    """Pid of the daemon's mapper peer."""
    st = json.loads(archip(data_dir, "--json", "daemon", "status"))
    return next(c["pid"] for c in st["children"] if c["kind"] == "mapper" and c["alive"])


def test_kill9_mapper_peer_under_load(tmp_path: Path) -> None:
    """Peer backend: the mapper peer dies mid-load; the daemon restarts it; clients get
    errors (or re-issued success), never a hang; acknowledged data survives."""
    need("nbdkit")
    prepare(tmp_path, volumes=[("crash", SIZE)], block_size=64 * 1024)
    archip(tmp_path, "daemon", "start", "--no-nbd")
    try:
        srv = NbdServer(tmp_path, "backend=peer").start()
        writers = [Writer(srv, 0, fua=True), Writer(srv, SIZE // 2, fua=False)]
        for w in writers:
            w.start()
        deadline = time.monotonic() + 20
        while min(len(w.acked) for w in writers) < 16:
            assert time.monotonic() < deadline, "writers made no progress"
            time.sleep(0.02)
        old = mapper_pid(tmp_path)
        os.kill(old, signal.SIGKILL)
        time.sleep(0.5)
        for w in writers:
            w.stop.set()
            w.join(timeout=60)
            assert not w.is_alive(), "client hung after the mapper peer died"
        deadline = time.monotonic() + 30
        while True:  # the daemon restarts the mapper; the export works again
            try:
                assert mapper_pid(tmp_path) != old
                h = srv.connect("crash")
                break
            except (AssertionError, StopIteration, nbd.Error):
                assert time.monotonic() < deadline, "the export did not come back"
                time.sleep(0.2)
        for w in writers:
            for off, data in w.acked.items():
                assert h.pread(CHUNK, off) == data, f"acknowledged chunk at {off} lost"
        h.pwrite(b"again" * 1024, 0, nbd.CMD_FLAG_FUA)
        assert h.pread(5120, 0) == b"again" * 1024
        h.shutdown()
        srv.stop()
    finally:
        archip(tmp_path, "daemon", "stop")


def volume_names(data_dir: Path) -> list[str]:
    """Names of every map in the instance."""
    from archipelago.blocker.base import make_owner
    from archipelago.blocker.file import FileBlocker
    from archipelago.mapper import Mapper

    async def run() -> list[str]:
        blocker = FileBlocker(str(data_dir / "blocks"))
        mapper = Mapper(blocker, make_owner("test-list"))
        try:
            return [v.name for v in await mapper.list(internal=True)]
        finally:
            await mapper.close()
            await blocker.close()

    return asyncio.run(run())
