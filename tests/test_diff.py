"""Changed-block diffs (archipelago/upkeep/diff.py) through a real daemon and the CLI:
`archip volume diff` lists exactly the blocks written or zeroed between two snapshots,
`archip export-diff` writes an "rbd diff v1" stream of them, and `archip import-diff`
applies it to a clone of the older snapshot, which then equals the newer one. Ceph's
`rbd merge-diff` (no cluster needed) reads our streams and writes one we apply."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from daemon_helpers import start_daemon

from archipelago.client import Client
from archipelago.upkeep.diff import MAGIC, read_diff, write_diff

pytestmark = pytest.mark.timeout(180)
BS = 64 * 1024
SIZE = 16 * BS


def test_volume_diff_export_import(tmp_path: Path) -> None:
    """Diff from the maps, the v1 stream, and applying it."""
    d = start_daemon(tmp_path / "inst", ["metrics.listen="])
    try:
        d.archip("volume", "create", "vol", "--size", str(SIZE), "--block-size", "64K",
                 check=True)
        base = os.urandom(SIZE)
        with Client.connect(d.data_dir) as c:
            h = c.open("vol")
            h.write(0, base)
            h.flush()
            h.close()
            c.snapshot("vol", "s1")
            h = c.open("vol")
            h.write(3 * BS + 100, b"\x11" * 50)  # one block, partly
            h.write(7 * BS, b"\x22" * (2 * BS))  # two whole blocks
            h.zero(12 * BS, BS)  # one block zeroed
            h.flush()
            h.close()
            c.snapshot("vol", "s2")
            new = bytes(c.open("s2").read(0, SIZE))
        r = d.archip("--json", "volume", "diff", "s1", "s2", check=True).json()
        assert r["size"] == SIZE
        assert r["extents"] == [
            {"offset": 3 * BS, "length": BS, "zero": False},
            {"offset": 7 * BS, "length": 2 * BS, "zero": False},
            {"offset": 12 * BS, "length": BS, "zero": True}]
        assert d.archip("--json", "volume", "diff", "s2", "s2", check=True).json()["extents"] == []

        f = tmp_path / "d.rbddiff"
        d.archip("export-diff", "vol@s2", "--from-snap", "s1", str(f), check=True)
        recs = list(read_diff(io.BytesIO(f.read_bytes())))
        assert [(r.kind, r.name) for r in recs[:2]] == [("f", "s1"), ("t", "s2")]
        assert recs[2].kind == "s" and recs[2].length == SIZE
        changed = {(r.kind, r.offset, r.length) for r in recs[3:]}
        assert changed == {("w", 3 * BS, BS), ("w", 7 * BS, 2 * BS), ("z", 12 * BS, BS)}
        for r in recs[3:]:
            if r.kind == "w":
                assert r.data == new[r.offset : r.offset + r.length]

        # apply a diff of the live volume (no end snapshot) onto a clone of s1
        d.archip("volume", "clone", "s1", "copy", check=True)
        live = tmp_path / "live.rbddiff"
        d.archip("export-diff", "vol", "--from-snap", "s1", str(live), check=True)
        r = d.archip("--json", "import-diff", str(live), "copy", check=True).json()
        assert r["written"] == 3 * BS and r["zeroed"] == BS and r["snapshot"] is None
        with Client.connect(d.data_dir) as c:
            assert bytes(c.open("copy").read(0, SIZE)) == new
        # interop with Ceph's own reader and writer: `rbd merge-diff` (works on files, no
        # cluster) merges our s1->s2 stream with an s2->s3 one; we apply rbd's output
        if shutil.which("rbd"):
            with Client.connect(d.data_dir) as c:
                h = c.open("vol")
                h.write(5 * BS, b"\x33" * 100)
                h.zero(7 * BS, BS)
                h.flush()
                h.close()
                c.snapshot("vol", "s3")
                s3 = bytes(c.open("s3").read(0, SIZE))
            f2, merged = tmp_path / "d2", tmp_path / "merged"
            d.archip("export-diff", "vol@s3", "--from-snap", "s2", str(f2), check=True)
            p = subprocess.run(["rbd", "--no-progress", "merge-diff", str(f), str(f2),
                                str(merged)], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
            d.archip("volume", "remove", "s3", check=True)  # import-diff re-creates it
            d.archip("volume", "clone", "s1", "copy3", check=True)
            r = d.archip("--json", "import-diff", str(merged), "copy3", check=True).json()
            assert r["snapshot"] == "s3"
            with Client.connect(d.data_dir) as c:
                assert bytes(c.open("copy3").read(0, SIZE)) == s3
                assert bytes(c.open("s3").read(0, SIZE)) == s3
        # bad input: one line, no traceback
        bad = tmp_path / "bad"
        bad.write_bytes(b"rbd diff v2\n")
        r = d.archip("import-diff", str(bad), "copy")
        assert r.rc == 2 and r.err.startswith("archip: error:") and "Traceback" not in r.err
        trunc = tmp_path / "trunc"
        trunc.write_bytes(live.read_bytes()[:40])
        r = d.archip("import-diff", str(trunc), "copy")
        assert r.rc == 2 and "truncated" in r.err
    finally:
        d.stop()


def test_stream_roundtrip() -> None:
    """The writer and the reader agree; the layout is Ceph's (little-endian fields)."""
    out = io.BytesIO()
    data = bytes(range(256)) * 16
    write_diff(out, 1 << 20, [{"offset": 4096, "length": 4096, "zero": False},
                              {"offset": 65536, "length": 8192, "zero": True}],
               lambda o, n: data[:n], from_snap="a", to_snap="bb")
    raw = out.getvalue()
    assert raw.startswith(MAGIC + b"f\x01\x00\x00\x00at\x02\x00\x00\x00bb")
    assert raw.endswith(b"z" + (65536).to_bytes(8, "little") + (8192).to_bytes(8, "little") + b"e")
    recs = list(read_diff(io.BytesIO(raw)))
    assert [r.kind for r in recs] == ["f", "t", "s", "w", "z"]
    assert recs[3].data == data[:4096]


