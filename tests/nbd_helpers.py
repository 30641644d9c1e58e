"""Helpers for the NBD tests: run nbdkit with the archipelago plugin, prepare volumes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

nbd = pytest.importorskip("nbd", reason="python3-libnbd is not installed")

from archipelago.nbd import PLUGIN_PATH  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
#: Small map blocks make block-boundary cases cheap to hit.
TEST_BLOCK = 64 * KiB


def need(*tools: str) -> None:
    """Skip unless every tool is on PATH."""
    import shutil

    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} is not installed")


def plugin_path() -> str:
    """The plugin under test ($ARCHIPELAGO_NBD_PLUGIN overrides, e.g. an installed copy)."""
    return os.environ.get("ARCHIPELAGO_NBD_PLUGIN", str(PLUGIN_PATH))


def prepare(data_dir: Path, volumes: Iterable[tuple[str, int]] = (),
            snapshots: Iterable[tuple[str, str]] = (), block_size: int = TEST_BLOCK,
            writes: Iterable[tuple[str, int, bytes]] = ()) -> None:
    """Create volumes (name, size), write data, then snapshots (volume, snap) on the file blocker."""
    from archipelago.blocker.base import make_owner
    from archipelago.blocker.file import FileBlocker
    from archipelago.mapper import Mapper

    async def run() -> None:
        blocker = FileBlocker(str(data_dir / "blocks"))
        mapper = Mapper(blocker, make_owner("test-prepare"))
        try:
            for name, size in volumes:
                await mapper.create(name, size, block_size=block_size)
            for name, off, data in writes:
                vol = await mapper.open(name)
                await vol.write(off, data)
                await vol.close()
            for vol_name, snap in snapshots:
                await mapper.snapshot(vol_name, snap)
        finally:
            await mapper.close()
            await blocker.close()

    asyncio.run(run())


class NbdServer:
    """nbdkit serving a data dir on a unix socket, killed with the test."""

    def __init__(self, data_dir: Path, *args: str, threads: int = 8) -> None:
        self.data_dir = data_dir
        self.sock = data_dir / "nbd.sock"
        self.log = data_dir / "nbdkit.log"
        self.args = list(args)
        self.threads = threads
        self.filters: list[str] = []  # nbdkit --filter= arguments (e.g. archip-fast.so)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The nbdkit command line."""
        return ["nbdkit", "-f", "--exit-with-parent", "-U", str(self.sock), "-t",
                str(self.threads), *(f"--filter={f}" for f in self.filters), "python",
                plugin_path(), f"dir={self.data_dir}",
                f"venv={sys.prefix}", *self.args]

    def start(self, timeout: float = 20.0) -> NbdServer:
        """Start nbdkit and wait until its socket accepts connections."""
        self.sock.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nbdkit exited {self.proc.returncode}: {self.log_text()}")
            if self.sock.exists():
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(str(self.sock))
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nbdkit did not start: {self.log_text()}")

    def log_text(self) -> str:
        """What nbdkit printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        """Stop nbdkit; SIGKILL if it does not exit in time (nbdkit 1.32 waits for
        connected clients on SIGTERM, so a test that leaked a handle would hang)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        """kill -9."""
        self.stop(signal.SIGKILL)

    def uri(self, export: str) -> str:
        """nbd+unix:// URI of an export."""
        return f"nbd+unix:///{export}?socket={self.sock}"

    def connect(self, export: str, strict: bool = True) -> nbd.NBD:
        """A libnbd handle connected to ``export``."""
        h = nbd.NBD()
        h.set_export_name(export)
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        if not strict:  # let unaligned and refused requests reach the server
            h.set_strict_mode(0)
        h.connect_unix(str(self.sock))
        return h


def block_status(h: nbd.NBD, count: int, offset: int, req_one: bool = False) -> list[tuple[int, int, int]]:
    """base:allocation extents as (offset, length, flags)."""
    out: list[tuple[int, int, int]] = []

    def cb(meta: str, off: int, entries: list[int], err: int) -> int:
        if meta == nbd.CONTEXT_BASE_ALLOCATION:
            pos = off
            for i in range(0, len(entries), 2):
                out.append((pos, entries[i], entries[i + 1]))
                pos += entries[i]
        return 0

    flags = nbd.CMD_FLAG_REQ_ONE if req_one else 0
    h.block_status(count, offset, cb, flags)
    return out


HOLE_ZERO = 3  # NBD_STATE_HOLE | NBD_STATE_ZERO


def zero_at(extents: list[tuple[int, int, int]], offset: int) -> bool:
    """True if the extent covering ``offset`` is a hole that reads as zeros."""
    for off, length, flags in extents:
        if off <= offset < off + length:
            return flags & HOLE_ZERO == HOLE_ZERO
    raise AssertionError(f"no extent covers {offset}: {extents}")
