"""Servers end to end on one daemon (nbdkit + the API server with identity and compute):
real qemu (TCG) running the test guest from images uploaded with `archip image upload`,
disks thin-cloned from the image's map, driven with the `archip` CLI.

The cloud and its images are made once for the module; guests are few and small (256 MiB).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from compute_helpers import (
    MiB,
    kill9_child,
    kill_qemus,
    owned_blocks,
    qemu_pids,
    read_volume,
    register_guest,
    start_cloud,
    wait_gateway,
    wait_nbd,
)
from daemon_helpers import ARCHIP, ROOT, Daemon, content_objects
from guest_helpers import BOOT_TIMEOUT, Console, guest_files, need_qemu

from archipelago.errors import Busy, InvalidArgument

pytest.importorskip("control.identity.plugin", reason="needs the identity plugin (issue 13)")

#: credits per hour a running VM costs (1 per second)
VM_PRICE = "3600"
pytestmark = [pytest.mark.timeout(1200), pytest.mark.nbd]
GiB = 1 << 30


@dataclass
class Cloud:
    """The daemon, its API URL, the registered images and a flavor."""

    d: Daemon
    url: str
    image: str
    kernel: str
    ramdisk: str
    marker: bytes
    disk_file: Path
    #: ids of the servers the running test created (deleted after it, pass or fail)
    created: list[str] = field(default_factory=list)

    def archip(self, *args: str, check: bool = True, timeout: float = 600):  # noqa: ANN201
        """Run the CLI on this instance."""
        return self.d.archip(*args, check=check, timeout=timeout)

    def create(self, name: str, *extra: str) -> dict:
        """`archip server create NAME --image IMG --flavor tiny ... --json`."""
        s = self.archip("--json", "server", "create", name, "--flavor", "tiny", *extra).json()
        self.created.append(s["id"])
        return s

    def cleanup(self) -> None:
        """Delete the servers of the test that are still there (a failed test leaves its
        servers running and holding quota: the next tests must not fail for that)."""
        errors = []
        if self.archip("daemon", "status", check=False).rc != 0:  # a test stopped it
            self.archip("daemon", "start", "--gateway", "--json", check=False)
            self.url = wait_gateway(self.d)
        left = {s["id"] for s in self.archip("--json", "server", "list").json()}
        for sid in self.created:
            if sid in left:
                r = self.archip("server", "delete", sid, check=False)
                if r.rc != 0:
                    errors.append(f"{sid}: {r.err}")
        self.created.clear()
        assert not errors, f"could not delete servers of the test: {errors}"

    def info(self, sid: str) -> dict:
        """`archip server info --json`."""
        return self.archip("--json", "server", "info", sid).json()

    def console(self, sid: str) -> Console:
        """The server's serial log."""
        return Console(self.d.data_dir / "vm" / sid / "console.log")

    def wait_status(self, sid: str, status: str, timeout: float = BOOT_TIMEOUT) -> dict:
        """Poll `server info` until the status (a guest powering off makes it STOPPED)."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.info(sid)
            if s["status"] == status:
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"server {sid} is {s['status']}, not {status}")
            time.sleep(0.3)

    def volumes(self) -> set[str]:
        """Every volume name."""
        return {v["name"] for v in self.archip("--json", "volume", "list").json()}

    def events(self, sid: str) -> list[str]:
        """States of compute.server.state events of a server, in order (the outbox)."""
        con = sqlite3.connect(self.d.data_dir / "control.db")
        try:
            rows = con.execute("SELECT payload FROM host_outbox WHERE type = "
                               "'compute.server.state' ORDER BY seq").fetchall()
        finally:
            con.close()
        return [p["state"] for p in (json.loads(r[0]) for r in rows) if p["server"] == sid]


#: The test user's limits: room for every guest the tests run at once (3 tiny ones).
QUOTAS = {"cyclades.vm": "8", "cyclades.cpu": "16", "cyclades.total_cpu": "16",
          "cyclades.ram": "8G", "cyclades.total_ram": "8G", "cyclades.disk": "64G"}


@pytest.fixture(scope="module")
def cloud_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    need_qemu()
    guest_files()  # built (once per machine) before a daemon is started
    base = tmp_path_factory.mktemp("cloud")
    d, url = start_cloud(base / "data")
    try:
        marker = f"ARCHIP-MARKER-{uuid.uuid4().hex[:12]}".encode()
        disk = base / "disk.raw"
        with open(disk, "wb") as f:  # 1 GiB: the marker, data in a few blocks, holes elsewhere
            f.truncate(GiB)
            f.write(marker)
            for blk in (1, 2, 100):
                f.seek(blk * 4 * MiB)
                f.write(os.urandom(MiB))
        image, kernel, ramdisk = register_guest(d, disk)
        # the default limits (2 VMs) are a new user's; this file runs up to 3 guests at once
        # (and a failed test may hold one more until its cleanup): raise the admin's limits
        admin = json.loads((d.data_dir / "admin.json").read_text())["uuid"]
        for res, limit in QUOTAS.items():
            d.archip("quota", "set", admin, res, limit, check=True)
        d.archip("billing", "prices", "set", "cyclades.vmtime", VM_PRICE, "--state", "on",
                 check=True)
        yield Cloud(d, url, image, kernel, ramdisk, marker, disk)
    finally:
        try:
            d.stop()
        finally:
            kill_qemus(d.data_dir)


@pytest.fixture
def cloud(cloud_once: Cloud) -> Iterator[Cloud]:
    """The module's cloud; the servers a test created are deleted after it, pass or fail."""
    try:
        yield cloud_once
    finally:
        cloud_once.cleanup()