@pytest.mark.rados
def test_rbd_import_diff_interop(tmp_path: Path) -> None:
    """On the project's Ceph: archipelago's export-diff applied by `rbd import-diff` to an
    RBD image made from the same base gives `rbd export` == archipelago's content; and an
    `rbd export-diff` applied by `archip import-diff` gives RBD's content."""
    import uuid

    from conftest import RADOS_TEST_POOL, ceph_conf_or_skip

    conf = ceph_conf_or_skip()
    rados = pytest.importorskip("rados")
    rbd = pytest.importorskip("rbd")
    img = f"diff-{uuid.uuid4().hex[:12]}"
    rb = ["rbd", "-c", conf, "--pool", RADOS_TEST_POOL, "--no-progress"]

    def run(*args: str) -> None:
        p = subprocess.run([*rb, *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr

    def rbd_export(spec: str) -> bytes:
        out = tmp_path / f"export-{uuid.uuid4().hex}"
        run("export", spec, str(out))
        return out.read_bytes()

    base = tmp_path / "base.raw"
    base.write_bytes(os.urandom(SIZE))
    d = start_daemon(tmp_path / "inst", ["metrics.listen="])
    try:
        run("import", str(base), img)
        run("snap", "create", f"{img}@s1")
        d.archip("volume", "create", "vol", "--size", str(SIZE), "--block-size", "64K",
                 check=True)
        with Client.connect(d.data_dir) as c:
            h = c.open("vol")
            h.write(0, base.read_bytes())
            h.flush()
            h.close()
            c.snapshot("vol", "s1")
            h = c.open("vol")
            h.write(2 * BS + 7, b"\x44" * 3000)
            h.write(9 * BS, b"\x55" * (3 * BS))
            h.zero(14 * BS, BS)
            h.flush()
            h.close()
            c.snapshot("vol", "s2")
            ours = bytes(c.open("s2").read(0, SIZE))
        a = tmp_path / "a.diff"
        d.archip("export-diff", "vol@s2", "--from-snap", "s1", str(a), check=True)
        run("import-diff", str(a), img)  # creates img@s2
        assert rbd_export(img) == ours
        assert rbd_export(f"{img}@s2") == ours

        # the other way: RBD changes (librbd writes), rbd export-diff, archip import-diff
        with rados.Rados(conffile=conf) as cluster, cluster.open_ioctx(RADOS_TEST_POOL) as io:
            with rbd.Image(io, img) as image:
                image.write(b"\x66" * 5000, 4 * BS + 100)
                image.write(b"\x77" * BS, 11 * BS)
                image.discard(15 * BS, BS)
        run("snap", "create", f"{img}@s3")
        r_diff = tmp_path / "r.diff"
        run("export-diff", "--from-snap", "s2", f"{img}@s3", str(r_diff))
        theirs = rbd_export(f"{img}@s3")
        r = d.archip("--json", "import-diff", str(r_diff), "vol", check=True).json()
        assert r["snapshot"] == "s3"
        with Client.connect(d.data_dir) as c:
            assert bytes(c.open("vol").read(0, SIZE)) == theirs
            assert bytes(c.open("s3").read(0, SIZE)) == theirs
    finally:
        d.stop()
        subprocess.run([*rb, "snap", "purge", img], capture_output=True, timeout=120)
        subprocess.run([*rb, "rm", img], capture_output=True, timeout=120)
