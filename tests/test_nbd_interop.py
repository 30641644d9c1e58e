"""Interoperability of the archipelago NBD export with real clients: qemu, nbdcopy, fio."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nbd_helpers import TEST_BLOCK, MiB, NbdServer, need, prepare

pytestmark = [pytest.mark.nbd, pytest.mark.timeout(120)]

SIZE = 16 * MiB
BIG = 1024 * MiB  # 16384 map blocks: more than one extents reply (plugin.EXTENT_BLOCKS)


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a client; fail the test with its output when it fails."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd[0]} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


def make_image(path: Path, size: int, seed: int) -> bytes:
    """A raw image with random runs separated by zero runs (so extents matter)."""
    rng = random.Random(seed)
    img = bytearray(size)
    pos = 0
    while pos < size:
        n = rng.randrange(1, 3 * TEST_BLOCK)
        if rng.random() < 0.6:
            img[pos:pos + n] = rng.randbytes(min(n, size - pos))
        pos += n + rng.randrange(0, 2 * TEST_BLOCK)
    path.write_bytes(bytes(img))
    return bytes(img)


@pytest.fixture(scope="module", params=["backend=direct", "backend=peer"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[NbdServer]:
    """Each client runs against both backends (peer: a running daemon's mapper peer)."""
    need("nbdkit")
    d = tmp_path_factory.mktemp("nbd-interop")
    prepare(d, volumes=[(n, SIZE) for n in ("qimg", "qio", "copy", "fio", "mc")]
            + [("big", BIG)], writes=[("big", BIG - 3 * TEST_BLOCK, b"e" * TEST_BLOCK)])
    peer = request.param == "backend=peer"
    if peer:
        run(sys.executable, "-m", "control", "--data-dir", str(d), "daemon", "start", "--no-nbd")
    srv = NbdServer(d, request.param, threads=16).start()
    yield srv
    srv.stop()
    if peer:
        run(sys.executable, "-m", "control", "--data-dir", str(d), "daemon", "stop")


def test_qemu_img_convert_and_compare(server: NbdServer, tmp_path: Path) -> None:
    need("qemu-img")
    src = tmp_path / "src.img"
    data = make_image(src, SIZE, seed=11)
    uri = server.uri("qimg")
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), uri)
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(src), uri)
    info = json.loads(run("qemu-img", "info", "--output=json", uri).stdout)
    assert info["virtual-size"] == SIZE
    out = tmp_path / "out.img"
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(out))
    assert out.read_bytes() == data
    mapping = json.loads(run("qemu-img", "map", "--output=json", "-f", "raw", uri).stdout)
    assert any(m["zero"] for m in mapping) and any(m["data"] for m in mapping)


def test_qemu_io_aio(server: NbdServer) -> None:
    need("qemu-io")
    uri = server.uri("qio")
    cmds = ["aio_write -P 0xab 0 1M", "aio_write -P 0xcd 1M 1M", "aio_write -P 0x11 3000k 100k",
            "aio_flush", "aio_read -P 0xab 0 1M", "aio_read -P 0xcd 1M 1M",
            "aio_read -P 0x11 3000k 100k", "aio_flush", "read -P 0 2M 512k"]
    args = ["qemu-io", "-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    p = run(*args, uri)
    assert "fail" not in (p.stdout + p.stderr).lower(), p.stdout + p.stderr


def test_nbdcopy_multi_conn(server: NbdServer, tmp_path: Path) -> None:
    need("nbdcopy")
    src = tmp_path / "src.img"
    data = make_image(src, SIZE, seed=12)
    uri = server.uri("copy")
    p = run("nbdcopy", "--verbose", "-C", "4", "-T", "4", "--flush", str(src), uri)
    assert "connections=4" in p.stderr
    out = tmp_path / "out.img"
    run("nbdcopy", "-C", "4", "-T", "4", uri, str(out))
    assert out.read_bytes() == data


def test_fio_randwrite_verify(server: NbdServer) -> None:
    need("fio")
    p = run("fio", "--name=verify", "--ioengine=nbd", f"--uri={server.uri('fio')}",
            "--rw=randwrite", "--bs=4k", "--size=8M", "--iodepth=32", "--verify=crc32c",
            "--do_verify=1", "--verify_fatal=1", "--output-format=json", timeout=90)
    job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
    assert job["error"] == 0
    assert job["write"]["io_bytes"] == 8 * MiB
    assert job["read"]["io_bytes"] == 8 * MiB  # the verify pass read everything back


def test_two_writers_flush_visible_to_third(server: NbdServer) -> None:
    a, b = server.connect("mc"), server.connect("mc")
    assert a.can_multi_conn() and b.can_multi_conn()
    a.pwrite(b"A" * (2 * TEST_BLOCK), 0)
    b.pwrite(b"B" * (2 * TEST_BLOCK), 2 * TEST_BLOCK)
    a.flush()  # one flush covers both connections' writes (multi-conn contract)
    c = server.connect("mc")
    assert c.pread(4 * TEST_BLOCK, 0) == b"A" * (2 * TEST_BLOCK) + b"B" * (2 * TEST_BLOCK)
    for h in (a, b, c):
        h.shutdown()


def test_extents_of_a_large_sparse_volume(server: NbdServer) -> None:
    need("qemu-img")
    uri = server.uri("big")
    mapping = json.loads(run("qemu-img", "map", "--output=json", "-f", "raw", uri).stdout)
    data = [(m["start"], m["length"]) for m in mapping if m["data"]]
    assert data == [(BIG - 3 * TEST_BLOCK, TEST_BLOCK)]
    assert sum(m["length"] for m in mapping) == BIG
