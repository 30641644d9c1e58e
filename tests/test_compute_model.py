"""Unit tests of the compute plugin's pure parts: names, block device requests, quota sums."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archipelago.errors import InvalidArgument
from control.compute import quota
from control.compute.disks import CreateRequest, _bdm_entries
from control.compute.model import Disk, Flavor, Server, check_name


@pytest.mark.parametrize("name", ["web-1", "Ω server", "a" * 128, "x.y_z"])
def test_names_accepted(name: str) -> None:
    assert check_name("server", name) == name


@pytest.mark.parametrize("name", ["", "a/b", "/", "a" * 129, " lead", "trail ", "tab\there", None, 7])
def test_names_refused(name: object) -> None:
    with pytest.raises(InvalidArgument, match="server name"):
        check_name("server", name)


@given(st.text(max_size=140))
def test_name_rule_is_total(name: str) -> None:
    try:
        check_name("flavor", name)
    except InvalidArgument:
        assert not name or "/" in name or len(name) > 128 or name != name.strip() or any(
            ord(c) < 32 or ord(c) == 127 for c in name)


def test_boot_source_rules() -> None:
    assert _bdm_entries(CreateRequest("s", 1, image="i"))[0] == {
        "source_type": "image", "uuid": "i", "boot_index": 0, "_size": None}
    with pytest.raises(InvalidArgument, match="one of image, snapshot or volume"):
        _bdm_entries(CreateRequest("s", 1, image="i", snapshot="x"))
    with pytest.raises(InvalidArgument, match="exactly one boot source"):
        _bdm_entries(CreateRequest("s", 1))
    with pytest.raises(InvalidArgument, match="boot_index 0"):
        _bdm_entries(CreateRequest("s", 1, image="i", bdm=[
            {"source_type": "blank", "volume_size": 1, "boot_index": 0}]))
    got = _bdm_entries(CreateRequest("s", 1, bdm=[
        {"source_type": "blank", "volume_size": 1},
        {"source_type": "snapshot", "uuid": "snap", "boot_index": "0"}]))
    assert [e["source_type"] for e in got] == ["snapshot", "blank"]  # boot disk first
    with pytest.raises(InvalidArgument, match="must be a list"):
        _bdm_entries(CreateRequest("s", 1, image="i", bdm={"x": 1}))  # type: ignore[arg-type]


def test_quota_charges_are_bytes_and_balance() -> None:
    create = {**quota.existing(2, 512, 10 << 30), **quota.running(2, 512)}
    assert create == {quota.VM: 1, quota.TOTAL_CPU: 2, quota.TOTAL_RAM: 512 << 20,
                      quota.DISK: 10 << 30, quota.CPU: 2, quota.RAM: 512 << 20}
    gone = {**quota.existing(2, 512, 10 << 30, -1), **quota.running(2, 512, -1)}
    assert all(create[k] + gone[k] == 0 for k in create)


def test_api_shapes() -> None:
    f = Flavor(3, "tiny", 1, 256, 1)
    assert f.to_api() == {"id": "3", "name": "tiny", "vcpus": 1, "ram": 256, "disk": 1,
                          "links": []}
    s = Server("sid", "web", "u1", f, "img", "ACTIVE", "k", "r", "", "", 0.0, 0.0,
               [Disk("sid.ext.disk0", "d0", 0, 1 << 30, "image", True, True),
                Disk("extra", "d1", None, 1 << 26, "volume", False, False)])
    doc = s.to_api()
    assert doc["status"] == "ACTIVE" and doc["flavor"]["id"] == "3"
    assert doc["created"] == "1970-01-01T00:00:00Z"
    assert [v["id"] for v in doc["os-extended-volumes:volumes_attached"]] == ["sid.ext.disk0",
                                                                             "extra"]
    assert s.boot is not None and s.boot.volume == "sid.ext.disk0"
    assert s.charged_disk() == 1 << 30
    assert s.disks[1].to_api("sid")["device"] == "/dev/vdb"
    assert s.to_api(detail=False) == {"id": "sid", "name": "web", "links": []}
