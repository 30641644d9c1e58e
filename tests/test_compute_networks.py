"""Networks end to end (issue 22): a daemon with identity + compute, real qemu (TCG)
guests of tests/guest on private networks made with `archip network`, DHCP from dnsmasq
in the instance's namespace, pings between guests, firewall profiles, and nothing left
behind once networks, servers and the daemon are gone.

Ping order cannot race: the guest pings once, right after its DHCP lease (ping -c 2 -W 2,
no retry), so a pinger boots only after its targets printed GUEST-IP, and targets hold
(archip.hold) while others ping them. Addresses a guest pings before its peer exists are
fixed (`--network NET=IP`), the others come from the ports the API reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from compute_helpers import kill_qemus, qemu_pids, start_cloud, wait_gateway, wait_nbd
from daemon_helpers import Daemon
from guest_helpers import Console, guest_files, need_qemu
from net_helpers import dnsmasq_pids, links, need_net_tools, netns_list, ns_name, scrub

pytest.importorskip("control.identity.plugin", reason="needs the identity plugin")
pytestmark = [pytest.mark.timeout(900), pytest.mark.nbd]
QUOTAS = {"cyclades.vm": "8", "cyclades.cpu": "16", "cyclades.total_cpu": "16",
          "cyclades.ram": "8G", "cyclades.total_ram": "8G", "cyclades.disk": "64G",
          "cyclades.network.private": "8"}
#: seconds targets stay up after their pings (they are deleted long before)
HOLD = 600


@dataclass
class Cloud:
    """The daemon and the registered guest image."""

    d: Daemon
    image: str

    def archip(self, *args: str, check: bool = True, timeout: float = 300):  # noqa: ANN201
        """Run the CLI on this instance."""
        return self.d.archip(*args, check=check, timeout=timeout)

    def json(self, *args: str):  # noqa: ANN201
        """Run the CLI with --json; its decoded output."""
        return self.archip("--json", *args).json()

    def server(self, name: str, *nets: str, args: str = "", user: str | None = None) -> dict:
        """Create (not waiting for the boot) a guest with NICs on ``nets``."""
        extra = [a for n in nets for a in ("--network", n)]
        if user:
            extra += ["--user", user]
        return self.json("server", "create", name, "--image", self.image, "--flavor", "tiny",
                         "--kernel-args", args, "--no-wait", *extra)

    def console(self, sid: str) -> Console:
        """A server's serial log."""
        return Console(self.d.data_dir / "vm" / sid / "console.log")

    def ports(self, sid: str) -> list[dict]:
        """The server's ports as the API reports them."""
        return list(self.json("server", "info", sid)["ports"])


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    need_qemu()
    need_net_tools()
    guest = guest_files()
    base = tmp_path_factory.mktemp("netcloud")
    d, _ = start_cloud(base / "data")
    try:
        kernel = d.archip("--json", "image", "upload", str(guest.kernel), "--name", "vmlinuz",
                          "--disk-format", "aki", check=True).json()["id"]
        ramdisk = d.archip("--json", "image", "upload", str(guest.initrd), "--name", "initrd",
                           "--disk-format", "ari", check=True).json()["id"]
        disk = base / "disk.raw"
        with open(disk, "wb") as f:
            f.truncate(64 << 20)
        image = d.archip("--json", "image", "upload", str(disk), "--name", "guest-disk",
                         "--disk-format", "raw", "--property", f"kernel_id={kernel}",
                         "--property", f"ramdisk_id={ramdisk}", check=True).json()["id"]
        d.archip("flavor", "create", "tiny", "--vcpus", "1", "--ram", "256", "--disk", "1",
                 check=True)
        admin = json.loads((d.data_dir / "admin.json").read_text())["uuid"]
        for res, limit in QUOTAS.items():
            d.archip("quota", "set", admin, res, limit, check=True)
        yield Cloud(d, image)
    finally:
        try:
            d.stop()
        finally:
            kill_qemus(d.data_dir)
            scrub(d.data_dir)