def test_server_from_image_reads_marker_writes_and_copies_no_block(cloud: Cloud) -> None:
    before = content_objects(cloud.d.data_dir)
    s = cloud.create("first", "--image", cloud.image)
    assert s["status"] == "ACTIVE" and s["image"]["id"] == cloud.image
    vol = f"{s['id']}.ext.disk0"
    con = cloud.console(s["id"])
    assert con.wait("READ") == [f"vda {cloud.marker.decode()}"]
    wrote = con.wait("WROTE")[0]
    con.wait("DONE")
    cloud.wait_status(s["id"], "STOPPED")  # the guest powered off: STOPPED, not ERROR
    # the write is in the server's volume; the image's content is unchanged
    assert read_volume(cloud.d, vol, 4096, 64).rstrip(b"\0").decode().strip() == \
        f"GUEST-WROTE {wrote}"
    with open(cloud.disk_file, "rb") as f:
        f.seek(4 * MiB)
        block1 = f.read(MiB)
    assert read_volume(cloud.d, vol, 4 * MiB, MiB) == block1  # shared with the image
    # no data block was copied to make the disk: no new content block, and the volume owns
    # exactly one block, block 0, copied up by the guest's own 4 KiB write
    assert content_objects(cloud.d.data_dir) == before
    owned = owned_blocks(cloud.d.data_dir, vol)
    # (an owned block's name: <volume>+<uid>_<epoch>_<index>[.<writer gen>.<seq>])
    assert len(owned) == 1 and re.search(r"_0{16}(\.[0-9a-f]+\.[0-9a-f]+)?$", owned[0]), owned
    # the image is unchanged: a fresh clone of its map reads the original bytes at 4096
    cloud.archip("volume", "create", "--from-image", cloud.image, "image-check")
    assert read_volume(cloud.d, "image-check", 0, 8192) == cloud.marker.ljust(8192, b"\0")
    cloud.archip("volume", "remove", "image-check")
    assert cloud.events(s["id"]) == ["BUILD", "ACTIVE", "STOPPED"]
    # billing (issue 15): the run time, ACTIVE to STOPPED as the events stamp it, is charged
    # at the on price (VM_PRICE credits per hour = 1 per second: credits are its seconds)
    admin = json.loads((cloud.d.data_dir / "admin.json").read_text())["uuid"]
    at = {e["details"]["state"]: e["occurred_us"]
          for e in cloud.archip("--json", "billing", "events", admin).json()
          if e["instance"] == s["id"] and e["resource"] == "cyclades.vmtime"}
    until = datetime.now(UTC).isoformat()
    usage = cloud.archip("--json", "billing", "usage", admin, "--until", until).json()["usage"]
    on = [u for u in usage if u["instance"] == s["id"] and u.get("state") == "on"]
    run_us = at["STOPPED"] - at["ACTIVE"]
    six = Decimal("0.000001")
    assert run_us > 0 and len(on) == 1, (at, usage)
    assert Decimal(on[0]["quantity"]) == (Decimal(run_us) / 3_600_000_000).quantize(six)
    assert Decimal(on[0]["credits"]) == (Decimal(run_us) / 1_000_000).quantize(six)
    info = cloud.archip("--json", "volume", "info", vol).json()
    assert info["size"] == GiB and not info["readonly"]
    cloud.archip("server", "delete", s["id"])
    assert vol not in cloud.volumes()
    assert not (cloud.d.data_dir / "vm" / s["id"]).exists()


