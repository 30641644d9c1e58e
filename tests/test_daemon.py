"""The daemon as processes: start/stop/status, single instance, restarts, kill -9 recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from daemon_helpers import (
    ARCHIP,
    BS,
    ROOT,
    Daemon,
    content_objects,
    make_image,
    sha256,
    start_daemon,
)
from fs_helpers import fill, mounted_tmpfs

from archipelago.client import Client
from archipelago.errors import NotFound, PeerDied

pytestmark = pytest.mark.timeout(120)


def _wait(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_lifecycle_status_and_single_instance(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    r = d.archip("daemon", "stop")
    assert r.rc == 0 and "not running" in r.out and "nothing to stop" in r.out
    assert d.archip("daemon", "stop", "--json").json() == {"stopped": False, "pid": None}
    r = d.archip("daemon", "status", "--json")
    assert r.rc == 12 and r.json()["running"] is False
    try:
        st = d.start()
        assert st["ready"] and st["pid"] == d.pid()
        names = sorted(c["name"] for c in st["children"])
        assert names == ["blocker-0", "blocker-1", "mapper"]
        assert (tmp_path / "run" / "daemon.pid").exists()
        assert Path(st["segment"]).exists()
        r = d.archip("daemon", "start", "--no-nbd")
        assert r.rc == 6 and "already running" in r.err and str(st["pid"]) in r.err
        s = d.status()
        assert s["running"] and s["backend"] == "file"
        ports = {c["name"]: c["port"] for c in s["children"]}
        assert ports == {"blocker-0": 1, "blocker-1": 2, "mapper": 0}
        assert all(c["alive"] and c["pid"] for c in s["children"])
        m = s["mapper"]
        assert m["open_volumes"] == [] and m["inflight"] == 0
        assert [b["port"] for b in m["blockers"]] == [1, 2]
        with Client.connect(tmp_path) as c:
            c.create("v", 16 * BS)
            with c.open("v") as v:
                v.write(0, b"x" * 4096)
                s = d.status()
                assert s["mapper"]["open_volumes"] == [{"name": "v", "handles": 1,
                                                        "writable": True}]
                pp = s["mapper"]["peer_port"]  # the mapper's pump: it served and submitted
                assert pp["port"] == 0 and pp["requests"] > 0 and pp["completions"] > 0
                assert pp["spin_hits"] <= pp["spins"] and pp["spin_max_us"] >= 0
                human = d.archip("daemon", "status", check=True).out
                assert "blocker-0" in human and "open volumes: v (1 handle)" in human
        assert d.archip("volume", "info", "v", "--json", check=True).json()["lock_owner"] is None
        # Stop with a volume open and a write not yet flushed: drained, flushed, unlocked.
        c = Client.connect(tmp_path)
        v = c.open("v")
        v.write(BS, b"late" * 1024)
        r = d.archip("daemon", "stop", check=True)
        assert "stopped" in r.out
        assert not Path(st["segment"]).exists() and d.pid() is None
        assert f"daemon {st['pid']} stopped" in d.log()
        assert not list((tmp_path / "blocks" / "locks").iterdir())  # every lock released
        d.start()
        assert "broke stale lock" not in d.log()
        with Client.connect(tmp_path) as c2, c2.open("v") as v2:
            assert bytes(v2.read(BS, 4096)) == b"late" * 1024
        d.archip("daemon", "stop", check=True)
    finally:
        d.stop()


def test_foreground_logs_to_stderr_and_file(tmp_path: Path) -> None:
    p = subprocess.Popen([*ARCHIP, "--data-dir", str(tmp_path), "-o", "peers.blockers=3",
                          "daemon", "start", "--foreground", "--no-nbd"], cwd=ROOT, stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    d = Daemon(tmp_path)
    try:
        _wait(lambda: "daemon ready" in d.log())
        st = d.status()
        assert [c["port"] for c in st["children"] if c["kind"] == "blocker"] == [1, 2, 3]
        assert [b["port"] for b in st["mapper"]["blockers"]] == [1, 2, 3]
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0
        assert "daemon ready" in err and "mapper peer" in err
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        d.stop()


def test_blocker_peer_killed_under_import(tmp_path: Path) -> None:
    d = start_daemon(tmp_path / "inst")
    try:
        img = make_image(tmp_path / "big.raw", 48 * BS, seed=3, data_blocks=list(range(0, 48)))
        imp = subprocess.Popen([*ARCHIP, "--data-dir", str(d.data_dir), "import", str(img),
                                "big", "--threads", "1", "--json"], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        victim = d.child_pid("blocker-0")
        _wait(lambda: len(content_objects(d.data_dir)) >= 2 or imp.poll() is not None, 60)
        assert imp.poll() is None, "the import ended before the kill: make the image bigger"
        os.kill(victim, signal.SIGKILL)
        out, err = imp.communicate(timeout=90)  # never hangs
        _wait(lambda: any(c["name"] == "blocker-0" and c["restarts"] >= 1 and c["alive"]
                          for c in d.status()["children"]))
        assert f"blocker-0 (pid {victim}) died (signal 9)" in d.log()
        if imp.returncode == 0:
            out_img = tmp_path / "back.raw"
            d.archip("export", "big", str(out_img), check=True)
            assert sha256(out_img) == sha256(img)
        else:  # a clear one-line error, and nothing half-made
            assert err.startswith("archip: error:") and err.count("\n") == 1
            assert d.archip("volume", "info", "big").rc == 3
        # The daemon keeps serving after the restart.
        d.archip("import", str(img), "big2", check=True)
        back = tmp_path / "back2.raw"
        d.archip("export", "big2", str(back), check=True)
        assert sha256(back) == sha256(img)
    finally:
        d.stop()


def test_mapper_peer_killed_fails_requests_or_reopens(tmp_path: Path) -> None:
    d = start_daemon(tmp_path)
    try:
        with Client.connect(tmp_path, timeout=30) as c:
            c.create("m", 4 * BS)
            c.create("m2", 4 * BS)
            v = c.open("m")
            v.write(0, b"m" * 8192, fua=True)
            plain = c.open("m2")
            plain.reopen_for = 0  # no automatic reopen: the error comes back
            plain.write(0, b"p" * 512)
            os.kill(d.child_pid("mapper"), signal.SIGKILL)
            with pytest.raises((PeerDied, NotFound)):
                plain.read(0, 512)  # fails back, never hangs
            # The default handle waits for the restarted mapper, reopens and re-issues.
            assert bytes(v.read(0, 8192)) == b"m" * 8192 and v.reopened == 1
            v.write(8192, b"after", fua=True)
            # The restarted mapper broke the dead mapper's stale locks.
            assert "broke stale lock of volume 'm'" in d.log()
            assert "broke stale lock of volume 'm2'" in d.log()
            with c.open("m2") as v2:
                assert bytes(v2.read(0, 512)) == b"p" * 512
            v.close()
            assert c.info("m").lock_owner is None
    finally:
        d.stop()


def test_kill9_whole_daemon_after_flushed_write(tmp_path: Path) -> None:
    d = start_daemon(tmp_path)
    try:
        c = Client.connect(tmp_path, timeout=10)
        c.create("crash", 8 * BS)
        v = c.open("crash")
        v.write(BS - 10, b"durable!" * 1000)
        v.flush()
        v.write(5 * BS, b"fua" * 100, fua=True)
        seg = Path(d.status()["segment"])
        d.kill9()
        assert seg.exists()  # left behind by the crash
        info = Daemon(tmp_path).archip("volume", "info", "crash")
        assert info.rc == 12  # not running, says how to start
        d.start()  # replaces the stale segment, breaks the stale lock
        log = d.log()
        assert "removing stale segment" in log
        assert "broke stale lock of volume 'crash'" in log
        with Client.connect(tmp_path) as c2, c2.open("crash") as v2:
            assert bytes(v2.read(BS - 10, 8000)) == b"durable!" * 1000
            assert bytes(v2.read(5 * BS, 300)) == b"fua" * 100
        assert d.archip("volume", "info", "crash", "--json", check=True).json()["lock_owner"] \
            is None
    finally:
        d.stop()


def test_no_space_is_one_line_with_its_exit_code(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "small-fs", "12m") as store:
        d = Daemon(tmp_path / "inst", [f"blocker.file.path={store}", "blocker.file.fsync=false"])
        try:
            d.start()
            img = make_image(tmp_path / "big.raw", 6 * BS, seed=5, data_blocks=list(range(6)))
            r2 = d.archip("import", str(img), "toobig")
            assert r2.rc == 8, r2.err
            assert r2.err.startswith("archip: error:") and r2.err.count("\n") == 1
            assert d.archip("volume", "info", "toobig").rc == 3  # nothing half-made
            assert d.archip("volume", "list", "--json", check=True).json() == []  # still serving
            # A block did not fit, but smaller things may: fill the last bytes too, down to
            # the last page (nothing fits after).
            fill(store / "filler", (64 * 1024, 4096, 1))
            r3 = d.archip("volume", "create", "small", "--size", "4M")  # the store is full
            assert r3.rc == 8 and "No space left" in r3.err
        finally:
            d.stop()


async def test_async_handle_reopens_after_mapper_restart(tmp_path: Path) -> None:
    from archipelago.client import AsyncClient

    d = start_daemon(tmp_path)
    try:
        async with await AsyncClient.connect(tmp_path, timeout=30) as c:
            await c.create("am", 4 * BS)
            v = await c.open("am")
            data = os.urandom(6 * 1024 * 1024)  # two pieces in flight at once
            await v.write(0, data, fua=True)
            os.kill(d.child_pid("mapper"), signal.SIGKILL)
            assert await v.read(0, len(data)) == data
            assert v.reopened == 1  # the concurrent pieces reopened once
            await v.write(BS, b"again", fua=True)
            await v.close()
            assert (await c.info("am")).lock_owner is None
            assert [x["name"] for x in (await c.status())["open_volumes"]] == []
    finally:
        d.stop()


def test_segment_memory_is_committed_only_by_use(tmp_path: Path) -> None:
    """An idle daemon commits the segment's bookkeeping, not its buffer arena; a client
    doing 4 MiB I/O one request at a time (the mapper forwarding each to a blocker) keeps
    reusing the same few buffers (the arena is last-freed-first), so the committed part
    grows by a handful of buffers, not by the arena (status: segment_committed_bytes)."""
    d = start_daemon(tmp_path)
    try:
        st = d.status()
        size, idle = st["segment_bytes"], st["segment_committed_bytes"]
        assert 0 < idle < size // 10, (idle, size)
        with Client.connect(tmp_path) as c:
            c.create("v", 64 * BS)
            with c.open("v") as v:
                for i in range(64):  # 64 x 4 MiB: more than the arena's 4 MiB buffers
                    v.write(i * BS, bytes([i + 1]) * BS)
                    assert bytes(v.read(i * BS, 16)) == bytes([i + 1]) * 16
                v.flush()
        used = d.status()["segment_committed_bytes"] - idle
        assert used <= 16 * BS, f"{used >> 20} MiB of the arena committed by a QD1 load"
        assert "MiB committed" in d.archip("daemon", "status", check=True).out
    finally:
        d.stop()
