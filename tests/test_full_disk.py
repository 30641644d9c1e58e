"""Issue 23 acceptance: a full disk on a bad day (point 9, core and gateway together).

A daemon with nbdkit and the gateway runs on a 96 MiB tmpfs. It is filled through NBD
(libnbd) and the gateway; then every volume and object written before must read back,
a trim must free space, writes must work again, and ``archip daemon stop`` must
succeed and leave nothing of the instance in /dev/shm. Every failure on the way is a
clear one: ENOSPC for NBD, 507 for HTTP, never a 500 or a hang.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from nbd_helpers import need

from archipelago.blocker.file import FileBlocker
from archipelago.errors import Locked, NoSpace
from archipelago.instance import Instance
from archipelago.service.supervisor import Child, ChildSpec, Supervisor, status_path
from tests.daemon_helpers import Daemon, wait_gateway
from tests.fs_helpers import fill, mounted_tmpfs

nbd = pytest.importorskip("nbd", reason="python3-libnbd is not installed")

pytestmark = [pytest.mark.nbd, pytest.mark.timeout(300)]
MiB = 1024 * 1024


@pytest.fixture
def tmpfs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A tmpfs (96 MiB unless parametrized; needs root), unmounted after the test."""
    with mounted_tmpfs(tmp_path / "disk", getattr(request, "param", "96m")) as mnt:
        yield mnt


def _connect(d: Path, export: str) -> nbd.NBD:
    h = nbd.NBD()
    h.set_export_name(export)
    h.connect_unix(str(d / "nbd.sock"))
    return h


def _nbd_fill(h: nbd.NBD, size: int, rng: random.Random) -> dict[int, bytes]:
    """Write 1 MiB pieces until ENOSPC; returns what was acknowledged (and flushed)."""
    written: dict[int, bytes] = {}
    for off in range(0, size, MiB):
        data = rng.randbytes(MiB)
        try:
            h.pwrite(data, off)
            h.flush()
        except nbd.Error as e:
            assert e.args[1] == errno.ENOSPC, (off, e)  # (message, errno number)
            return written
        written[off] = data
    raise AssertionError("the volume never hit ENOSPC: the disk is not full")