def test_hold_hotplug_snapshot_and_kill9_of_nbdkit_and_mapper(cloud: Cloud) -> None:
    s = cloud.create("held", "--image", cloud.image, "--kernel-args", "archip.hold=20")
    sid, vol = s["id"], f"{s['id']}.ext.disk0"
    con = cloud.console(sid)
    wrote = con.wait("WROTE")[0]
    assert con.lines("DISKS") == ["vda"]
    cloud.archip("volume", "create", "extra-disk", "--size", "64M")
    r = cloud.archip("--json", "server", "attach", sid, "extra-disk").json()
    assert r["device"] == "/dev/vdb"
    snap = cloud.archip("--json", "server", "snapshot", sid, "held-snap").json()
    assert snap["volume"] == vol
    kill9_child(cloud.d, "nbdkit")
    kill9_child(cloud.d, "mapper")
    con.wait("DONE", timeout=BOOT_TIMEOUT + 60)
    assert con.lines("DISKS")[-1].split() == ["vda", "vdb"]
    assert not con.lines("WRITE-FAILED")
    cloud.wait_status(sid, "STOPPED")
    wait_nbd(cloud.d.data_dir / "nbd.sock")
    assert read_volume(cloud.d, vol, 4096, 64).rstrip(b"\0").decode().strip() == \
        f"GUEST-WROTE {wrote}"
    # the snapshot taken while the guest ran holds its write; a server booted from it
    assert read_volume(cloud.d, "held-snap", 4096, 64).rstrip(b"\0").decode().strip() == \
        f"GUEST-WROTE {wrote}"
    s2 = cloud.create("from-snap", "--snapshot", "held-snap")
    con2 = cloud.console(s2["id"])
    assert con2.wait("READ") == [f"vda {cloud.marker.decode()}"]
    con2.wait("DONE")
    # the volume of the second server started as the snapshot: the first server's block
    # was there before its own guest overwrote it
    cloud.wait_status(s2["id"], "STOPPED")
    for x in (sid, s2["id"]):
        cloud.archip("server", "delete", x)
    assert "extra-disk" in cloud.volumes()  # attached volumes survive (not delete_on_termination)


def test_daemon_restart_readopts_running_server(cloud: Cloud) -> None:
    s = cloud.create("survivor", "--image", cloud.image, "--kernel-args", "archip.hold=30")
    sid = s["id"]
    con = cloud.console(sid)
    con.wait("WROTE")
    pids = qemu_pids(cloud.d.data_dir)
    assert len(pids) == 1
    cloud.archip("daemon", "stop")
    assert qemu_pids(cloud.d.data_dir) == pids  # the VM does not die with the daemon
    cloud.archip("daemon", "start", "--gateway", "--json")
    cloud.url = wait_gateway(cloud.d)
    wait_nbd(cloud.d.data_dir / "nbd.sock")
    assert cloud.info(sid)["status"] == "ACTIVE"
    follow = subprocess.run([*ARCHIP, "--data-dir", str(cloud.d.data_dir), "server", "console",
                             "--follow", sid], capture_output=True, timeout=BOOT_TIMEOUT + 120,
                            cwd=ROOT, stdin=subprocess.DEVNULL)
    assert follow.returncode == 0, follow.stderr
    text = follow.stdout.decode(errors="replace")
    assert "GUEST-BOOTED" in text and "GUEST-DONE" in text  # the whole log, then the rest live
    cloud.wait_status(sid, "STOPPED")
    assert cloud.events(sid)[-1] == "STOPPED"
    cloud.archip("server", "delete", sid)