def test_bad_input_is_refused_and_makes_nothing(cloud: Cloud) -> None:
    ns = ns_name(cloud.d.data_dir)
    r = cloud.archip("network", "create", "bad", "--cidr", "10.88.0.1/24", check=False)
    assert r.rc == 2 and "not an IPv4 subnet" in r.err and "Traceback" not in r.err
    a = cloud.json("network", "create", "net-a", "--cidr", "10.88.0.0/24")
    assert a["cidr"] == "10.88.0.0/24" and a["gateway_ip"] == "10.88.0.1"
    r = cloud.archip("network", "create", "net-b", "--cidr", "10.88.0.128/25", check=False)
    assert r.rc == 2 and "overlaps 10.88.0.0/24" in r.err, r.err
    # a new user may have 2 private networks (cyclades.network.private): the third is 413
    u = cloud.json("user", "add", "netuser")["uuid"]
    for i in range(2):
        cloud.archip("network", "create", f"u-{i}", "--cidr", f"10.89.{i}.0/24", "--user", u)
    r = cloud.archip("network", "create", "u-2", "--cidr", "10.89.2.0/24", "--user", u,
                     check=False)
    assert r.rc == 19 and "cyclades.network.private" in r.err, r.err
    nets = cloud.json("network", "list")
    assert sorted(n["name"] for n in nets) == ["net-a", "u-0", "u-1"]
    # one bridge per network in the instance's namespace, none for what was refused
    assert sorted(x for x in links(ns) if x.startswith("abr")) == sorted(
        f"abr{n['id']}" for n in nets)
    assert len(dnsmasq_pids(cloud.d.data_dir)) == 3
    # more NICs than [compute] max_nics (4): refused before anything is made
    before = cloud.json("server", "list")
    r = cloud.archip("server", "create", "many", "--image", cloud.image, "--flavor", "tiny",
                     *[x for _ in range(5) for x in ("--network", "net-a")], check=False)
    assert r.rc == 19 and "max_nics" in r.err, r.err
    assert cloud.json("server", "list") == before
    # a fixed address outside the subnet, or the gateway's
    for ip in ("10.99.0.5", "10.88.0.1"):
        r = cloud.archip("server", "create", "x", "--image", cloud.image, "--flavor", "tiny",
                         "--network", f"net-a={ip}", check=False)
        assert r.rc == 2 and "fixed_ip" in r.err, r.err
    assert cloud.json("server", "list") == before
    for n in nets:
        cloud.archip("network", "delete", n["id"])
    r = cloud.archip("network", "delete", "net-a", check=False)
    assert r.rc == 3 and "not found" in r.err
    # the last network gone: no namespace, no dnsmasq; the quota is given back
    assert ns not in netns_list() and dnsmasq_pids(cloud.d.data_dir) == []
    for i in range(2):
        cloud.archip("network", "create", f"u-{i}", "--cidr", f"10.89.{i}.0/24", "--user", u)
    for n in cloud.json("network", "list"):
        cloud.archip("network", "delete", n["id"])


def _ip(port: dict) -> str:
    return str(port["fixed_ips"][0]["ip_address"])


