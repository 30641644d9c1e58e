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

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from compute_helpers import kill_qemus, qemu_pids, register_guest, start_cloud, wait_gateway
from daemon_helpers import Daemon
from guest_helpers import Console, guest_files, need_qemu
from metrics_helpers import scrape, value, wait_for
from net_helpers import dnsmasq_pids, links, need_net_tools, netns_list, ns_name, scrub

from archipelago.errors import Forbidden, InvalidArgument, NotFound, QuotaExceeded
from control.compute.http import Api

pytest.importorskip("control.identity.plugin", reason="needs the identity plugin")
pytestmark = [pytest.mark.timeout(900), pytest.mark.nbd]
#: seconds targets stay up after their pings (they are deleted long before)
HOLD = 600


@dataclass
class Cloud:
    """The daemon, an administrator's API client (most calls: a CLI run costs seconds on a
    loaded machine) and the registered guest image."""

    d: Daemon
    ops: str
    token: str
    image: str
    api: Api

    def archip(self, *args: str, check: bool = True, timeout: float = 300):  # noqa: ANN201
        """Run the CLI on this instance."""
        return self.d.archip(*args, check=check, timeout=timeout)

    def call(self, method: str, path: str, body: object = None):  # noqa: ANN201
        """One /compute/v2.0 call."""
        return self.api.call(method, "/compute/v2.0" + path, body)

    def reconnect(self) -> None:
        """After a daemon restart: the API server's new URL."""
        self.api = Api(wait_gateway(self.d), self.token)

    def network(self, name: str, cidr: str, user: str | None = None) -> dict:
        """POST /networks."""
        b = {"name": name, "cidr": cidr, **({"user": user} if user else {})}
        return dict(self.call("POST", "/networks", {"network": b})["network"])

    def server(self, name: str, *nets: str, args: str = "", user: str | None = None) -> dict:
        """POST /servers (not waiting for the boot): NICs on ``nets`` ("ID" or "ID=IP")."""
        b: dict = {"name": name, "imageRef": self.image, "flavorRef": "tiny",
                   "kernel_args": args, "networks": [
                       {"uuid": n.partition("=")[0], "fixed_ip": n.partition("=")[2] or None}
                       for n in nets]}
        if user:
            b["user"] = user
        return dict(self.call("POST", "/servers", {"server": b})["server"])

    def ports(self, sid: str) -> list[dict]:
        """The server's ports."""
        return list(self.call("GET", f"/ports?device_id={sid}")["ports"])

    def console(self, sid: str) -> Console:
        """A server's serial log."""
        return Console(self.d.data_dir / "vm" / sid / "console.log")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    need_qemu()
    need_net_tools()
    guest_files()  # built (once per machine) before a daemon is started
    base = tmp_path_factory.mktemp("netcloud")
    d, url = start_cloud(base / "data")
    try:
        disk = base / "disk.raw"
        with open(disk, "wb") as f:
            f.truncate(64 << 20)
        image, _, _ = register_guest(d, disk)
        ops = d.archip("--json", "user", "add", "ops", "--admin", check=True).json()
        # ops runs three guests at once (a new user may run two)
        d.archip("quota", "set", ops["uuid"], "cyclades.vm", "4", check=True)
        yield Cloud(d, ops["uuid"], ops["token"], image, Api(url, ops["token"]))
    finally:
        try:
            d.stop()
        finally:
            kill_qemus(d.data_dir)
            scrub(d.data_dir)


def _ip(port: dict) -> str:
    return str(port["fixed_ips"][0]["ip_address"])


def _bridges(ns: str) -> list[str]:
    return sorted(x for x in links(ns) if x.startswith("abr"))


