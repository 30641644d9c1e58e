"""Large objects through real clients: python-swiftclient's SwiftService uploads a file
larger than the gateway's maximum object size as a static large object, the swift CLI
as a dynamic one; both download byte-exact, and re-uploading stores no new block.

The maximum object size is small here (64 MiB, advertised in /info) so that a 300 MiB
file needs 5 segments; the segments are block-aligned (64 MiB = 16 blocks), so the SLO
manifest joins their maps and stores nothing itself.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from swiftclient.service import SwiftService, SwiftUploadObject

from pithos_gw.common import GatewayConfig
from tests.gw_helpers import GatewayThread, memory_blocker

MiB = 1 << 20
MAX = 64 * MiB
SIZE = 300 * MiB + 12345  # 5 segments, the last one short


@pytest.fixture
def small_gw(tmp_path: Path) -> Iterator[GatewayThread]:
    """A gateway whose objects are at most 64 MiB."""
    g = GatewayThread(memory_blocker, tmp_path / "meta.db",
                      GatewayConfig(max_file_size=MAX)).start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    """A random file larger than the maximum object size."""
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


def _options(g: GatewayThread, key: str) -> dict[str, object]:
    return {"auth": f"{g.url}/auth/v1.0", "user": "alice", "key": key, "auth_version": "1.0",
            "retries": 0, "object_uu_threads": 2, "segment_threads": 2}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_info_advertises_the_limit_and_features(small_gw: GatewayThread) -> None:
    info = requests.get(f"{small_gw.url}/info", timeout=30).json()
    assert info["swift"]["max_file_size"] == MAX
    assert {"slo", "dlo", "bulk_delete", "tempurl", "container_quotas"} <= set(info)


def test_whole_upload_over_the_limit_is_refused(small_gw: GatewayThread, tmp_path: Path) -> None:
    key = small_gw.add_user("alice")
    tok = {"X-Auth-Token": key}
    requests.put(f"{small_gw.url}/v1/alice/c", headers=tok, timeout=30)
    r = requests.put(f"{small_gw.url}/v1/alice/c/o", headers=tok, data=b"x" * (MAX + 1),
                     timeout=30)
    assert r.status_code == 413


def test_swiftservice_slo_upload(small_gw: GatewayThread, big_file: Path,
                                 tmp_path: Path) -> None:
    key = small_gw.add_user("alice")
    opts = {**_options(small_gw, key), "segment_size": MAX, "use_slo": True}
    with SwiftService(options=opts) as swift:
        for r in swift.upload("c", [SwiftUploadObject(str(big_file), object_name="big")]):
            assert r["success"], r
        blocks = small_gw.count_blocks()
        # 300 MiB of random data in 4 MiB blocks, the manifest joined them: nothing more.
        assert blocks == -(-SIZE // (4 * MiB))
        stat = next(iter(swift.stat("c", ["big"])))
        assert stat["success"] and int(stat["headers"]["content-length"]) == SIZE
        assert stat["headers"]["x-static-large-object"] == "True"
        out = tmp_path / "down.bin"
        for r in swift.download("c", ["big"], options={"out_file": str(out)}):
            assert r["success"], r
        assert _md5(out) == _md5(big_file)
        # Again (a second object name, new segments' names): no block is stored again.
        for r in swift.upload("c", [SwiftUploadObject(str(big_file), object_name="big2")]):
            assert r["success"], r
        assert small_gw.count_blocks() == blocks


def test_swift_cli_dlo_upload(small_gw: GatewayThread, big_file: Path, tmp_path: Path) -> None:
    key = small_gw.add_user("alice")
    cli = [str(Path(sys.executable).with_name("swift")), "-A", f"{small_gw.url}/auth/v1.0",
           "-U", "alice", "-K", key]

    def swift(*args: str) -> None:
        r = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])

    swift("upload", "--use-dlo", "-S", str(MAX), "--object-name", "big", "c", str(big_file))
    blocks = small_gw.count_blocks()
    assert blocks == -(-SIZE // (4 * MiB))
    head = requests.head(f"{small_gw.url}/v1/alice/c/big", headers={"X-Auth-Token": key},
                         timeout=30)
    assert head.headers["X-Object-Manifest"].startswith("c_segments/")
    assert int(head.headers["Content-Length"]) == SIZE
    out = tmp_path / "down.bin"
    swift("download", "c", "big", "-o", str(out))
    assert _md5(out) == _md5(big_file)
    swift("upload", "--use-dlo", "-S", str(MAX), "--object-name", "again", "c", str(big_file))
    assert small_gw.count_blocks() == blocks
