"""Lock staleness follows process liveness, zombies included."""

from __future__ import annotations

import os
import socket
import subprocess
import time

from archipelago.blocker.base import parse_owner, pid_alive


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0].decode()


def test_live_process_is_alive_and_its_lock_not_stale() -> None:
    assert pid_alive(os.getpid())
    assert not parse_owner(f"{socket.gethostname()}:{os.getpid()}:t").stale


def test_zombie_counts_as_dead() -> None:
    # A killed peer whose supervisor died too stays a zombie where init does not reap it.
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while _state(child.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _state(child.pid) == "Z"
    try:
        assert not pid_alive(child.pid)
        assert parse_owner(f"{socket.gethostname()}:{child.pid}:mapper").stale
    finally:
        child.wait()
    assert not pid_alive(child.pid)


def test_other_host_is_never_stale() -> None:
    assert not parse_owner("elsewhere.invalid:1:mapper").stale