def _gone(pid: int) -> bool:
    """The process exited (a zombie not yet reaped by init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _procs_of(data_dir: Path) -> list[int]:
    """Live processes whose command line names ``data_dir`` (the daemon's children)."""
    mark = os.fsencode(str(data_dir))
    out = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if mark in Path(f"/proc/{entry}/cmdline").read_bytes() and not _gone(int(entry)):
                out.append(int(entry))
        except OSError:
            continue
    return out


def _shm_of(inst: Instance) -> list[str]:
    tag = inst.segment_name.rsplit("-", 1)[1]
    return [n for n in os.listdir("/dev/shm") if tag in n]


def test_full_disk_reads_trims_writes_and_stops(tmpfs: Path) -> None:
    need("nbdkit")
    data_dir = tmpfs / "inst"
    d = Daemon(data_dir, ["blocker.file.fsync=false", "gateway.listen=127.0.0.1:0",
                          "peers.blockers=1"])
    inst = Instance(data_dir.resolve())
    rng = random.Random(23)
    d.archip("daemon", "start", "--gateway", "--json", check=True)
    try:
        _scenario(d, data_dir, inst, rng)
    except BaseException:
        print(d.log()[-6000:])
        nbdlog = data_dir / "log"
        print(sorted(p.name for p in nbdlog.iterdir()) if nbdlog.exists() else "")
        raise
    finally:
        d.stop()
    assert _shm_of(inst) == []


def _scenario(d: Daemon, data_dir: Path, inst: Instance, rng: random.Random) -> None:
    """Fill, read back, trim, write again, stop (see the module doc)."""
    if True:
        url = wait_gateway(d)
        key = d.archip("gateway", "user", "add", "alice", check=True).out.strip()
        r = requests.get(f"{url}/auth/v1.0", timeout=30,
                         headers={"X-Auth-User": "alice", "X-Auth-Key": key})
        base, h = r.headers["X-Storage-Url"], {"X-Auth-Token": key}

        def req(method: str, path: str, **kw: object) -> requests.Response:
            return requests.request(method, base + path, headers={**h, **kw.pop(
                "headers", {})}, timeout=60, **kw)  # type: ignore[arg-type, dict-item]

        # Before: two volumes and two objects with known contents.
        d.archip("volume", "create", "v1", "--size", "8M", check=True)
        d.archip("volume", "create", "v2", "--size", "256M", check=True)
        v1 = rng.randbytes(8 * MiB)
        a = _connect(data_dir, "v1")
        a.pwrite(v1, 0)
        a.flush()
        a.shutdown()
        assert req("PUT", "/c").status_code == 201
        objects = {f"/c/o{i}": rng.randbytes(3 * MiB + i) for i in range(2)}
        for path, data in objects.items():
            assert req("PUT", path, data=data).status_code == 201

        # Fill: through NBD until ENOSPC, then through the gateway until 507.
        b = _connect(data_dir, "v2")
        v2 = _nbd_fill(b, 256 * MiB, rng)
        b.shutdown()
        assert v2, "nothing fitted on the disk"
        statuses = []
        for i in range(64):
            r = req("PUT", f"/c/fill{i}", data=rng.randbytes(MiB))
            statuses.append(r.status_code)
            assert r.status_code in (201, 507), (i, r.status_code, r.text)
            if r.status_code == 507:
                break
        assert statuses[-1] == 507, statuses
        fill(data_dir.parent / "filler")  # the last bytes, that blocks do not fit in
        for i in range(400):  # metadata too: a new container is a clear 507 (or fits)
            r = req("PUT", f"/full{i}", headers={
                f"X-Container-Meta-K{j}": "v" * 250 for j in range(15)})
            assert r.status_code in (201, 507), (i, r.status_code, r.text)
            if r.status_code == 507:
                break
        else:
            raise AssertionError("container PUTs never hit the full disk")
        uploaded = [f"/c/fill{i}" for i, s in enumerate(statuses) if s == 201]

        # Full: every volume and object written before reads back (new connections:
        # opening a volume takes its lock, which must need no free space).
        for name, want in (("v1", {0: v1}), ("v2", v2)):
            c = _connect(data_dir, name)
            for off, data in want.items():
                assert c.pread(len(data), off) == data, (name, off)
            c.shutdown()
        for path, data in objects.items():
            r = req("GET", path)
            assert r.status_code == 200 and r.content == data, (path, r.status_code)
        for path in uploaded:
            assert req("HEAD", path).status_code == 200
        assert req("GET", "/c").status_code == 200
        assert d.archip("volume", "list").rc == 0

        # Trim frees space, and writes work again.
        c = _connect(data_dir, "v2")
        c.trim(len(v2) * MiB, 0)
        c.flush()
        c.pwrite(v1, 0)
        c.flush()
        assert c.pread(len(v1), 0) == v1
        c.shutdown()
        assert req("DELETE", "/c/o1").status_code == 204
        assert req("PUT", "/c/again", data=objects["/c/o0"]).status_code == 201
        assert req("GET", "/c/again").content == objects["/c/o0"]

        # Full again, then stop: clean, nothing left in /dev/shm.
        fill(data_dir.parent / "filler2")
        r = d.archip("daemon", "stop", timeout=120)
        assert r.rc == 0, r.err
        assert "left" not in r.err, r.err  # the supervisor cleaned up itself
        assert _shm_of(inst) == [], "the daemon left its segment behind"
        assert d.pid() is None and _procs_of(data_dir) == []


# -- the pieces, one by one ------------------------------------------------------------

small = pytest.mark.parametrize("tmpfs", ["8m"], indirect=True)


@small
async def test_locks_and_reads_need_no_free_space(tmpfs: Path) -> None:
    """Taking, reading and releasing a lock, and reading objects, on a full disk."""
    b = FileBlocker(str(tmpfs / "blocks"), fsync=True)
    try:
        await b.put("obj", b"kept" * 1000)
        fill(tmpfs / "filler")
        with pytest.raises(NoSpace):
            await b.put("new", os.urandom(64 * 1024))
        await b.lock("lock:v", "host:1:mapper")
        info = await b.lock_info("lock:v")
        assert info is not None and info.owner == "host:1:mapper"
        with pytest.raises(Locked):
            await b.lock("lock:v", "host:2:mapper")
        await b.unlock("lock:v", "host:1:mapper")
        assert await b.lock_info("lock:v") is None
        assert await b.read("obj", 0, 4000) == b"kept" * 1000
    finally:
        await b.close()


async def test_old_lock_files_are_honoured(tmp_path: Path) -> None:
    """A lock file of an older version (the owner as content) still counts."""
    b = FileBlocker(str(tmp_path / "blocks"), fsync=False)
    try:
        (tmp_path / "blocks" / "locks" / "lock:old").write_text("elsewhere:7:mapper")
        with pytest.raises(Locked, match="elsewhere:7"):
            await b.lock("lock:old", "host:1:mapper")
        await b.unlock("lock:old", "x", force=True)
        await b.lock("lock:old", "host:1:mapper")
    finally:
        await b.close()


@small
async def test_a_rewrite_that_does_not_grow_works_on_a_full_disk(tmpfs: Path) -> None:
    """The spare: a map chunk rewritten by a trim fits on a full disk, and comes back
    once the trim's delete frees space; a put that grows the store is NoSpace."""
    b = FileBlocker(str(tmpfs / "blocks"), fsync=True)
    try:
        chunk = os.urandom(135_200)
        await b.put("map@u@0", chunk)
        await b.put("block", os.urandom(MiB))
        fill(tmpfs / "filler")
        for i in range(3):  # the first uses the spare, the delete lets it come back
            with pytest.raises(NoSpace):
                await b.put("map@u@1", chunk)  # new: it would grow the store
            new = bytes([i]) * len(chunk)
            await b.put("map@u@0", new)
            assert await b.read("map@u@0", 0, len(new)) == new
            if i == 0:
                await b.delete("block")
                fill(tmpfs / "filler2")
        with pytest.raises(NoSpace):
            await b.put("map@u@0", chunk + b"longer")  # grows: no spare for that
    finally:
        await b.close()
    assert not [p for p in (tmpfs / "blocks" / "tmp").iterdir()], "close leaves no spare"


@small
def test_status_file_on_a_full_disk(tmpfs: Path) -> None:
    """The supervisor's status write never raises: in place, else a stale file."""
    inst = Instance(tmpfs / "inst").ensure()
    sup = Supervisor(inst, inst.config(None, []), [])
    sup.write_status()
    fill(tmpfs / "filler")
    sup.ready = True
    sup.write_status()  # in place: the old file's blocks are reused
    assert json.loads(status_path(inst).read_text())["ready"] is True
    sup.children = [Child(ChildSpec(f"c{i}", ["true"])) for i in range(200)]
    sup.write_status()  # too big for the old blocks: stale, but no exception
    assert not status_path(inst).with_suffix(".tmp").exists()


def test_stop_cleans_up_after_a_killed_supervisor(tmp_path: Path) -> None:
    """kill -9 of the supervisor alone (a crash): `daemon stop` stops the children it
    left behind (the gateway lives on without it) and removes its segment."""
    d = Daemon(tmp_path / "inst", ["blocker.file.fsync=false", "peers.blockers=1",
                                   "gateway.listen=127.0.0.1:0"])
    inst = Instance((tmp_path / "inst").resolve())
    d.archip("daemon", "start", "--no-nbd", "--gateway", check=True)
    try:
        wait_gateway(d)
        pid, gateway = d.pid(), d.child_pid("gateway")
        assert pid is not None and _shm_of(inst)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while d.status()["running"]:  # the instance lock goes with the process
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(gateway, 0)  # orphaned, it still serves
        r = d.archip("daemon", "stop")
        assert r.rc == 0, r.err
        assert "children behind" in r.err and "left its segment behind" in r.err, r.err
        assert _gone(gateway)
        assert _shm_of(inst) == []
    finally:
        d.stop()
