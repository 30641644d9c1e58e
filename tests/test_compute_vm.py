"""The VM runner (control.compute.vm) on real qemu (TCG) with the test guest over the
daemon's nbdkit: boot, write, hot-plug, hot-unplug, kill -9 of nbdkit and the mapper
peer while the guest runs, re-adoption by pid + QMP, and the accelerator probe."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from compute_helpers import MiB, kill9_child, make_volume, read_volume, start_nbd_daemon, wait_nbd
from daemon_helpers import Daemon
from guest_helpers import Console, Guest, guest_files, need_qemu

from archipelago.errors import ConfigError
from control.compute import accel
from control.compute.vm import VM, DiskSpec, VMSpec

pytestmark = [pytest.mark.timeout(600), pytest.mark.nbd]


def test_accel_settings() -> None:
    assert accel.detect("tcg") == "tcg"
    assert accel.detect("kvm") == "kvm"
    with pytest.raises(ConfigError, match="auto, kvm or tcg"):
        accel.detect("xen")


def test_accel_probe_boots_under_tcg() -> None:
    need_qemu()
    # the probe itself works: a TCG guest runs the boot sector and exits with 3
    assert accel.probe("tcg", timeout=120)
    assert accel.detect("auto", timeout=10) in ("kvm", "tcg")
    assert not accel.probe("tcg", timeout=120, qemu="/nonexistent/qemu")


def test_argv_uses_blockdev_nbd_with_reconnect(tmp_path: Path) -> None:
    vm = VM(tmp_path / "vm", "0b9f8e2c-0000-4000-8000-000000000001")
    spec = VMSpec(id=vm.id, name="web", vcpus=2, ram_mib=256, nbd_socket="/d/nbd.sock",
                  disks=[DiskSpec("d0", "vol-a", boot=True), DiskSpec("d1", "vol-b")],
                  accel="tcg", reconnect_delay=7)
    a = vm.argv(spec)
    assert "-daemonize" in a and a[a.index("-accel") + 1] == "tcg"
    bd = [a[i + 1] for i, x in enumerate(a) if x == "-blockdev"]
    assert bd[0] == ("driver=raw,node-name=d0,file.driver=nbd,file.server.type=unix,"
                     "file.server.path=/d/nbd.sock,file.export=vol-a,file.reconnect-delay=7")
    devs = [a[i + 1] for i, x in enumerate(a) if x == "-device"]
    assert devs[0].startswith("virtio-blk-pci,drive=d0,id=dev-d0") and "bootindex=0" in devs[0]
    assert "bootindex" not in devs[1]
    assert "-kernel" not in a  # no kernel: boots from the disk
    assert f"unix:{vm.qmp_path},server=on,wait=off" in a


def test_argv_server_name_is_one_qemu_value(tmp_path: Path) -> None:
    vm = VM(tmp_path / "vm", "0b9f8e2c-0000-4000-8000-000000000002")
    spec = VMSpec(id=vm.id, name="<img src=x>,process=evil,debug-threads=on", vcpus=1,
                  ram_mib=256, nbd_socket="/d/nbd.sock", disks=[DiskSpec("d0", "v", boot=True)],
                  accel="tcg", reconnect_delay=7)
    a = vm.argv(spec)
    assert a[a.index("-name") + 1] == ("guest=<img src=x>,,process=evil,,debug-threads=on,"
                                       "process=archip-vm-0b9f8e2c")


@pytest.fixture(scope="module")
def guest() -> Guest:
    return guest_files()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    need_qemu()
    d = start_nbd_daemon(tmp_path_factory.mktemp("vmd"))
    try:
        yield d
    finally:
        d.stop()


def _spec(vm: VM, d: Daemon, guest: Guest, disks: list[DiskSpec], append: str) -> VMSpec:
    return VMSpec(id=vm.id, name="t", vcpus=1, ram_mib=256,
                  nbd_socket=str(d.data_dir / "nbd.sock"), disks=disks,
                  kernel=str(guest.kernel), initrd=str(guest.initrd),
                  append=f"console=ttyS0 panic=-1 quiet {append}", accel="tcg",
                  reconnect_delay=30)


async def test_guest_survives_hotplug_and_kill9_of_nbdkit_and_mapper(
        daemon: Daemon, guest: Guest, tmp_path: Path) -> None:
    make_volume(daemon, "root", 64 * MiB, b"MARKER-ROOT")
    make_volume(daemon, "extra1", 16 * MiB, b"MARKER-X1")
    make_volume(daemon, "extra2", 16 * MiB, b"MARKER-X2")
    vm = VM(tmp_path / "i", str(uuid.uuid4()))
    con = Console(vm.console_path)
    pid = await vm.start(_spec(vm, daemon, guest, [DiskSpec("d0", "root", boot=True)],
                               "archip.hold=25"))
    try:
        assert vm.pid() == pid
        assert (vm.dir.stat().st_mode & 0o777) == 0o700
        assert (vm.console_path.stat().st_mode & 0o777) == 0o600
        assert con.wait("READ") == ["vda MARKER-ROOT"]
        wrote = con.wait("WROTE")[0]
        # hot-plug two volumes, unplug the first: the guest's last GUEST-DISKS shows vda vdc
        sock = str(daemon.data_dir / "nbd.sock")
        await vm.hotplug(DiskSpec("d1", "extra1"), sock, 30)
        await vm.hotplug(DiskSpec("d2", "extra2"), sock, 30)
        await vm.unplug("d1", timeout=120)
        names = {n["node-name"] for n in await vm.execute("query-named-block-nodes")}
        assert "d1" not in names and {"d0", "d2"} <= names
        # a second VM object on the same dir (the API server after a restart) adopts it
        again = VM(vm.dir, vm.id)
        await vm.close()
        assert await again.adopt()
        assert (await again.execute("query-status"))["status"] == "running"
        await again.close()
        kill9_child(daemon, "nbdkit")
        kill9_child(daemon, "mapper")
        assert con.wait("DONE", timeout=300) == [""]
        assert await vm.wait_exit(120)
        assert con.lines("DISKS")[-1].split() == ["vda", "vdc"]
        assert not con.lines("WRITE-FAILED")
        assert uuid.UUID(wrote)
        wait_nbd(daemon.data_dir / "nbd.sock")
        block = read_volume(daemon, "root", 4096, 4096)
        assert block.rstrip(b"\0").decode().strip() == f"GUEST-WROTE {wrote}"
        assert read_volume(daemon, "root", 0, 11) == b"MARKER-ROOT"
    finally:
        await vm.kill()
    assert not vm.running()