def test_three_guests_at_once(cloud: Cloud) -> None:
    ids = [cloud.create(f"trio-{i}", "--image", cloud.image, "--no-wait")["id"] for i in range(3)]
    for sid in ids:
        con = cloud.console(sid)
        con.wait("DONE", timeout=BOOT_TIMEOUT * 2)
        assert con.lines("READ") == [f"vda {cloud.marker.decode()}"]
        assert len(con.lines("WROTE")) == 1
    for sid in ids:
        cloud.wait_status(sid, "STOPPED")
        cloud.archip("server", "delete", sid)


def test_bad_input_leaves_nothing_behind(cloud: Cloud) -> None:
    # compared before/after: only what bad input could have left behind counts
    vols, servers = cloud.volumes(), cloud.archip("--json", "server", "list").json()
    vm_dirs = set((cloud.d.data_dir / "vm").iterdir()) if (cloud.d.data_dir / "vm").exists() \
        else set()
    qemus = set(qemu_pids(cloud.d.data_dir))
    cases = [
        (["--image", "no-such-image"], InvalidArgument, "not found"),
        (["--image", cloud.image, "--flavor", "huge-nonexistent"], InvalidArgument, "flavor"),
        (["--image", cloud.image, "--volume-size", "512M"], InvalidArgument, "smaller"),
        (["--image", cloud.kernel], InvalidArgument, "kernel"),
        (["--snapshot", "no-such-snap"], InvalidArgument, "not found"),
    ]
    for args, err, words in cases:
        cmd = ["server", "create", "bad", *args]
        if "--flavor" not in args:
            cmd += ["--flavor", "tiny"]
        r = cloud.archip(*cmd, check=False)
        assert r.rc == err.exit_code and words in r.err, (args, r.rc, r.err)
        assert "Traceback" not in r.err
    r = cloud.archip("server", "create", "a/b", "--image", cloud.image, "--flavor", "tiny",
                     check=False)
    assert r.rc == InvalidArgument.exit_code and "slash" in r.err
    assert cloud.volumes() == vols
    assert cloud.archip("--json", "server", "list").json() == servers
    now = set((cloud.d.data_dir / "vm").iterdir()) if (cloud.d.data_dir / "vm").exists() \
        else set()
    assert now == vm_dirs and set(qemu_pids(cloud.d.data_dir)) <= qemus


def test_actions_on_wrong_states_are_conflicts(cloud: Cloud) -> None:
    s = cloud.create("stateful", "--image", cloud.image, "--kernel-args", "archip.hold=60")
    sid = s["id"]
    cloud.console(sid).wait("BOOTED")
    r = cloud.archip("server", "start", sid, check=False)
    assert r.rc == Busy.exit_code and "ACTIVE" in r.err
    r = cloud.archip("server", "resize", sid, "--flavor", "tiny", check=False)
    assert r.rc == Busy.exit_code
    st = cloud.archip("--json", "server", "stop", sid).json()  # no ACPI daemon: hard stop
    assert st["status"] == "STOPPED" and qemu_pids(cloud.d.data_dir) == []
    cloud.archip("flavor", "create", "bigger", "--vcpus", "2", "--ram", "320", "--disk", "2")
    st = cloud.archip("--json", "server", "resize", sid, "--flavor", "bigger").json()
    assert st["flavor"]["id"] == cloud.archip("--json", "flavor", "list").json()[-1]["id"]
    assert cloud.archip("--json", "volume", "info", f"{sid}.ext.disk0").json()["size"] == 2 * GiB
    assert cloud.events(sid) == ["BUILD", "ACTIVE", "STOPPED"]
    cloud.archip("server", "delete", sid)
