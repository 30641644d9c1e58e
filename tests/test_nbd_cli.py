"""`archip nbd serve|uri|stop` end to end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nbd_helpers import MiB, nbd, need, prepare

pytestmark = [pytest.mark.nbd, pytest.mark.timeout(60)]

ARCHIP = [sys.executable, "-m", "control"]


def archip(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the CLI."""
    return subprocess.run([*ARCHIP, *args], capture_output=True, text=True, timeout=timeout)


def wait_socket(path: Path, timeout: float = 20) -> None:
    """Wait until a unix socket accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{path} never accepted connections")


def test_uri(tmp_path: Path) -> None:
    p = archip("--data-dir", str(tmp_path), "nbd", "uri", "vm1")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"nbd+unix:///vm1?socket={tmp_path.resolve()}/nbd.sock"
    p = archip("--data-dir", str(tmp_path), "--json", "nbd", "uri", "vm1", "--socket", "/x/s")
    assert json.loads(p.stdout)["uri"] == "nbd+unix:///vm1?socket=/x/s"


def test_tcp_must_be_loopback(tmp_path: Path) -> None:
    p = archip("--data-dir", str(tmp_path), "nbd", "serve", "--tcp", "0.0.0.0:10809")
    assert p.returncode == 2 and "loopback" in p.stderr and "Traceback" not in p.stderr


def test_serve_foreground(tmp_path: Path) -> None:
    need("nbdkit")
    prepare(tmp_path, volumes=[("vm1", 2 * MiB)])
    sock = tmp_path / "nbd.sock"
    proc = subprocess.Popen([*ARCHIP, "--data-dir", str(tmp_path), "nbd", "serve", "--direct",
                             "--foreground", "--default-export", "vm1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_socket(sock)
        deadline = time.monotonic() + 10
        while sock.stat().st_mode & 0o077:  # made private right after nbdkit listens
            assert time.monotonic() < deadline, oct(sock.stat().st_mode)
            time.sleep(0.02)
        uri = archip("--data-dir", str(tmp_path), "nbd", "uri", "vm1").stdout.strip()
        h = nbd.NBD()
        h.connect_uri(uri)
        h.pwrite(b"cli" * 512, 0)
        assert h.pread(1536, 0) == b"cli" * 512
        h.shutdown()
        h = nbd.NBD()
        h.connect_unix(str(sock))  # empty export name: the default export
        assert h.get_size() == 2 * MiB
        h.shutdown()
        # nbdkit dies (as 1.32 can on a client hang-up): the CLI restarts it at once.
        child = int(subprocess.run(["pgrep", "-P", str(proc.pid), "nbdkit"], text=True,
                                   capture_output=True).stdout.split()[0])
        os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            try:
                h = nbd.NBD()
                h.connect_uri(uri)
                break
            except nbd.Error:
                assert time.monotonic() < deadline, "nbdkit was not restarted"
                time.sleep(0.1)
        assert h.pread(1536, 0) == b"cli" * 512  # and the stale lock was broken
        h.shutdown()
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_serve_tcp_loopback(tmp_path: Path) -> None:
    need("nbdkit")
    prepare(tmp_path, volumes=[("vm4", MiB)])
    with socket.socket() as s:  # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # plain TCP only when asked for (tests/test_security_nbd.py: TLS by default)
    p = archip("--data-dir", str(tmp_path), "nbd", "serve", "--direct", "--tcp",
               f"127.0.0.1:{port}", "--insecure")
    assert p.returncode == 0, p.stderr
    assert "WARNING: plain TCP" in p.stdout
    try:
        h = nbd.NBD()
        h.connect_uri(f"nbd://127.0.0.1:{port}/vm4")
        h.pwrite(b"t" * 512, 0)
        assert h.pread(512, 0) == b"t" * 512
        h.shutdown()
    finally:
        s = archip("--data-dir", str(tmp_path), "nbd", "stop")
    assert s.returncode == 0, s.stderr


def test_peer_needs_the_daemon(tmp_path: Path) -> None:
    p = archip("--data-dir", str(tmp_path), "nbd", "serve", "--peer")
    assert p.returncode == 12 and "daemon start" in p.stderr  # NotRunning


def test_serve_peer_through_the_daemon(tmp_path: Path) -> None:
    need("nbdkit")
    prepare(tmp_path, volumes=[("vm3", MiB)])
    sock = tmp_path / "peer.sock"
    assert archip("--data-dir", str(tmp_path), "daemon", "start", "--no-nbd").returncode == 0
    try:
        p = archip("--data-dir", str(tmp_path), "nbd", "serve", "--socket", str(sock))
        assert p.returncode == 0, p.stderr
        h = nbd.NBD()
        h.set_export_name("vm3")
        h.connect_unix(str(sock))
        h.pwrite(b"p" * 4096, 0)
        # The daemon's mapper holds the volume: the CLI can snapshot it while exported.
        s = archip("--data-dir", str(tmp_path), "volume", "snapshot", "vm3", "vm3-snap")
        assert s.returncode == 0, s.stderr
        h.pwrite(b"q" * 4096, 0)
        h.shutdown()
        h = nbd.NBD()
        h.set_export_name("vm3-snap")
        h.connect_unix(str(sock))
        assert h.pread(4096, 0) == b"p" * 4096
        h.shutdown()
        assert "peer backend" in (tmp_path / "log" / "nbdkit.log").read_text()
    finally:
        archip("--data-dir", str(tmp_path), "nbd", "stop")
        archip("--data-dir", str(tmp_path), "daemon", "stop")


def test_serve_daemon_and_stop(tmp_path: Path) -> None:
    need("nbdkit")
    prepare(tmp_path, volumes=[("vm2", MiB)])
    sock = tmp_path / "alt.sock"
    for _ in range(2):  # the second round proves stop leaves nothing stale behind
        p = archip("--data-dir", str(tmp_path), "nbd", "serve", "--socket", str(sock))
        assert p.returncode == 0, p.stderr
        try:
            assert sock.stat().st_mode & 0o077 == 0
            again = archip("--data-dir", str(tmp_path), "nbd", "serve", "--socket", str(sock))
            assert again.returncode == 6 and "already" in again.stderr  # Busy
            h = nbd.NBD()
            h.set_export_name("vm2")
            h.connect_unix(str(sock))
            assert h.get_size() == MiB
            h.shutdown()
        finally:
            s = archip("--data-dir", str(tmp_path), "nbd", "stop")
        assert s.returncode == 0, s.stderr
        assert not (tmp_path / "run" / "nbdkit.pid").exists()
    s = archip("--data-dir", str(tmp_path), "nbd", "stop")
    assert s.returncode == 12 and "no nbdkit" in s.stderr  # NotRunning
    assert "serving" in (tmp_path / "log" / "nbdkit.log").read_text()