def test_bad_input_is_refused_and_makes_nothing(cloud: Cloud) -> None:
    ns = ns_name(cloud.d.data_dir)
    r = cloud.archip("network", "create", "bad", "--cidr", "10.88.0.1/24", check=False)
    assert r.rc == 2 and "not an IPv4 subnet" in r.err and "Traceback" not in r.err
    a = cloud.network("net-a", "10.88.0.0/24")
    assert a["cidr"] == "10.88.0.0/24" and a["gateway_ip"] == "10.88.0.1"
    with pytest.raises(InvalidArgument, match="overlaps 10.88.0.0/24"):
        cloud.network("net-b", "10.88.0.128/25")
    # a new user may have 2 private networks (cyclades.network.private): the third is 413
    nu = cloud.archip("--json", "user", "add", "netuser").json()
    u = nu["uuid"]
    for i in range(2):
        cloud.network(f"u-{i}", f"10.89.{i}.0/24", user=u)
    with pytest.raises(QuotaExceeded, match="cyclades.network.private"):
        cloud.network("u-2", "10.89.2.0/24", user=u)
    nets = cloud.call("GET", "/networks")["networks"]
    assert sorted(n["name"] for n in nets) == ["net-a", "u-0", "u-1"]
    # one bridge and one dnsmasq per network in the instance's namespace, none for the refused
    assert _bridges(ns) == sorted(f"abr{n['id']}" for n in nets)
    assert len(dnsmasq_pids(cloud.d.data_dir)) == 3
    # more NICs than [compute] max_nics (4): refused before anything is made
    before = cloud.call("GET", "/servers")
    # (the CLI acts as the instance's administrator: for ops, on ops' network)
    r = cloud.archip("server", "create", "many", "--image", cloud.image, "--flavor", "tiny",
                     "--user", cloud.ops, *[x for _ in range(5) for x in ("--network", "net-a")],
                     check=False)
    assert r.rc == 19 and "max_nics" in r.err and "Traceback" not in r.err, r.err
    # a fixed address outside the subnet, or the gateway's
    for ip in ("10.99.0.5", "10.88.0.1"):
        with pytest.raises(InvalidArgument, match="fixed_ip"):
            cloud.server("x", f"{a['id']}={ip}")
    assert cloud.call("GET", "/servers") == before and cloud.call("GET", "/ports")["ports"] == []
    # a public network: administrators only, seen by every user, charged to nobody, and no
    # private subnet may overlap it
    uc = Api(cloud.api.base, nu["token"])
    with pytest.raises(Forbidden):
        uc.call("POST", "/compute/v2.0/networks", {"network": {
            "name": "p", "cidr": "10.90.0.0/24", "public": True}})
    pub = cloud.call("POST", "/networks", {"network": {"name": "pub", "cidr": "10.90.0.0/24",
                                                       "public": True}})["network"]
    assert pub["public"] and pub["router:external"]
    seen = uc.call("GET", "/compute/v2.0/networks")["networks"]
    assert sorted(n["name"] for n in seen) == ["pub", "u-0", "u-1"]
    with pytest.raises(InvalidArgument, match="overlaps 10.90.0.0/24"):
        cloud.network("under-pub", "10.90.0.0/25")
    listed = cloud.archip("network", "list").out
    assert "net-a" in listed and "10.90.0.0/24" in listed and "IP_LESS_ROUTED" in listed
    for n in [*nets, pub]:
        cloud.call("DELETE", f"/networks/{n['id']}")
    with pytest.raises(NotFound):
        cloud.call("DELETE", f"/networks/{a['id']}")
    # the last network gone: no namespace, no dnsmasq; the quota was given back
    assert ns not in netns_list() and dnsmasq_pids(cloud.d.data_dir) == []
    for i in range(2):
        n = cloud.network(f"u-{i}", f"10.89.{i}.0/24", user=u)
        cloud.call("DELETE", f"/networks/{n['id']}")


def test_a_dnsmasq_that_dies_is_restarted_one_stopped_on_purpose_is_not(cloud: Cloud) -> None:
    metrics = cloud.archip("--json", "daemon", "status").json()["metrics_url"]
    restarts = value(scrape(metrics), "archipelago_dhcp_restarts_total")
    n = cloud.network("watched", "10.91.0.0/24")
    (pid,) = dnsmasq_pids(cloud.d.data_dir)
    os.kill(pid, signal.SIGKILL)
    wait_for(metrics, lambda s: value(s, "archipelago_dhcp_restarts_total") == restarts + 1,
             "the dnsmasq restart")
    (again,) = dnsmasq_pids(cloud.d.data_dir)
    assert again != pid
    # stopped by the service itself (its network deleted while another one stays): not a
    # restart; the exit's check runs under the service's lock before the next call's work
    other = cloud.network("other", "10.92.0.0/24")
    cloud.call("DELETE", f"/networks/{n['id']}")
    last = cloud.network("last", "10.93.0.0/24")
    for x in (other, last):
        cloud.call("DELETE", f"/networks/{x['id']}")
    assert dnsmasq_pids(cloud.d.data_dir) == []
    assert value(scrape(metrics), "archipelago_dhcp_restarts_total") == restarts + 1


