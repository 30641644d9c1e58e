"""The Ganeti ExtStorage provider, driven as Ganeti drives it: each script run with a
cleaned environment holding only VOL_* / EXTP_* variables; outputs and exit codes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from compute_helpers import MiB, start_nbd_daemon, upload_image, v1_account, wait_gateway
from daemon_helpers import Daemon, content_objects

from archipelago.client import Client
from archipelago.errors import InvalidArgument, NotFound
from control.compute.extstorage import ACTIONS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path, str]]:
    d = start_nbd_daemon(tmp_path_factory.mktemp("ext"), "--gateway")
    d.overrides.append("gateway.listen=127.0.0.1:0")
    try:
        url = wait_gateway(d)
        key = d.archip("gateway", "user", "add", "alice", check=True).out.strip()
        data = b"EXT-IMAGE-MARKER".ljust(4 * MiB, b"\1") + bytes(4 * MiB) + b"tail" * 1000
        image = upload_image(url, v1_account(url, "alice", key), key, "disk.raw", data)
        prov = tmp_path_factory.mktemp("srv") / "extstorage" / "archipelago"
        r = d.archip("extstorage", "install", str(prov), check=True)
        assert "installed" in r.out
        import requests

        head = requests.head(f"{url}/image/v1.0/images/{image}", headers={"X-Auth-Token": key},
                             timeout=10)
        (prov.parent / "checksum").write_text(head.headers["X-Image-Meta-Checksum"])
        yield d, prov, image
    finally:
        d.stop()


def ganeti(prov: Path, action: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run one script the way Ganeti does: a clean environment, no arguments."""
    return subprocess.run([str(prov / action)], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_install_writes_every_script(env: tuple[Daemon, Path, str]) -> None:
    _, prov, _ = env
    for a in ACTIONS:
        assert (prov / a).stat().st_mode & 0o777 == 0o755
    params = (prov / "parameters.list").read_text().splitlines()
    assert [p.split()[0] for p in params] == ["origin", "origin_size"]


def test_lifecycle_with_an_image_origin(env: tuple[Daemon, Path, str]) -> None:
    d, prov, image = env
    vol = "5f1e7c3a-1b2c-4d5e-8f90-0123456789ab.ext.disk0"
    before = content_objects(d.data_dir)
    r = ganeti(prov, "create", VOL_NAME=vol, VOL_SIZE="64", EXTP_ORIGIN=image)
    assert r.returncode == 0, r.stderr
    assert content_objects(d.data_dir) == before  # thin clone: no block copied
    with Client.connect(d.data_dir) as c:
        assert c.info(vol).size == 64 * MiB
        with c.open(vol) as v:
            assert bytes(v.read(0, 16)) == b"EXT-IMAGE-MARKER"
    for _ in range(2):  # attach is idempotent
        r = ganeti(prov, "attach", VOL_NAME=vol, VOL_SIZE="64")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.split("\n")
        assert lines[0] == ""
        assert lines[1] == f"kvm:nbd+unix:///{vol}?socket={d.data_dir / 'nbd.sock'}"
    assert ganeti(prov, "open", VOL_NAME=vol, VOL_OPEN_EXCLUSIVE="True").returncode == 0
    assert ganeti(prov, "setinfo", VOL_NAME=vol, VOL_METADATA="originstname+web1").returncode == 0
    assert ganeti(prov, "verify", VOL_NAME=vol, EXTP_ORIGIN=image).returncode == 0
    r = ganeti(prov, "grow", VOL_NAME=vol, VOL_SIZE="64", VOL_NEW_SIZE="128")
    assert r.returncode == 0, r.stderr
    r = ganeti(prov, "snapshot", VOL_NAME=vol, VOL_SNAPSHOT_NAME="snap-1", VOL_SNAPSHOT_SIZE="128")
    assert r.returncode == 0, r.stderr
    with Client.connect(d.data_dir) as c:
        assert c.info(vol).size == 128 * MiB
        assert c.info("snap-1").readonly
    # origin = the image's map by its Merkle root (Cyclades passes the mapfile)
    mapfile = (prov.parent / "checksum").read_text()
    r = ganeti(prov, "create", VOL_NAME="from-map", VOL_SIZE="16", EXTP_ORIGIN=mapfile,
               EXTP_ORIGIN_SIZE=str(8 * MiB + 4000))
    assert r.returncode == 0, r.stderr
    assert content_objects(d.data_dir) == before
    # a clone from that snapshot (origin = a snapshot name)
    r = ganeti(prov, "create", VOL_NAME="from-snap", VOL_SIZE="128", EXTP_ORIGIN="snap-1")
    assert r.returncode == 0, r.stderr
    assert ganeti(prov, "close", VOL_NAME=vol).returncode == 0
    for _ in range(2):  # detach and remove are idempotent
        assert ganeti(prov, "detach", VOL_NAME=vol).returncode == 0
    for _ in range(2):
        r = ganeti(prov, "remove", VOL_NAME=vol, VOL_SIZE="128")
        assert r.returncode == 0, r.stderr
    with Client.connect(d.data_dir) as c:
        names = {i.name for i in c.list()}
    assert vol not in names and "from-snap" in names


def test_bad_input_exit_codes(env: tuple[Daemon, Path, str]) -> None:
    d, prov, image = env
    r = ganeti(prov, "create", VOL_SIZE="64")
    assert r.returncode == InvalidArgument.exit_code and "VOL_NAME is not set" in r.stderr
    r = ganeti(prov, "create", VOL_NAME="x1", VOL_SIZE="lots")
    assert r.returncode == InvalidArgument.exit_code and "MiB" in r.stderr
    r = ganeti(prov, "create", VOL_NAME="x1", VOL_SIZE="4", EXTP_ORIGIN=image)
    assert r.returncode == InvalidArgument.exit_code and "smaller" in r.stderr
    r = ganeti(prov, "create", VOL_NAME="x1", VOL_SIZE="64", EXTP_ORIGIN="no-such-thing")
    assert r.returncode == NotFound.exit_code
    r = ganeti(prov, "attach", VOL_NAME="x1")
    assert r.returncode == NotFound.exit_code and r.stdout == ""
    r = ganeti(prov, "verify", VOL_NAME="x1", EXTP_COLOUR="blue")
    assert r.returncode == InvalidArgument.exit_code and "EXTP_COLOUR" in r.stderr
    r = ganeti(prov, "create", VOL_NAME="a/b", VOL_SIZE="4")
    assert r.returncode == InvalidArgument.exit_code
    for out in (r.stderr,):
        assert "Traceback" not in out and out.startswith("archip extstorage: error:")
    with Client.connect(d.data_dir) as c:
        assert "x1" not in {i.name for i in c.list()}
