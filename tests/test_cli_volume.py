"""Every `archip volume` command against a real daemon, with --json shapes and exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import Daemon, start_daemon

from archipelago.errors import InvalidArgument
from control.volume_fmt import parse_size

pytestmark = pytest.mark.timeout(120)

INFO_KEYS = {"name", "size", "block_size", "epoch", "readonly", "parent", "created", "kind",
             "lock_owner", "lock_stale"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("vol"), ["blocker.file.fsync=false"])
    try:
        yield d
    finally:
        d.stop()


def test_create_info_list(daemon: Daemon) -> None:
    v = daemon.archip("volume", "create", "disk1", "--size", "10G", "--json", check=True).json()
    assert set(v) == INFO_KEYS
    assert (v["name"], v["size"], v["block_size"], v["kind"], v["readonly"]) == (
        "disk1", 10 << 30, 4 << 20, "volume", False)
    v = daemon.archip("volume", "create", "small", "--size", "1M", "--block-size", "64K",
                      "--json", check=True).json()
    assert v["block_size"] == 64 << 10
    i = daemon.archip("volume", "info", "disk1", "--json", check=True).json()
    assert set(i) == INFO_KEYS and i["size"] == 10 << 30 and i["lock_owner"] is None
    names = [x["name"] for x in daemon.archip("volume", "list", "--json", check=True).json()]
    assert {"disk1", "small"} <= set(names) and names == sorted(names)
    table = daemon.archip("volume", "list", check=True).out
    assert table.splitlines()[0].split()[:3] == ["NAME", "SIZE", "KIND"] and "disk1" in table
    human = daemon.archip("volume", "info", "disk1", check=True).out
    assert "10.0 GiB" in human and "name:" in human


def test_errors_are_one_line_with_stable_codes(daemon: Daemon) -> None:
    r = daemon.archip("volume", "info", "nope")
    assert r.rc == 3 and r.err.count("\n") == 1 and "not found" in r.err
    daemon.archip("volume", "create", "taken", "--size", "1M", check=True)
    r = daemon.archip("volume", "create", "taken", "--size", "1M")
    assert r.rc == 4 and "already exists" in r.err
    r = daemon.archip("volume", "create", "bad/name", "--size", "1M")
    assert r.rc == 2 and r.err.startswith("archip: error:")
    r = daemon.archip("volume", "create", "x", "--size", "ten")
    assert r.rc == 2 and "bad size" in r.err
    for size in ("-1", "10Q", "99999999999999999999T"):
        r = daemon.archip("volume", "create", "x", "--size", size)
        assert r.rc == 2 and r.err.count("\n") == 1 and "internal" not in r.err, (size, r.err)
    r = daemon.archip("volume", "create", "x", "--size", "1G", "--block-size", "3000")
    assert r.rc == 2 and "power of two" in r.err


def test_parse_size_is_exact_and_bounded() -> None:
    assert parse_size("9007199254740993") == 9007199254740993
    assert parse_size("1.5G") == 3 << 29
    assert parse_size("64KiB") == 65536
    for bad in ("-1", "10Q", "1.5", "99999999999999999999T", ""):
        with pytest.raises(InvalidArgument):
            parse_size(bad)


def test_snapshot_clone_resize_rename_hash_remove(daemon: Daemon) -> None:
    daemon.archip("volume", "create", "base", "--size", "8M", check=True)
    s = daemon.archip("volume", "snapshot", "base", "base-s1", "--json", check=True).json()
    assert (s["kind"], s["readonly"], s["parent"]) == ("snapshot", True, "base")
    c = daemon.archip("volume", "clone", "base-s1", "base-c1", "--size", "16M", "--json",
                      check=True).json()
    assert (c["kind"], c["readonly"], c["parent"], c["size"]) == ("volume", False, "base-s1",
                                                                   16 << 20)
    r = daemon.archip("volume", "clone", "base", "bad-clone")
    assert r.rc == 2 and "writable" in r.err
    assert daemon.archip("volume", "resize", "base-c1", "--size", "32M", "--json",
                         check=True).json()["size"] == 32 << 20
    assert daemon.archip("volume", "rename", "base-c1", "renamed", "--json",
                         check=True).json()["name"] == "renamed"
    assert daemon.archip("volume", "info", "base-c1").rc == 3
    h = daemon.archip("volume", "hash", "base-s1", "--json", check=True).json()
    assert h["kind"] == "hashed" and len(h["name"]) == 64 and h["readonly"]
    assert daemon.archip("volume", "remove", "renamed", "--json", check=True).json() == {
        "removed": "renamed"}
    assert daemon.archip("volume", "info", "renamed").rc == 3
    r = daemon.archip("volume", "resize", "base-s1", "--size", "1G")
    assert r.rc == 7  # read-only


def test_lock_unlock(daemon: Daemon) -> None:
    daemon.archip("volume", "create", "lk", "--size", "1M", check=True)
    assert daemon.archip("volume", "lock", "lk", "--json", check=True).json() == {"locked": "lk"}
    info = daemon.archip("volume", "info", "lk", "--json", check=True).json()
    assert info["lock_owner"].endswith(":mapper") and not info["lock_stale"]
    assert daemon.archip("volume", "unlock", "lk", "--json", check=True).json()["unlocked"] == "lk"
    assert daemon.archip("volume", "info", "lk", "--json", check=True).json()["lock_owner"] is None
    # A lock held by another owner: Locked (exit 5) until --force.
    lockdir = daemon.data_dir / "blocks" / "locks"
    (lockdir / "lock:lk").write_text("otherhost:1:mapper")
    r = daemon.archip("volume", "unlock", "lk")
    assert r.rc == 5 and "locked by otherhost:1" in r.err
    r = daemon.archip("volume", "remove", "lk")
    assert r.rc == 5
    daemon.archip("volume", "unlock", "lk", "--force", check=True)
    daemon.archip("volume", "remove", "lk", check=True)
    r = daemon.archip("volume", "unlock", "lk")  # removed: a typo, not a silent success
    assert r.rc == 3 and "not found" in r.err
    daemon.archip("volume", "unlock", "lk", "--force", check=True)  # still clears leftovers


def test_daemon_not_running_names_the_start_command(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    r = d.archip("volume", "list")
    assert r.rc == 12 and "daemon start" in r.err and str(tmp_path) in r.err
    assert r.err.count("\n") == 1
