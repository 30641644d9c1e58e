"""Area helpers for the compute tests: a daemon with nbdkit, volumes with markers, pids."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from daemon_helpers import Daemon

MiB = 1 << 20


def wait_nbd(sock: Path, timeout: float = 60.0) -> None:
    """Wait until nbdkit accepts connections on ``sock``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nbdkit never listened on {sock}") from None
            time.sleep(0.05)


def start_nbd_daemon(data_dir: Path, *extra: str) -> Daemon:
    """A daemon on the file blocker with nbdkit on DATA_DIR/nbd.sock, ready for clients."""
    d = Daemon(data_dir)
    d.archip("daemon", "start", "--json", *extra, check=True)
    wait_nbd(data_dir / "nbd.sock")
    return d


def make_volume(d: Daemon, name: str, size: int, marker: bytes = b"") -> None:
    """Create a volume; ``marker`` at offset 0 (what the guest prints as GUEST-READ)."""
    from archipelago.client import Client

    with Client.connect(d.data_dir) as c:
        c.create(name, size)
        if marker:
            with c.open(name) as v:
                v.write(0, marker, fua=True)


def read_volume(d: Daemon, name: str, offset: int, size: int) -> bytes:
    """Bytes of a volume through the daemon."""
    from archipelago.client import Client

    with Client.connect(d.data_dir) as c, c.open(name) as v:
        return bytes(v.read(offset, size))


def kill9_child(d: Daemon, name: str) -> int:
    """SIGKILL one supervised child (nbdkit, mapper) and wait until the supervisor replaced it."""
    old = d.child_pid(name)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        try:
            new = d.child_pid(name)
            if new != old:
                return new
        except AssertionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} was not restarted after kill -9")
        time.sleep(0.1)
