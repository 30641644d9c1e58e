"""Two archipelago daemons ("hosts") on one Ceph pool: locks, snapshots/clones, a killed
host, the CLI, and an OSD outage seen through the daemon.

Each daemon has its own --data-dir (own segment, own name); both run
`archip daemon start --backend rados --ceph-conf C --pool P --namespace NS` with a
namespace unique to the test. The cluster comes from $ARCHIPELAGO_CEPH_CONF
(scripts/test.sh starts one); without it these tests skip. The fault test runs a
private bluestore cluster (memstore loses everything when its OSD restarts).

Stale locks: a lock owner is "host:pid:mapper" of the holder's mapper peer. Two
daemons on one machine share the host name, so B treats A's lock as stale -- and
breaks it on open, with a log line -- only once A's mapper pid is dead. While A is
alive, and always for a holder on another host, only `volume unlock --force` (or an
open with force) breaks it.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from archipelago.errors import ConfigError, InvalidArgument, Locked, NotFound
from tests.daemon_helpers import Daemon, make_image, sha256

pytest.importorskip("rados", reason="python3-rados is not installed")

from archipelago.client import Client  # noqa: E402
from archipelago.mapper.format import lock_name  # noqa: E402
from testbed.ceph import purge  # noqa: E402
from tests.rados_daemon_helpers import (  # noqa: E402
    POOL,
    MiB,
    ceph_conf,
    owner_of,
    pattern,
    run_cluster,
    start_host,
)

pytestmark = [pytest.mark.rados, pytest.mark.timeout(90)]


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon, str]]:
    """Hosts A and B sharing one pool and a fresh namespace; always stopped and purged."""
    conf = ceph_conf()
    ns = f"t-{uuid.uuid4().hex[:12]}"
    started: list[Daemon] = []
    try:
        for name in ("A", "B"):
            started.append(Daemon(tmp_path / name))
            start_host(tmp_path / name, conf, ns)
        yield started[0], started[1], ns
    finally:
        for h in started:
            h.stop()
        purge(conf, ns, POOL)


def test_writable_open_is_exclusive_across_hosts(hosts: tuple[Daemon, Daemon, str]) -> None:
    a, b, _ = hosts
    ca, cb = Client.connect(a.data_dir), Client.connect(b.data_dir)
    try:
        ca.create("vol", 16 * MiB)
        va = ca.open("vol")
        va.write(0, pattern(1, MiB), fua=True)
        owner = owner_of(a)
        assert f":{a.child_pid('mapper')}:" in owner
        with pytest.raises(Locked, match=re.escape(owner)):
            cb.open("vol")
        r = b.archip("volume", "lock", "vol")
        assert r.rc == Locked.exit_code == 5, r
        assert owner in r.err and "locked" in r.err, r.err
        r = b.archip("volume", "unlock", "vol")  # not ours: refused without --force
        assert r.rc == 5 and owner in r.err, r
        info = b.archip("volume", "info", "vol", "--json", check=True).json()
        assert info["lock_owner"] == owner and info["lock_stale"] is False
        # B's mapper restarts and sweeps stale locks at start: A is alive, so it must not.
        mapper = b.child_pid("mapper")
        os.kill(mapper, 9)
        end = time.monotonic() + 20
        while not any(c["name"] == "mapper" and c["restarts"] >= 1 and c["alive"]
                      for c in b.status()["children"]) or "error" in b.status()["mapper"]:
            assert time.monotonic() < end, "B's mapper was not restarted"
            time.sleep(0.1)
        assert "broke stale lock" not in b.log()
        with pytest.raises(Locked, match=re.escape(owner)):
            cb.open("vol")
        # A still owns it and keeps writing.
        va.write(MiB, pattern(2, MiB), fua=True)
        assert bytes(va.read(0, 2 * MiB)) == pattern(1, MiB) + pattern(2, MiB)
        va.close()
        with cb.open("vol") as vb:  # released by A's close: B gets it
            assert bytes(vb.read(MiB, MiB)) == pattern(2, MiB)
            with pytest.raises(Locked, match=re.escape(owner_of(b))):
                ca.open("vol")
    finally:
        ca.close()
        cb.close()


def test_snapshot_on_a_is_cloned_and_read_on_b(hosts: tuple[Daemon, Daemon, str]) -> None:
    a, b, _ = hosts
    ca, cb = Client.connect(a.data_dir), Client.connect(b.data_dir)
    try:
        ca.create("base", 12 * MiB)
        data = os.urandom(5 * MiB + 12345)
        with ca.open("base") as va:
            va.write(3 * MiB, data)
            va.flush()
            ca.snapshot("base", "base-s1")
            va.write(3 * MiB, pattern(9, MiB), fua=True)  # after the snapshot: not in it
        assert cb.info("base-s1").readonly
        cb.clone("base-s1", "copy")
        with cb.open("copy") as vb:
            assert bytes(vb.read(3 * MiB, len(data))) == data
            assert bytes(vb.read(0, 3 * MiB)) == bytes(3 * MiB)
            vb.write(0, pattern(7, 4096), fua=True)
        with cb.open("base-s1") as s:  # the snapshot itself, read on B
            assert bytes(s.read(3 * MiB, len(data))) == data
            assert bytes(s.read(0, 4096)) == bytes(4096)
        with ca.open("copy") as v:  # B's clone is visible on A, with B's write
            assert bytes(v.read(0, 4096)) == pattern(7, 4096)
        names = {i.name for i in ca.list()}
        assert {"base", "base-s1", "copy"} <= names
    finally:
        ca.close()
        cb.close()


def test_killed_host_lock_broken_with_force(hosts: tuple[Daemon, Daemon, str]) -> None:
    a, b, _ = hosts
    with Client.connect(a.data_dir) as ca:
        for name in ("v1", "v2"):
            ca.create(name, 8 * MiB)
        v1, v2 = ca.open("v1"), ca.open("v2")
        v1.write(0, pattern(11, 2 * MiB), fua=True)
        v2.write(4096, pattern(12, 8192))
        v2.flush()
        owner = owner_of(a)
        a.kill9()  # the whole process group of A: supervisor, mapper, blocker peers
    assert a.status()["running"] is False
    info = b.archip("volume", "info", "v1", "--json", check=True).json()
    assert info["lock_owner"] == owner and info["lock_stale"] is True
    r = b.archip("volume", "unlock", "--force", "v1", check=True)
    assert "unlocked" in r.out
    with Client.connect(b.data_dir) as cb:
        with cb.open("v1") as vb:
            assert bytes(vb.read(0, 2 * MiB)) == pattern(11, 2 * MiB)  # A's acknowledged data
            vb.write(2 * MiB, pattern(13, MiB), fua=True)
            assert bytes(vb.read(MiB, 2 * MiB)) == pattern(11, MiB) + pattern(13, MiB)
        # Same host, dead pid: a plain open breaks the stale lock itself, with a log line.
        assert cb.info("v2").lock_stale
        with cb.open("v2") as vb:
            assert bytes(vb.read(4096, 8192)) == pattern(12, 8192)
            vb.write(0, pattern(14, 4096), fua=True)
    assert re.search(r"broke stale lock of volume 'v2' held by " + re.escape(owner), b.log())


def test_lock_of_another_host_is_broken_only_with_force(
        hosts: tuple[Daemon, Daemon, str]) -> None:
    import asyncio

    from archipelago.blocker.rados import RadosBlocker

    _, b, ns = hosts
    conf = ceph_conf()
    far = "elsewhere.invalid:4194303:mapper"  # no such pid here either: host decides
    with Client.connect(b.data_dir) as cb:
        cb.create("far", 8 * MiB)

        async def take() -> None:
            rb = RadosBlocker(conf, POOL, ns)
            try:
                await rb.lock(lock_name("far"), far)
            finally:
                await rb.close()

        asyncio.run(take())
        info = cb.info("far")
        assert info.lock_owner == far and not info.lock_stale
        with pytest.raises(Locked, match=re.escape(far)):
            cb.open("far")
        r = b.archip("volume", "lock", "far")
        assert r.rc == 5 and far in r.err
        b.archip("volume", "unlock", "--force", "far", check=True)
        with cb.open("far") as v:
            v.write(0, pattern(3, 4096), fua=True)
        # Or in one step: open with force breaks whoever holds it.
        asyncio.run(take())
        with cb.open("far", force=True) as v:
            assert bytes(v.read(0, 4096)) == pattern(3, 4096)
            assert cb.info("far").lock_owner == owner_of(b)


def test_cli_volume_flow_on_rados(hosts: tuple[Daemon, Daemon, str], tmp_path: Path) -> None:
    a, b, ns = hosts
    st = b.archip("daemon", "status", check=True).out
    assert "rados backend" in st and "blocker-1" in st  # rados: 2 blocker peers, no limit
    img = make_image(tmp_path / "in.img", 9 * MiB, seed=5, data_blocks=[0, 2])
    b.archip("import", "--no-progress", str(img), "disk", check=True)
    assert not (b.data_dir / "blocks").exists()  # nothing went to a local file store
    vols = a.archip("volume", "list", "--json", check=True).json()  # A sees B's volume
    assert [v["name"] for v in vols] == ["disk"] and vols[0]["size"] == 9 * MiB
    a.archip("volume", "snapshot", "disk", "disk-s", check=True)
    b.archip("volume", "clone", "disk-s", "disk-c", "--size", "16M", check=True)
    assert b.archip("volume", "info", "disk-c", "--json", check=True).json()["size"] == 16 * MiB
    b.archip("volume", "resize", "disk-c", "--size", "20M", check=True)
    b.archip("volume", "rename", "disk-c", "disk-d", check=True)
    a.archip("export", "--no-progress", "disk-d", str(tmp_path / "out.img"), check=True)
    with open(tmp_path / "out.img", "rb") as f:
        assert f.read(9 * MiB) == img.read_bytes() and f.read() == bytes(11 * MiB)
    a.archip("export", "--no-progress", "disk-s", str(tmp_path / "s.img"), check=True)
    assert sha256(tmp_path / "s.img") == sha256(img)
    r = b.archip("volume", "hash", "disk-s", "--json", check=True).json()
    assert r["readonly"] and re.fullmatch(r"[0-9a-f]{64}", r["name"]), r
    for name in ("disk-d", "disk", "disk-s", r["name"]):
        a.archip("volume", "remove", name, check=True)
    assert b.archip("volume", "list", "--json", check=True).json() == []


def test_daemon_start_refuses_bad_rados_settings(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "bad")
    r = d.archip("daemon", "start", "--no-nbd", "--ceph-conf", str(tmp_path / "nope.conf"))
    assert r.rc == ConfigError.exit_code and "nope.conf" in r.err and "not found" in r.err, r
    r = d.archip("daemon", "start", "--no-nbd", "--backend", "file", "--pool", "x")
    assert r.rc == InvalidArgument.exit_code and "--backend rados" in r.err, r
    if os.environ.get("ARCHIPELAGO_CEPH_CONF"):
        r = d.archip("daemon", "start", "--no-nbd", "--ceph-conf", ceph_conf(), "--pool",
                     f"no-such-{uuid.uuid4().hex[:6]}")
        assert r.rc == NotFound.exit_code and "does not exist" in r.err, r
    assert not d.status()["running"]


def test_nbd_export_and_config_file_on_rados(tmp_path: Path) -> None:
    nbd = pytest.importorskip("nbd", reason="python3-libnbd is not installed")
    if not shutil.which("nbdkit"):
        pytest.skip("nbdkit is not installed")
    conf = ceph_conf()
    ns = f"t-{uuid.uuid4().hex[:12]}"
    a = Daemon(tmp_path / "N")
    b = Daemon(tmp_path / "T")
    try:
        # A: the flags only (overrides): nbdkit must see them too, not the file default.
        a.archip("daemon", "start", "--json", "--backend", "rados", "--ceph-conf", conf,
                 "--pool", POOL, "--namespace", ns, check=True)
        a.archip("volume", "create", "disk", "--size", "8M", check=True)
        h = nbd.NBD()
        h.set_export_name("disk")
        end = time.monotonic() + 15
        while True:
            try:
                h.connect_unix(str(a.data_dir / "nbd.sock"))
                break
            except nbd.Error:
                assert time.monotonic() < end, f"nbdkit did not listen: {a.log()[-2000:]}"
                time.sleep(0.1)
                h = nbd.NBD()
                h.set_export_name("disk")
        h.pwrite(pattern(21, 64 * 1024), 4 * MiB - 4096, nbd.CMD_FLAG_FUA)
        h.shutdown()
        assert not (a.data_dir / "blocks").exists()
        a.stop()
        # B: the same settings from DATA_DIR/archipelago.toml, no flags.
        b.data_dir.mkdir()
        (b.data_dir / "archipelago.toml").write_text(
            f'[blocker]\nbackend = "rados"\n[blocker.rados]\nconffile = "{conf}"\n'
            f'pool = "{POOL}"\nnamespace = "{ns}"\n')
        b.archip("daemon", "start", "--no-nbd", check=True)
        with Client.connect(b.data_dir) as c, c.open("disk") as v:
            assert bytes(v.read(4 * MiB - 4096, 64 * 1024)) == pattern(21, 64 * 1024)
    finally:
        a.stop()
        b.stop()
        purge(conf, ns, POOL)


# -- the OSD stops while a client writes through the daemon -------------------------------

@pytest.fixture
def bluestore(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A private one-OSD bluestore cluster (survives OSD restarts), always torn down."""
    ceph_conf()
    if os.geteuid() != 0 or not shutil.which("ceph-osd"):
        pytest.skip("needs root and ceph-osd to run a private cluster")
    d = tmp_path / "ceph"
    try:
        out = run_cluster("up", str(d), "--store", "bluestore", "--size-mb", "2048",
                       "--watch-pid", str(os.getpid()))
        yield out.strip().splitlines()[-1], d
    finally:
        run_cluster("down", str(d))


