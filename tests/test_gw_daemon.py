"""The gateway as a child of a real daemon: blocks through the blocker peers, images
registered through Plankton, `archip volume create --from-image`, reads over the
client and over NBD (libnbd) byte-identical, zero blocks copied."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import swiftclient

from archipelago.client import Client
from archipelago.errors import Busy, NotRunning
from archipelago.hashing import BLOCK_SIZE, ZERO_HASH, block_hash, object_hashmap
from tests.daemon_helpers import Daemon, content_objects, wait_gateway_status

pytestmark = pytest.mark.timeout(120)
MiB = 1024 * 1024


@dataclass
class GwDaemon:
    """A daemon running nbdkit and the gateway child, plus one gateway user."""

    d: Daemon
    url: str
    key: str
    swift: swiftclient.Connection

    @property
    def account(self) -> str:
        """The user's account (its uuid under the identity plugin), from the v1 login."""
        return str(self.swift.get_auth()[0]).rsplit("/", 1)[1]

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.key}


@pytest.fixture(scope="module")
def gwd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GwDaemon]:
    d = Daemon(tmp_path_factory.mktemp("gwd"),
               ["blocker.file.fsync=false", "gateway.listen=127.0.0.1:0"])
    try:
        d.archip("daemon", "start", "--gateway", "--json", check=True)
        st = wait_gateway_status(d, 30.0)
        assert st["running"] is True and str(st["url"]).startswith("http://127.0.0.1:")
        assert st["blocks"] == "peers"  # run by the daemon: blocks through its peers
        assert st["run_by_daemon"] is True
        r = d.archip("gateway", "stop")  # the daemon owns it: refused, still serving
        assert r.rc == Busy.exit_code and "archip daemon stop" in r.err
        key = d.archip("gateway", "user", "add", "alice", check=True).out.strip()
        sw = swiftclient.Connection(authurl=f"{st['url']}/auth/v1.0", user="alice", key=key,
                                    retries=0, timeout=30)
        yield GwDaemon(d, str(st["url"]), key, sw)
    finally:
        d.stop()
    assert not (d.data_dir / "run" / "gateway.json").exists()


def _image_data(seed: int) -> bytes:
    """Two random blocks around a zero block, and an unaligned tail (9 MiB + 123)."""
    r = random.Random(seed)
    return r.randbytes(BLOCK_SIZE) + bytes(BLOCK_SIZE) + r.randbytes(MiB + 123)


def _upload_image(g: GwDaemon, name: str, data: bytes) -> str:
    """Upload with python-swiftclient, register as a Plankton image; returns its id."""
    g.swift.put_container("images")
    etag = g.swift.put_object("images", name, data)
    assert etag == hashlib.md5(data).hexdigest()
    r = requests.post(f"{g.url}/image/v1.0/images", timeout=30, headers={
        **g.headers, "X-Image-Meta-Name": name,
        "X-Image-Meta-Location": f"pithos://{g.account}/images/{name}"})
    assert r.status_code in (200, 201), r.text
    img = r.json()["image"]
    assert img["size"] == len(data) and img["status"] == "available"
    return str(img["id"])


def _nbd_read(d: Daemon, volume: str, size: int) -> bytes:
    nbd = pytest.importorskip("nbd", reason="python3-libnbd is not installed")
    h = nbd.NBD()
    h.set_export_name(volume)
    h.connect_unix(str(d.data_dir / "nbd.sock"))
    try:
        assert h.get_size() == size
        out = bytearray()
        step = 4 * MiB
        for off in range(0, size, step):
            out += h.pread(min(step, size - off), off)
        return bytes(out)
    finally:
        h.shutdown()


