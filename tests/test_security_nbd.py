"""Issue 23, NBD side: what a hostile local user or client must not be able to do.

Each test reproduces one point of the issue (numbered as there) against real nbdkit
and libnbd/qemu clients.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from nbd_helpers import MiB, nbd, need, prepare

pytestmark = [pytest.mark.nbd, pytest.mark.timeout(120)]

ARCHIP = [sys.executable, "-m", "control"]


def archip(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI."""
    return subprocess.run([*ARCHIP, *args], capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- 4: TCP NBD only with TLS -------------------------------------------------------


def test_tcp_serve_requires_tls_with_a_private_psk(tmp_path: Path) -> None:
    """Point 4: `nbd serve --tcp` lets only holders of the instance's key in."""
    need("nbdkit")
    prepare(tmp_path, volumes=[("vm4", MiB)])
    port = free_port()
    d = str(tmp_path)
    p = archip("--data-dir", d, "--json", "nbd", "serve", "--direct", "--tcp", f"127.0.0.1:{port}")
    assert p.returncode == 0, p.stderr
    try:
        how = json.loads(p.stdout)
        psk = tmp_path / "tls" / "keys.psk"
        assert how["tls"] == "psk" and how["tls_path"] == str(psk)
        assert psk.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
        uri = how["uri"].replace("VOLUME", "vm4")
        assert uri == f"nbds://archip@127.0.0.1:{port}/vm4?tls-psk-file={psk}"
        # `nbd uri --tcp` prints the same URI for one volume
        u = archip("--data-dir", d, "nbd", "uri", "vm4", "--tcp", f"127.0.0.1:{port}")
        assert u.stdout.strip() == uri, u.stderr

        # without TLS: refused at the handshake
        h = nbd.NBD()
        with pytest.raises(nbd.Error, match="TLS"):
            h.connect_uri(f"nbd://127.0.0.1:{port}/vm4")
        # with TLS but another key (what a local user could make up): refused
        other = tmp_path / "other.psk"
        other.write_text("archip:" + "ab" * 32 + "\n")
        h = nbd.NBD()
        h.set_uri_allow_local_file(True)
        with pytest.raises(nbd.Error):
            h.connect_uri(uri.replace(str(psk), str(other)))
        # the key is not readable by an unprivileged user
        if os.geteuid() == 0:
            r = subprocess.run(["cat", str(psk)], user=65534, capture_output=True)
            assert r.returncode != 0 and not r.stdout
        # with the instance's key: works (the printed URI, as libnbd takes it)
        h = nbd.NBD()
        h.set_uri_allow_local_file(True)
        h.connect_uri(uri)
        assert h.get_tls_negotiated()
        h.pwrite(b"tls!" * 128, 0)
        assert h.pread(512, 0) == b"tls!" * 128
        h.shutdown()
        # qemu-img with the printed options reads the same bytes
        if subprocess.run(["which", "qemu-img"], capture_output=True).returncode == 0:
            out = tmp_path / "copy.raw"
            drive = how["qemu_drive"].replace("VOLUME", "vm4")
            q = subprocess.run(["qemu-img", "convert", "--object", how["qemu_object"],
                                "--image-opts", drive, "-O", "raw", str(out)],
                               capture_output=True, text=True, timeout=60)
            assert q.returncode == 0, q.stderr
            assert out.read_bytes()[:512] == b"tls!" * 128
            q = subprocess.run(["qemu-img", "info", f"nbd://127.0.0.1:{port}/vm4"],
                               capture_output=True, text=True, timeout=60)
            assert q.returncode != 0 and "TLS" in q.stderr
    finally:
        s = archip("--data-dir", d, "nbd", "stop")
    assert s.returncode == 0, s.stderr


def test_tls_flags_and_key_checks(tmp_path: Path) -> None:
    """Point 4: the key is reused, a shared key is refused, TLS flags need --tcp."""
    from archipelago.nbd.tls import ensure_psk, tls_setup

    key = tmp_path / "k" / "keys.psk"
    a = tls_setup(str(key), "", False)
    first = key.read_text()
    assert a.kind == "psk" and a.username == "archip" and a.nbdkit_args() == [
        "--tls=require", f"--tls-psk={key}"]
    assert tls_setup(str(key), "", False).path == key and key.read_text() == first
    assert tls_setup(str(key), "", True).nbdkit_args() == ["--tls=off"]
    key.chmod(0o644)
    with pytest.raises(Exception, match="readable by others"):
        ensure_psk(key)
    with pytest.raises(Exception, match="lacks ca-cert.pem"):
        tls_setup(str(key), str(tmp_path), False)
    p = archip("--data-dir", str(tmp_path), "nbd", "serve", "--insecure")
    assert p.returncode == 2 and "go with --tcp" in p.stderr and "Traceback" not in p.stderr
