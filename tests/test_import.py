"""Import/export through a real daemon: byte-exact round trips, dedup, clone divergence."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import (
    ARCHIP,
    BS,
    ROOT,
    Daemon,
    MiB,
    content_objects,
    make_image,
    sha256,
    start_daemon,
)

from archipelago.client import Client

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("imp"), ["blocker.file.fsync=false"])
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 10 blocks + a partial one: data (partial, unaligned) in 0, 3, 4, 9 and the tail;
    # explicit zero blocks 5 and 6 (data regions reading as zeros); holes elsewhere.
    p = tmp_path_factory.mktemp("img") / "disk.raw"
    return make_image(p, 10 * BS + 12345, seed=7, data_blocks=[0, 3, 4, 9], zero_blocks=[5, 6])


def test_import_export_round_trip(daemon: Daemon, image: Path, tmp_path: Path) -> None:
    st = daemon.archip("import", str(image), "img", "--json", check=True).json()
    assert st["blocks"] == 11 and st["bytes"] == image.stat().st_size
    assert st["data_blocks"] == 5 and st["zero_blocks"] == 6  # 0,3,4,9,10 hold data
    assert st["new_blocks"] == 5 and st["dedup_ratio"] == 1.0
    info = daemon.archip("volume", "info", "img", "--json", check=True).json()
    assert info["size"] == image.stat().st_size and not info["readonly"]
    out = tmp_path / "out.raw"
    ex = daemon.archip("export", "img", str(out), "--json", check=True).json()
    assert ex["data_blocks"] == 5
    assert sha256(out) == sha256(image)
    assert out.stat().st_blocks * 512 <= 5 * BS + 64 * 1024  # holes stayed holes
    r = daemon.archip("import", str(image), "img")
    assert r.rc == 4 and "already exists" in r.err
    summary = daemon.archip("import", str(image), "img-human", check=True).err
    assert "imported" in summary and "iB/s)" in summary and "nothing new stored" in summary


def test_import_twice_stores_no_new_data_blocks(daemon: Daemon, tmp_path: Path) -> None:
    img = make_image(tmp_path / "b.raw", 6 * BS, seed=99, data_blocks=[1, 2, 5])
    daemon.archip("import", str(img), "dup1", check=True)
    before = content_objects(daemon.data_dir)
    st = daemon.archip("import", str(img), "dup2", "--json", check=True).json()
    assert st["new_blocks"] == 0 and st["data_blocks"] == 3 and st["dedup_ratio"] is None
    assert content_objects(daemon.data_dir) == before
    out = tmp_path / "dup2.raw"
    daemon.archip("export", "dup2", str(out), check=True)
    assert sha256(out) == sha256(img)


def test_empty_and_all_hole_images(daemon: Daemon, tmp_path: Path) -> None:
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    assert daemon.archip("import", str(empty), "empty", "--json", check=True).json()["blocks"] == 0
    holes = tmp_path / "holes.raw"
    with open(holes, "wb") as f:
        f.truncate(3 * BS + 1)
    st = daemon.archip("import", str(holes), "holes", "--json", check=True).json()
    assert st["data_blocks"] == 0 and st["new_blocks"] == 0
    out = tmp_path / "holes.out"
    daemon.archip("export", "holes", str(out), check=True)
    assert out.stat().st_size == 3 * BS + 1 and out.stat().st_blocks == 0
    r = daemon.archip("import", str(tmp_path / "missing.raw"), "x")
    assert r.rc == 3 and "cannot open" in r.err


def test_clone_of_imported_snapshot_diverges(daemon: Daemon, image: Path) -> None:
    daemon.archip("import", str(image), "golden", check=True)
    daemon.archip("volume", "snapshot", "golden", "golden-snap", check=True)
    daemon.archip("volume", "clone", "golden-snap", "vm-a", check=True)
    daemon.archip("volume", "clone", "golden-snap", "vm-b", check=True)
    src = image.read_bytes()
    with Client.connect(daemon.data_dir) as c:
        with c.open("vm-a") as a, c.open("vm-b") as b, c.open("golden-snap") as s:
            assert bytes(a.read(0, len(src))) == src
            assert bytes(b.read(0, len(src))) == src
            a.write(3 * BS - 100, b"A" * 300)  # across a block boundary, shared blocks
            a.flush()
            b.zero(0, BS)
            b.write(7 * BS + 5, b"B" * MiB, fua=True)
            exp_a = bytearray(src)
            exp_a[3 * BS - 100 : 3 * BS + 200] = b"A" * 300
            exp_b = bytearray(src)
            exp_b[0:BS] = bytes(BS)
            exp_b[7 * BS + 5 : 7 * BS + 5 + MiB] = b"B" * MiB
            assert a.read(0, len(src)) == exp_a
            assert b.read(0, len(src)) == exp_b
            assert bytes(s.read(0, len(src))) == src  # the snapshot never changes
            ext = b.extents()
            assert ext[0].offset == 0 and ext[0].zero and ext[0].length >= BS
    with Client.connect(daemon.data_dir) as c, c.open("golden") as g:
        assert bytes(g.read(0, len(src))) == src
        assert bytes(g.read(0, len(src))) == src  # chunks cached: the fast path reads
        assert c.status()["fast_reads"] > 0


def test_import_from_a_block_device(daemon: Daemon, tmp_path: Path) -> None:
    backing = make_image(tmp_path / "dev.raw", 5 * BS, seed=11, data_blocks=[1, 3])
    r = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0 or not r.stdout.strip().startswith("/dev/loop"):
        pytest.skip(f"no loop device: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        st = daemon.archip("import", dev, "from-dev", "--json", check=True).json()
        assert st["bytes"] == 5 * BS and st["data_blocks"] == 3  # 1, 3 and the tail block
        out = tmp_path / "dev.out"
        daemon.archip("export", "from-dev", str(out), check=True)
        assert sha256(out) == sha256(backing)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def _on_a_terminal(daemon: Daemon, *args: str) -> tuple[int, str]:
    """Run archip with stderr on a pty (the progress bar shows only on a terminal)."""
    master, slave = os.openpty()
    try:
        p = subprocess.run([*ARCHIP, "--data-dir", str(daemon.data_dir), *daemon_overrides(daemon),
                            *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=slave, timeout=90, cwd=ROOT)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                b = os.read(master, 65536)
            except OSError:  # EIO: the writer side is closed and drained
                break
            if not b:
                break
            chunks.append(b)
        return p.returncode, b"".join(chunks).decode()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def daemon_overrides(daemon: Daemon) -> list[str]:
    """The daemon's -o overrides as CLI arguments."""
    return [a for o in daemon.overrides for a in ("-o", o)]


