"""Issue 23, NBD side: what a hostile local user or client must not be able to do.

Each test reproduces one point of the issue (numbered as there) against real nbdkit
and libnbd/qemu clients.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nbd_helpers import MiB, nbd, need, prepare

pytestmark = [pytest.mark.nbd, pytest.mark.timeout(120)]

ARCHIP = [sys.executable, "-m", "control"]


def archip(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI."""
    return subprocess.run([*ARCHIP, *args], capture_output=True, text=True, timeout=timeout)


def wait_until(pred: Callable[[], object], what: str, timeout: float = 20) -> None:
    """Poll ``pred`` until true (nbdkit closes a connection after the client's shutdown)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


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


# -- 10: scratch exports are private to their connection ------------------------------


@pytest.fixture(scope="module")
def daemon_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A started daemon exporting its volumes on DATA_DIR/nbd.sock (peer backend)."""
    need("nbdkit")
    d = tmp_path_factory.mktemp("sec")
    p = archip("--data-dir", str(d), "daemon", "start")
    assert p.returncode == 0, p.stderr
    try:
        yield d
    finally:
        archip("--data-dir", str(d), "daemon", "stop")


def connect(d: Path, export: str) -> nbd.NBD:
    """A libnbd handle on the daemon's socket."""
    h = nbd.NBD()
    h.set_export_name(export)
    h.connect_unix(str(d / "nbd.sock"))
    return h


def internal_names(d: Path) -> list[str]:
    """Every volume the daemon's mapper knows, internal ones included."""
    from archipelago.client.blocking import Client

    with Client.connect(str(d)) as c:
        return [v["name"] for v in c.ctrl("list", internal=True)]


def test_scratch_clone_is_bound_to_its_connection(daemon_dir: Path) -> None:
    """Point 10: another client can neither see, open nor remove a scratch clone."""
    d = str(daemon_dir)
    assert archip("--data-dir", d, "volume", "create", "v1", "--size", "8M").returncode == 0
    h = connect(daemon_dir, "v1")
    h.pwrite(b"base" * 1024, 0)
    h.shutdown()
    a = connect(daemon_dir, "v1@scratch")
    a.pwrite(b"mine" * 1024, 0)
    clones = [n for n in internal_names(daemon_dir) if n.startswith("nbd-scratch.")]
    assert len(clones) == 2, clones  # the clone and the snapshot it was made from
    listed = json.loads(archip("--data-dir", d, "--json", "volume", "list").stdout)
    assert [v["name"] for v in listed] == ["v1"]
    for name in clones:
        with pytest.raises(nbd.Error) as ei:
            connect(daemon_dir, name)
        assert ei.value.errnum == errno.ENOENT
        with pytest.raises(nbd.Error):
            connect(daemon_dir, name + "@scratch")
        r = archip("--data-dir", d, "volume", "remove", name)
        assert r.returncode == 2 and "reserved" in r.stderr, r.stderr
    # the owner still works on its clone, and only its disconnect removes it
    assert a.pread(4096, 0) == b"mine" * 1024
    a.flush()
    a.shutdown()
    wait_until(lambda: not [n for n in internal_names(daemon_dir)
                            if n.startswith("nbd-scratch.")], "the clone was not removed")
    h = connect(daemon_dir, "v1")
    assert h.pread(4096, 0) == b"base" * 1024
    h.shutdown()


# -- 3: clients of the daemon reconnect to a restarted daemon ---------------------------


def test_p3_nbd_serve_reconnects_to_a_restarted_daemon(tmp_path: Path) -> None:
    """Point 3, NBD side: `archip nbd serve --peer` outlives a `daemon stop; daemon
    start`: while no daemon runs, opens fail at once (no 30 s hang, no talk to the old
    segment); after the restart new connections read and write; a connection made before
    the restart fails cleanly (ESHUTDOWN) instead of using the dead daemon."""
    need("nbdkit")
    d = str(tmp_path)
    assert archip("--data-dir", d, "daemon", "start", "--no-nbd").returncode == 0
    sock = tmp_path / "peer.sock"
    pid = None
    try:
        assert archip("--data-dir", d, "volume", "create", "v", "--size", "4M").returncode == 0
        p = archip("--data-dir", d, "--json", "nbd", "serve", "--peer", "--socket", str(sock))
        assert p.returncode == 0, p.stderr
        pid = json.loads(p.stdout)["pid"]

        def conn() -> nbd.NBD:
            h = nbd.NBD()
            h.set_export_name("v")
            h.connect_unix(str(sock))
            return h

        old = conn()
        old.pwrite(b"a" * 4096, 0)
        old.flush()
        assert archip("--data-dir", d, "daemon", "stop").returncode == 0
        t0 = time.monotonic()
        with pytest.raises(nbd.Error):
            conn()
        with pytest.raises(nbd.Error) as ei:
            old.pread(4096, 0)
        assert ei.value.errnum == errno.ESHUTDOWN
        assert time.monotonic() - t0 < 20  # no 30 s retries against a dead daemon
        assert archip("--data-dir", d, "daemon", "start", "--no-nbd").returncode == 0
        new = conn()
        assert new.pread(4096, 0) == b"a" * 4096
        new.pwrite(b"b" * 4096, 0)
        new.flush()
        new.shutdown()
        old.shutdown()
        new = conn()
        assert new.pread(4096, 0) == b"b" * 4096
        new.shutdown()
        log = (tmp_path / "log" / "nbdkit.log").read_text()
        assert "reconnected to the restarted daemon" in log and "Traceback" not in log
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        archip("--data-dir", d, "daemon", "stop")