def test_guests_dhcp_ping_isolation_firewall_restart_and_cleanup(cloud: Cloud) -> None:
    d = cloud.d
    ns = ns_name(d.data_dir)
    bob = cloud.json("user", "add", "bob")["uuid"]
    lan1 = cloud.json("network", "create", "lan1", "--cidr", "10.77.0.0/24")
    # bob's network has the same subnet: only the Ethernet isolation keeps c from t1
    lan2 = cloud.json("network", "create", "lan2", "--cidr", "10.77.0.0/24", "--user", bob)
    p_ip, c_ip = "10.77.0.20", "10.77.0.99"
    hold = f"archip.hold={HOLD}"

    # 1. two targets on lan1: t2 PROTECTED; t1 pings p (not up yet) and t2 -- its first
    #    pings are noise, it pings again after its restart in step 4
    t2 = cloud.server("t2", "lan1", args=hold)
    (t2_port,) = cloud.ports(t2["id"])
    cloud.archip("server", "firewall", t2["id"], t2_port["id"], "PROTECTED")
    t1 = cloud.server("t1", "lan1", args=f"archip.ping={p_ip},{_ip(t2_port)} {hold}")
    (t1_port,) = cloud.ports(t1["id"])
    ip1, ip2 = _ip(t1_port), _ip(t2_port)
    # addresses by DHCP: what the database recorded for the port's MAC
    assert cloud.console(t2["id"]).wait("IP") == [f"{ip2}/24"]
    assert cloud.console(t1["id"]).wait("IP") == [f"{ip1}/24"]

    # 2. p on lan1 pings both targets; c on bob's lan2 pings t1's address and its gateway
    p = cloud.server("p", f"lan1={p_ip}", args=f"archip.ping={ip1},{ip2} {hold}")
    c = cloud.server("c", f"lan2={c_ip}", args=f"archip.ping={ip1},10.77.0.1", user=bob)
    assert cloud.console(p["id"]).wait("PING", 2) == [f"{ip1} ok", f"{ip2} failed"]
    assert cloud.console(c["id"]).wait("IP") == [f"{c_ip}/24"]
    assert cloud.console(c["id"]).wait("PING", 2) == [f"{ip1} failed", "10.77.0.1 failed"]
    r = cloud.archip("network", "delete", "lan1", check=False)
    assert r.rc == 6 and "in use" in r.err, r.err

    # 3. a hot-plugged NIC: its tap exists while qemu holds it, and goes with the detach
    nic = cloud.json("server", "attach-nic", p["id"], "lan1")
    assert f"atp{nic['id']}" in links(ns)
    cloud.archip("server", "detach-nic", p["id"], nic["id"])
    assert f"atp{nic['id']}" not in links(ns)

    # 4. the daemon restarts while guests run: their network stays and is re-adopted
    dhcp = sorted(dnsmasq_pids(d.data_dir))
    assert len(dhcp) == 2
    d.archip("daemon", "stop", check=True)
    assert ns in netns_list() and sorted(dnsmasq_pids(d.data_dir)) == dhcp
    d.archip("daemon", "start", "--gateway", "--json", check=True)
    wait_gateway(d)
    wait_nbd(d.data_dir / "nbd.sock")
    assert sorted(dnsmasq_pids(d.data_dir)) == dhcp
    # t2 DISABLED, t1 boots again: it pings p (so t1 and p pinged each other) and t2
    cloud.archip("server", "firewall", t2["id"], t2_port["id"], "DISABLED")
    cloud.archip("server", "stop", t1["id"])
    cloud.archip("server", "start", t1["id"])
    con = cloud.console(t1["id"])
    assert con.wait("IP", 2)[1] == f"{ip1}/24"
    assert con.wait("PING", 4)[2:] == [f"{p_ip} ok", f"{ip2} ok"]

    # 5. servers gone, networks kept: a daemon stop removes the namespace, a start rebuilds it
    for s in (t1, t2, p, c):
        cloud.archip("server", "delete", s["id"])
    assert [x for x in links(ns) if x.startswith("atp")] == []
    d.archip("daemon", "stop", check=True)
    assert ns not in netns_list() and dnsmasq_pids(d.data_dir) == []
    d.archip("daemon", "start", "--gateway", "--json", check=True)
    wait_gateway(d)
    assert sorted(x for x in links(ns) if x.startswith("abr")) == sorted(
        [f"abr{lan1['id']}", f"abr{lan2['id']}"])
    assert len(dnsmasq_pids(d.data_dir)) == 2

    # 6. everything deleted and the daemon stopped: nothing left in the kernel or in ps
    for n in (lan1, lan2):
        cloud.archip("network", "delete", n["id"])
    d.archip("daemon", "stop", check=True)
    assert ns not in netns_list()
    assert [x for x in links() if x.startswith(("abr", "atp", "aup"))] == []
    assert dnsmasq_pids(d.data_dir) == [] and qemu_pids(d.data_dir) == []
    d.archip("daemon", "start", "--gateway", "--json", check=True)  # for the fixture's stop
    wait_gateway(d)
