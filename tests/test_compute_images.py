"""`archip image upload` against a started daemon, gateway and API server: image names and
properties with spaces, `%` and non-ASCII text come back from Plankton exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from compute_helpers import start_cloud
from daemon_helpers import Daemon

NAMES = ["Two Words", "Ubuntu 24.04 — ελληνικά"]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    """A daemon with the gateway and the API server (identity + compute)."""
    d, url = start_cloud(tmp_path_factory.mktemp("images") / "data")
    try:
        yield d, url
    finally:
        d.stop()


def test_upload_names_round_trip(cloud: tuple[Daemon, str], tmp_path: Path) -> None:
    d, url = cloud
    carol = d.archip("--json", "user", "add", "carol", check=True).json()
    tok = {"X-Auth-Token": carol["token"]}
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\x00boot" * 1000)
    prop = "Grüße, 50% ελληνικά"
    ids = {}
    for name in NAMES:
        r = d.archip("--json", "image", "upload", str(disk), "--name", name, "--user", "carol",
                     "--property", f"note={prop}")
        assert r.rc == 0, r.err
        img = r.json()
        assert img["name"] == name and img["properties"] == {"note": prop}
        ids[name] = img["id"]
    listed = requests.get(f"{url}/image/v1.0/images/detail", headers=tok, timeout=30).json()
    assert sorted((i["name"], i["properties"]["note"]) for i in listed["images"]) == sorted(
        (n, prop) for n in NAMES)
    for name, iid in ids.items():
        shown = requests.get(f"{url}/image/v1.0/images/{iid}", headers=tok, timeout=30).json()
        assert shown["image"]["name"] == name
        # The file is stored under the image's name, byte-exact.
        obj = requests.get(f"{url}/v1/{carol['account']}/images/{quote(name, safe='')}",
                           headers=tok, timeout=30)
        assert obj.content == disk.read_bytes()