# -- 5: reserved names ----------------------------------------------------------------


def test_reserved_names_are_refused_everywhere(tmp_path: Path) -> None:
    """Point 5: no create/snapshot/clone/rename/import path accepts a scratch name, so
    the startup sweep of dead nbdkits' scratch clones never deletes a user's volume."""
    import asyncio

    from archipelago.blocker.memory import MemoryBlocker
    from archipelago.errors import InvalidArgument
    from archipelago.mapper import Mapper
    from archipelago.nbd.exports import _host_tag

    need("nbdkit")
    d = str(tmp_path)
    assert archip("--data-dir", d, "daemon", "start").returncode == 0
    try:
        assert archip("--data-dir", d, "volume", "create", "keep", "--size", "4M").returncode == 0
        assert archip("--data-dir", d, "volume", "snapshot", "keep", "keep-s").returncode == 0
        img = tmp_path / "img.raw"
        img.write_bytes(b"i" * 4096)
        # the reproducer's name, and one this host's sweep would take for a dead nbdkit's
        for name in ("nbd-scratch.x.1.2", f"nbd-scratch.{_host_tag()}.999999.1"):
            for args in (("volume", "create", name, "--size", "4M"),
                         ("volume", "snapshot", "keep", name),
                         ("volume", "clone", "keep-s", name),
                         ("volume", "rename", "keep", name),
                         ("import", img.name, name)):
                r = subprocess.run([*ARCHIP, "--data-dir", d, *args], capture_output=True,
                                   text=True, timeout=60, cwd=tmp_path)
                assert r.returncode == 2, (args, r.stderr)  # InvalidArgument
                assert "reserved" in r.stderr and "Traceback" not in r.stderr, r.stderr
        # nothing of the user's is touched by the next start (its nbdkit sweeps at startup)
        assert archip("--data-dir", d, "daemon", "stop").returncode == 0
        assert archip("--data-dir", d, "daemon", "start").returncode == 0
        listed = json.loads(archip("--data-dir", d, "--json", "volume", "list").stdout)
        assert [v["name"] for v in listed] == ["keep", "keep-s"]
    finally:
        archip("--data-dir", d, "daemon", "stop")

    async def library() -> None:  # the same one rule for in-process callers (direct NBD, gateway)
        m = Mapper(MemoryBlocker(), "test:1")
        await m.create("src", 1 << 20)
        await m.snapshot("src", "snap")
        for call in (lambda: m.create("nbd-scratch.a", 1 << 20),
                     lambda: m.clone("snap", "nbd-scratch.b"),
                     lambda: m.snapshot("src", "nbd-scratch.c"),
                     lambda: m.rename("src", "nbd-scratch.d"),
                     lambda: m.clone_hashmap("nbd-scratch.e", [], 0)):
            with pytest.raises(InvalidArgument, match="reserved"):
                await call()
        await m.create("nbd-scratch.f", 1 << 20, internal=True)  # the plugin's own
        assert [v.name for v in await m.list()] == ["snap", "src"]
        assert "nbd-scratch.f" in [v.name for v in await m.list(internal=True)]
        with pytest.raises(InvalidArgument, match="reserved"):
            await m.remove("nbd-scratch.f")
        await m.remove("nbd-scratch.f", internal=True)

    asyncio.run(library())


# -- 12: an unknown export name is one log line ----------------------------------------


def test_unknown_export_logs_one_line(tmp_path: Path) -> None:
    """Point 12 (NBD): a client naming an unknown export leaves one line, no traceback."""
    from nbd_helpers import NbdServer

    need("nbdkit")
    prepare(tmp_path, volumes=[("v", MiB)])
    srv = NbdServer(tmp_path).start()
    try:
        for name in ("nope", "nope@scratch", "nbd-scratch.x.1.2"):
            h = nbd.NBD()
            h.set_export_name(name)
            with pytest.raises(nbd.Error) as ei:
                h.connect_unix(str(srv.sock))
            assert ei.value.errnum == errno.ENOENT
        h = nbd.NBD()
        h.set_export_name("v")
        h.connect_unix(str(srv.sock))  # nbdkit still serves
        h.shutdown()
    finally:
        srv.stop()
    lines = [ln for ln in srv.log_text().splitlines() if "nope" in ln or "nbd-scratch" in ln
             or ln.startswith((" ", "\t")) or "Traceback" in ln]
    assert len(lines) == 3, lines
    assert all("open: error: NotFound:" in ln for ln in lines), lines