def test_guests_dhcp_ping_isolation_firewall_restart_and_cleanup(cloud: Cloud) -> None:
    d = cloud.d
    ns = ns_name(d.data_dir)
    bob = cloud.archip("--json", "user", "add", "bob").json()["uuid"]
    # (the CLI acts as the instance's administrator: for ops, the owner of lan1 and t1, t2, p)
    lan1 = cloud.archip("--json", "network", "create", "lan1", "--cidr", "10.77.0.0/24",
                        "--user", cloud.ops).json()
    # bob's network has the same subnet: only the Ethernet isolation keeps c from t1
    lan2 = cloud.network("lan2", "10.77.0.0/24", user=bob)
    p_ip, c_ip = "10.77.0.20", "10.77.0.99"
    hold = f"archip.hold={HOLD}"

    # 1. two targets on lan1 (t2 PROTECTED), booted together; t1 pings p (not up yet) and
    #    t2 too: those first pings are noise, t1 pings again after its reboot in step 4
    t2 = cloud.server("t2", lan1["id"], args=hold)
    (t2_port,) = cloud.ports(t2["id"])
    cloud.archip("server", "firewall", t2["id"], t2_port["id"], "PROTECTED")
    t1 = cloud.server("t1", lan1["id"], args=f"archip.ping={p_ip},{_ip(t2_port)} {hold}")
    (t1_port,) = cloud.ports(t1["id"])
    ip1, ip2 = _ip(t1_port), _ip(t2_port)
    shown = cloud.call("GET", f"/servers/{t2['id']}")["server"]
    assert shown["addresses"] == {lan1["id"]: [{
        "addr": ip2, "version": 4, "OS-EXT-IPS:type": "fixed",
        "OS-EXT-IPS-MAC:mac_addr": t2_port["mac_address"]}]}
    assert shown["attachments"][0]["firewallProfile"] == "PROTECTED"
    # addresses by DHCP: what the database recorded for the port's MAC
    assert cloud.console(t2["id"]).wait("IP") == [f"{ip2}/24"]
    assert cloud.console(t1["id"]).wait("IP") == [f"{ip1}/24"]

    # 2. p on lan1 pings both targets; c on bob's lan2 pings t1's address and its gateway
    p = cloud.archip("--json", "server", "create", "p", "--image", cloud.image, "--flavor",
                     "tiny", "--user", cloud.ops, "--network", f"lan1={p_ip}", "--kernel-args",
                     f"archip.ping={ip1},{ip2} {hold}", "--no-wait").json()
    c = cloud.server("c", f"{lan2['id']}={c_ip}", args=f"archip.ping={ip1},10.77.0.1",
                     user=bob)
    assert cloud.console(p["id"]).wait("PING", 2) == [f"{ip1} ok", f"{ip2} failed"]
    assert cloud.console(c["id"]).wait("IP") == [f"{c_ip}/24"]
    assert cloud.console(c["id"]).wait("PING", 2) == [f"{ip1} failed", "10.77.0.1 failed"]
    cloud.console(t1["id"]).wait("PING", 2)  # t1's first pings are over (before its reboot)
    r = cloud.archip("network", "delete", "lan1", check=False)
    assert r.rc == 6 and "in use" in r.err, r.err

    # 3. a hot-plugged NIC: its tap exists while qemu holds it, and goes with the detach
    nic = cloud.archip("--json", "server", "attach-nic", p["id"], "lan1").json()
    assert f"atp{nic['id']}" in links(ns)
    cloud.archip("server", "detach-nic", p["id"], nic["id"])
    assert f"atp{nic['id']}" not in links(ns)

    # 4. the daemon restarts while guests run: their network stays and is re-adopted
    dhcp = sorted(dnsmasq_pids(d.data_dir))
    assert len(dhcp) == 2
    d.archip("daemon", "stop", check=True)
    assert ns in netns_list() and sorted(dnsmasq_pids(d.data_dir)) == dhcp
    d.archip("daemon", "start", "--gateway", "--json", check=True)
    cloud.reconnect()
    assert sorted(dnsmasq_pids(d.data_dir)) == dhcp
    # t2 DISABLED, t1 boots again (reset): it pings p (t1 and p pinged each other) and t2
    cloud.call("POST", f"/servers/{t2['id']}/action",
               {"firewallProfile": {"profile": "DISABLED", "nic": t2_port["id"]}})
    cloud.call("POST", f"/servers/{t1['id']}/action", {"reboot": {"type": "HARD"}})
    con = cloud.console(t1["id"])
    assert con.wait("IP", 2)[1] == f"{ip1}/24"
    assert con.wait("PING", 4)[2:] == [f"{p_ip} ok", f"{ip2} ok"]

    # 5. servers gone, networks kept: a daemon stop removes the namespace, a start rebuilds it
    for s in (t1, t2, p, c):
        cloud.call("DELETE", f"/servers/{s['id']}")
    assert [x for x in links(ns) if x.startswith("atp")] == []
    d.archip("daemon", "stop", check=True)
    assert ns not in netns_list() and dnsmasq_pids(d.data_dir) == []
    d.archip("daemon", "start", "--gateway", "--json", check=True)
    cloud.reconnect()
    assert _bridges(ns) == sorted([f"abr{lan1['id']}", f"abr{lan2['id']}"])
    assert len(dnsmasq_pids(d.data_dir)) == 2

    # 6. everything deleted and the daemon stopped: nothing left in the kernel or in ps
    for n in (lan1, lan2):
        cloud.call("DELETE", f"/networks/{n['id']}")
    d.archip("daemon", "stop", check=True)
    assert ns not in netns_list()
    assert [x for x in links() if x.startswith(("abr", "atp", "aup"))] == []
    assert dnsmasq_pids(d.data_dir) == [] and qemu_pids(d.data_dir) == []