def test_osd_stop_while_writing_through_the_daemon(bluestore: tuple[str, Path],
                                                   tmp_path: Path) -> None:
    from archipelago.errors import ArchipelagoError, BackendUnavailable, TimedOut

    conf, d = bluestore
    h = Daemon(tmp_path / "F")
    op_timeout = 3
    try:
        start_host(h.data_dir, conf, "fault", "-o", f"blocker.rados.timeout={op_timeout}")
        c = Client.connect(h.data_dir)
        c.create("w", 256 * MiB)
        v = c.open("w")
        acked: dict[int, bytes] = {}
        errors: list[ArchipelagoError] = []
        stop = threading.Event()
        slots = iter(range(4096))  # 64 KiB slots: a write never overlaps an acknowledged one
        take = threading.Lock()

        def writer() -> None:
            while not stop.is_set():
                with take:
                    i = next(slots, None)
                if i is None:
                    return
                data = pattern(1000 + i, 64 * 1024)
                try:
                    v.write(i * 64 * 1024, data, fua=True)
                except ArchipelagoError as e:
                    errors.append(e)
                    continue
                acked[i] = data

        def until(cond: object, limit: float, what: str) -> None:
            end = time.monotonic() + limit
            while not cond():  # type: ignore[operator]
                assert time.monotonic() < end, f"not reached in {limit:.0f}s: {what}"
                time.sleep(0.05)

        threads = [threading.Thread(target=writer, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            until(lambda: len(acked) >= 20, 30, "20 writes before the outage")
            run_cluster("osd-stop", str(d))
            until(lambda: len(errors) >= 2, 4 * op_timeout + 10, "writes fail during the outage")
            st = h.status()  # the daemon stays up and answers while the OSD is down
            assert st["running"] and "error" not in st["mapper"], st
            before = len(acked)
            run_cluster("osd-start", str(d))
            until(lambda: len(acked) >= before + 10, 60, "writes succeed again after osd-start")
        finally:
            stop.set()
            for t in threads:
                t.join(4 * op_timeout + 10)
        for e in errors:  # clear errors naming the cause, not hangs or internal errors
            assert isinstance(e, TimedOut | BackendUnavailable), repr(e)
            assert "Ceph" in e.message and f"{op_timeout}s" in e.message, e.message
        st = h.status()
        assert all(ch["restarts"] == 0 and ch["alive"] for ch in st["children"]), st
        for i, data in acked.items():  # nothing acknowledged is lost ...
            assert bytes(v.read(i * 64 * 1024, len(data))) == data, i
        v.close()
        c.close()
        h.archip("daemon", "stop", check=True)
        start_host(h.data_dir, conf, "fault")
        with Client.connect(h.data_dir) as c2, c2.open("w") as v2:  # ... also after a restart
            for i, data in acked.items():
                assert bytes(v2.read(i * 64 * 1024, len(data))) == data, i
    finally:
        h.stop()