def test_progress_bar_on_a_terminal(daemon: Daemon, tmp_path: Path) -> None:
    img = make_image(tmp_path / "p.raw", 8 * BS, seed=5, data_blocks=[2, 6])
    rc, err = _on_a_terminal(daemon, "import", str(img), "prog")
    assert rc == 0, err
    assert "\rimporting [" in err and "/s" in err
    assert "100.0%" in err  # holes count as done: the bar ends full on a sparse image
    assert "dedup ratio" in err and "Traceback" not in err
    rc, err = _on_a_terminal(daemon, "export", "prog", str(tmp_path / "p.out"))
    assert rc == 0 and "\rexporting [" in err and "100.0%" in err, err
    assert sha256(tmp_path / "p.out") == sha256(img)
    rc, err = _on_a_terminal(daemon, "import", "--no-progress", str(img), "prog2")
    assert rc == 0 and "\r" not in err.replace("\r\n", "\n") and "nothing new stored" in err


def test_bad_targets_and_thread_counts(daemon: Daemon, image: Path, tmp_path: Path) -> None:
    daemon.archip("import", str(image), "bad-args", check=True)
    r = daemon.archip("export", "bad-args", str(tmp_path))
    assert r.rc == 2 and "is a directory" in r.err and r.err.count("\n") == 1, r.err
    for n in ("0", "-5", "x"):
        r = daemon.archip("import", "--threads", n, str(image), "bad-threads")
        assert r.rc == 2 and "--threads" in r.err, r.err
    assert daemon.archip("volume", "info", "bad-threads").rc == 3  # nothing was created