def test_uploads_land_on_the_peers_as_content_blocks(gwd: GwDaemon) -> None:
    data = _image_data(1)
    before = content_objects(gwd.d.data_dir)
    gwd.swift.put_container("c")
    gwd.swift.put_object("c", "o", data)
    hashes = requests.get(f"{gwd.url}/v1/{gwd.account}/c/o?format=json&hashmap", headers=gwd.headers,
                          timeout=30).json()["hashes"]
    assert hashes == object_hashmap(data) and hashes[1] == ZERO_HASH
    new = content_objects(gwd.d.data_dir) - before
    assert new == {hashes[0], hashes[2]}  # the zero block is never stored
    # The client library finds them on the owning blocker peer, by the shared placement rule.
    with Client.connect(gwd.d.data_dir) as c:
        assert c.read_block(hashes[0]) == data[:BLOCK_SIZE]
        assert c.read_block(hashes[2], 0, MiB + 123) == data[2 * BLOCK_SIZE:]
        assert c.missing([hashes[0], hashes[2]]) == []
        # ...and blocks stored by the client are found by the gateway.
        extra = os.urandom(BLOCK_SIZE)
        h = block_hash(extra)
        assert c.store_block(h, extra)
    doc = {"block_hash": "sha256", "block_size": BLOCK_SIZE, "bytes": BLOCK_SIZE, "hashes": [h]}
    url = f"{gwd.url}/v1/{gwd.account}/c/o2?format=json&hashmap"
    r = requests.put(url, timeout=30, headers=gwd.headers, json=doc)
    # Stored, but not by alice ([gateway] hashmap_scope = "account"): she uploads it, and
    # the gateway finds it on the peers, so nothing new is stored.
    assert r.status_code == 409 and r.json() == [h], r.text
    count = len(content_objects(gwd.d.data_dir))
    r = requests.post(f"{gwd.url}/v1/{gwd.account}/c", data=extra, timeout=30, headers={
        **gwd.headers, "Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and len(content_objects(gwd.d.data_dir)) == count
    r = requests.put(url, timeout=30, headers=gwd.headers, json=doc)
    assert r.status_code == 201, r.text
    assert gwd.swift.get_object("c", "o2")[1] == extra
    # Dedup through the peers: the same content again adds no block.
    count = len(content_objects(gwd.d.data_dir))
    gwd.swift.put_object("c", "o3", data)
    assert len(content_objects(gwd.d.data_dir)) == count


def test_hashmap_upload_through_the_peers(gwd: GwDaemon) -> None:
    r0 = random.Random(5)
    blocks = [r0.randbytes(BLOCK_SIZE), r0.randbytes(BLOCK_SIZE), r0.randbytes(MiB)]
    data = b"".join(blocks)
    ids = [block_hash(b) for b in blocks]
    url = f"{gwd.url}/v1/{gwd.account}/hm"
    assert requests.put(url, headers=gwd.headers, timeout=30).status_code in (201, 202)
    with Client.connect(gwd.d.data_dir) as c:  # one block already there, stored by a client
        assert c.store_block(ids[0], blocks[0])
    doc = {"bytes": len(data), "hashes": ids}
    r = requests.put(f"{url}/nine?hashmap&format=json", data=json.dumps(doc), timeout=30,
                     headers={**gwd.headers, "Content-Type": "application/json"})
    # Stored, but alice never had block 0 ([gateway] hashmap_scope = "account"): she
    # proves she has it by uploading it too (nothing new is stored for it).
    assert r.status_code == 409 and r.json() == ids
    for b in blocks:
        r = requests.post(f"{url}?update&format=json", data=b, timeout=30, headers={
            **gwd.headers, "Content-Type": "application/octet-stream"})
        assert r.status_code == 202
    r = requests.put(f"{url}/nine?hashmap&format=json", data=json.dumps(doc), timeout=30,
                     headers={**gwd.headers, "Content-Type": "application/json"})
    assert r.status_code == 201 and r.headers["ETag"] == hashlib.md5(data).hexdigest()
    assert ids[1] in content_objects(gwd.d.data_dir)
    assert gwd.swift.get_object("hm", "nine")[1] == data


def test_volume_from_image_is_a_thin_clone(gwd: GwDaemon) -> None:
    data = _image_data(2)
    image = _upload_image(gwd, "disk.raw", data)
    blocks = content_objects(gwd.d.data_dir)
    info = gwd.d.archip("--json", "volume", "create", "--from-image", image, "vm1",
                        check=True).json()
    # The image's size rounded up to a whole sector (NBD addresses 512-byte sectors).
    size = -(-len(data) // 512) * 512
    assert info["size"] == size and not info["readonly"]
    assert content_objects(gwd.d.data_dir) == blocks  # no block copied
    padded = data + bytes(size - len(data))
    with Client.connect(gwd.d.data_dir) as c, c.open("vm1") as v:
        assert bytes(v.read(0, size)) == padded
    assert _nbd_read(gwd.d, "vm1", size) == padded

    # Larger than the image: the rest reads as zeros, still nothing copied.
    info = gwd.d.archip("--json", "volume", "create", "--from-image", image, "--size", "16M",
                        "vm2", check=True).json()
    assert info["size"] == 16 * MiB
    assert content_objects(gwd.d.data_dir) == blocks
    assert _nbd_read(gwd.d, "vm2", 16 * MiB) == data + bytes(16 * MiB - len(data))


def test_volume_writes_diverge_from_the_image(gwd: GwDaemon) -> None:
    data = _image_data(3)
    image = _upload_image(gwd, "base.raw", data)
    gwd.d.archip("volume", "create", "--from-image", image, "vm3", check=True)
    first = block_hash(data[:BLOCK_SIZE])
    patch = b"written by the VM".ljust(4096, b"!")
    with Client.connect(gwd.d.data_dir) as c, c.open("vm3") as v:
        v.write(8192, patch, fua=True)
        assert bytes(v.read(8192, 4096)) == patch
        # The image's block is untouched on its peer, and the object reads as uploaded.
        assert c.read_block(first) == data[:BLOCK_SIZE]
    assert gwd.swift.get_object("images", "base.raw")[1] == data
    size = -(-len(data) // 512) * 512
    want = data[:8192] + patch + data[8192 + 4096:] + bytes(size - len(data))
    assert _nbd_read(gwd.d, "vm3", size) == want
    # A second clone of the same image still sees the original bytes.
    gwd.d.archip("volume", "create", "--from-image", image, "vm4", check=True)
    with Client.connect(gwd.d.data_dir) as c, c.open("vm4") as v:
        assert bytes(v.read(0, len(data))) == data


def test_from_image_errors(gwd: GwDaemon) -> None:
    r = gwd.d.archip("volume", "create", "--from-image", "no-such-image", "x")
    assert r.rc == 3 and "image 'no-such-image' not found" in r.err
    assert "Traceback" not in r.err
    image = _upload_image(gwd, "small.raw", _image_data(4))
    r = gwd.d.archip("volume", "create", "--from-image", image, "--size", "4M", "y")
    assert r.rc == 2 and "smaller than image" in r.err
    r = gwd.d.archip("volume", "create", "z")
    assert r.rc == 2 and "--size" in r.err
    names = {v["name"] for v in gwd.d.archip("--json", "volume", "list", check=True).json()}
    assert not names & {"x", "y", "z"}


def test_gateway_restarted_by_the_daemon_keeps_serving(gwd: GwDaemon) -> None:
    data = os.urandom(100_000)
    gwd.swift.put_container("r")
    gwd.swift.put_object("r", "before", data)
    pid = gwd.d.child_pid("gateway")
    os.kill(pid, 9)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = gwd.d.archip("--json", "gateway", "status")
        if st.rc == 0 and st.json()["pid"] != pid:
            break
        time.sleep(0.1)
    st = wait_gateway_status(gwd.d, 30.0)
    assert st["pid"] != pid and st["blocks"] == "peers"
    sw = swiftclient.Connection(authurl=f"{st['url']}/auth/v1.0", user="alice", key=gwd.key,
                                retries=0, timeout=30)
    assert sw.get_object("r", "before")[1] == data
    gwd.url, gwd.swift = str(st["url"]), sw


def test_standalone_gateway_opens_the_blocker_itself(tmp_path: Path) -> None:
    d = Daemon(tmp_path, ["blocker.file.fsync=false"])
    try:
        st = d.archip("--json", "gateway", "start", "--listen", "127.0.0.1:0", check=True).json()
        assert st["blocks"] == "file"  # no daemon: the direct blocker
        assert d.archip("--json", "gateway", "status", check=True).json()["blocks"] == "file"
    finally:
        d.archip("gateway", "stop")
    # Forcing the peers without a daemon fails at once, naming the command that starts it.
    p = subprocess.run([sys.executable, "-m", "pithos_gw.server", "--data-dir", str(tmp_path),
                        "--listen", "127.0.0.1:0", "--blocks", "peers"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == NotRunning.exit_code
    assert "daemon start --gateway" in p.stderr and "Traceback" not in p.stderr


def test_uploads_survive_a_blocker_peer_restart(gwd: GwDaemon) -> None:
    data = _image_data(6)
    gwd.swift.put_container("k")
    for name in ("blocker-0", "blocker-1"):
        os.kill(gwd.d.child_pid(name), 9)
    # The gateway retries while the supervisor restarts the peers.
    gwd.swift.put_object("k", "after-kill", data)
    assert gwd.swift.get_object("k", "after-kill")[1] == data
    hashes = object_hashmap(data)
    assert {hashes[0], hashes[2]} <= content_objects(gwd.d.data_dir)
    restarts = {c["name"]: c["restarts"] for c in gwd.d.status()["children"]}
    assert restarts["blocker-0"] >= 1 and restarts["blocker-1"] >= 1


def test_config_key_starts_the_gateway_with_the_daemon(tmp_path: Path) -> None:
    d = Daemon(tmp_path, ["blocker.file.fsync=false", "gateway.listen=127.0.0.1:0"])
    (tmp_path / "archipelago.toml").write_text("[gateway]\nwith_daemon = true\n")
    try:
        d.archip("daemon", "start", "--no-nbd", check=True)
        st = wait_gateway_status(d, 30.0)
        assert st["run_by_daemon"] is True and st["blocks"] == "peers"
    finally:
        d.stop()
