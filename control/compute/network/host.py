"""The kernel side of networks, all inside one network namespace per instance.

Namespace ``archip-<hash of DATA_DIR>`` (two instances never share one) holds a bridge per
network (``abr<id>``, the gateway address on it), a tap per NIC (``atp<port id>``), one
dnsmasq per network bound to its bridge only, and the nftables rules (firewall.py). Nothing
is configured on the host's own interfaces, except the uplink veth of the public network
when ``[compute] public_nat`` is on.

Taps are not persistent: the daemon opens /dev/net/tun from a thread that entered the
namespace (setns), so the device is born there, and hands the descriptor to qemu
(``-netdev tap,fd=N`` or QMP ``getfd``). The tap lives exactly as long as qemu holds it.
Private files (dnsmasq's config, pid, lease and log files) are in DATA_DIR/net (0700).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import hashlib
import ipaddress
import os
import select
import signal
import struct
import threading
from pathlib import Path

from archipelago.errors import BackendUnavailable, ConfigError
from control.compute.network.firewall import ruleset
from control.compute.network.model import Network, Port

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
#: the namespace's end of the public network's uplink veth
UPLINK = "aup0"


def _wait_gone(pid: int, timeout: float) -> bool:
    """Block until process ``pid`` exits (pidfd: no polling); False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _open_tap_in(ns_path: str, name: str) -> int:
    """Open a new tap ``name`` inside the namespace at ``ns_path``; its descriptor."""
    libc = ctypes.CDLL(None, use_errno=True)
    out: list[int | BaseException] = []

    def run() -> None:
        # setns changes only this thread's namespace; the thread ends right after
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                target = os.open(ns_path, os.O_RDONLY)
                try:
                    if libc.setns(target, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                    try:
                        fd = os.open("/dev/net/tun", os.O_RDWR)
                        try:
                            fcntl.ioctl(fd, TUNSETIFF, struct.pack(
                                "16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
                        except BaseException:
                            os.close(fd)
                            raise
                        out.append(fd)
                    finally:
                        libc.setns(own, CLONE_NEWNET)
                finally:
                    os.close(target)
            finally:
                os.close(own)
        except BaseException as e:  # noqa: BLE001 -- handed to the caller
            out.append(e)

    t = threading.Thread(target=run, name=f"tap-{name}")
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise BackendUnavailable(f"cannot create tap {name}: {out[0]}")
    return out[0]


class NetHost:
    """The namespace of one instance and what it holds."""

    def __init__(self, data_dir: Path, nat: bool = False, uplink: str = "10.254.0.0/30") -> None:
        digest = hashlib.sha256(str(data_dir).encode()).hexdigest()
        self.ns = f"archip-{digest[:12]}"
        self.host_veth = f"aup{digest[:8]}"
        self.dir = data_dir / "net"
        self.nat = nat
        self.uplink = ipaddress.IPv4Network(uplink)

    @property
    def ns_path(self) -> str:
        """The namespace's bind mount (made by `ip netns add`)."""
        return f"/run/netns/{self.ns}"

    def exists(self) -> bool:
        """True while the namespace exists."""
        return os.path.exists(self.ns_path)

    async def run(self, *argv: str, stdin: bytes | None = None, ns: bool = True) -> str:
        """One command (inside the namespace unless ns=False); BackendUnavailable on failure."""
        cmd = (["ip", "netns", "exec", self.ns] if ns else []) + list(argv)
        try:
            p = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE if stdin is not None else
                asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError as e:
            raise ConfigError(f"{cmd[0]} is not installed (bash scripts/install.sh)") from e
        out, err = await p.communicate(stdin)
        if p.returncode != 0:
            raise BackendUnavailable(f"{' '.join(argv[:4])} failed: "
                                     f"{err.decode(errors='replace').strip()[-300:]}")
        return out.decode(errors="replace")

    async def ensure(self) -> None:
        """Create the namespace (or adopt the one a previous run left) and its settings."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.exists():
            await self.run("ip", "netns", "add", self.ns, ns=False)
        await self.run("ip", "link", "set", "lo", "up")
        # bridged IPv4/IPv6 through the inet hooks: conntrack for the firewall profiles
        await self.run("sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1",
                       "net.bridge.bridge-nf-call-ip6tables=1",
                       f"net.ipv4.ip_forward={1 if self.nat else 0}")

    async def links(self) -> set[str]:
        """Names of the namespace's interfaces."""
        out = await self.run("ip", "-o", "link", "show")
        return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}

    async def bridge_up(self, net: Network) -> None:
        """The network's bridge with the gateway address (kept when it is there already)."""
        if net.bridge not in await self.links():
            await self.run("ip", "link", "add", net.bridge, "type", "bridge")
            prefix = ipaddress.IPv4Network(net.cidr).prefixlen
            await self.run("ip", "addr", "add", f"{net.gateway}/{prefix}", "dev", net.bridge)
        await self.run("ip", "link", "set", net.bridge, "up")
        if net.public and self.nat:
            await self.uplink_up()

    async def bridge_down(self, net: Network) -> None:
        """Stop the network's dnsmasq and delete its bridge."""
        await asyncio.to_thread(self.dhcp_stop, net.id)
        if self.exists() and net.bridge in await self.links():
            await self.run("ip", "link", "del", net.bridge)
        for suffix in ("conf", "leases", "log", "pid"):
            (self.dir / f"dnsmasq-{net.id}.{suffix}").unlink(missing_ok=True)

    async def uplink_up(self) -> None:
        """The public network's way out: a veth to the host, default route, NAT both sides."""
        if UPLINK in await self.links():
            return
        host_ip, ns_ip = list(self.uplink.hosts())[:2]
        plen = self.uplink.prefixlen
        await self.run("ip", "link", "add", self.host_veth, "type", "veth", "peer", "name",
                       UPLINK, "netns", self.ns, ns=False)
        await self.run("ip", "addr", "add", f"{host_ip}/{plen}", "dev", self.host_veth, ns=False)
        await self.run("ip", "link", "set", self.host_veth, "up", ns=False)
        await self.run("ip", "addr", "add", f"{ns_ip}/{plen}", "dev", UPLINK)
        await self.run("ip", "link", "set", UPLINK, "up")
        await self.run("ip", "route", "replace", "default", "via", str(host_ip))
        await self.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", ns=False)
        await self.run("nft", "-f", "-", ns=False, stdin=(
            f"table ip {self.ns}\ndelete table ip {self.ns}\ntable ip {self.ns} {{\n"
            " chain post { type nat hook postrouting priority 100; policy accept;\n"
            f"  ip saddr {self.uplink} masquerade\n }}\n}}\n").encode())

    async def uplink_down(self) -> None:
        """Remove the host side of the uplink (the namespace side goes with the namespace)."""
        with contextlib.suppress(BackendUnavailable):
            await self.run("ip", "link", "del", self.host_veth, ns=False)
        with contextlib.suppress(BackendUnavailable):
            await self.run("nft", "delete", "table", "ip", self.ns, ns=False)

    # -- DHCP -----------------------------------------------------------------------------
    def _conf(self, net: Network, ports: list[Port]) -> str:
        n = ipaddress.IPv4Network(net.cidr)
        p = self.dir / f"dnsmasq-{net.id}"
        lines = ["port=0", f"interface={net.bridge}", "bind-interfaces", "except-interface=lo",
                 # static: only the MACs below get an address (the one recorded in the DB)
                 f"dhcp-range={n.network_address},static,{n.netmask},1h",
                 "dhcp-authoritative", "no-resolv", "no-hosts", "no-ping",
                 # replies broadcast on the bridge: no route lookup in the namespace, where
                 # several private networks may use the same subnet
                 "dhcp-broadcast", "dhcp-option=3", "dhcp-option=6",
                 f"dhcp-leasefile={p}.leases", f"pid-file={p}.pid", f"log-facility={p}.log",
                 "log-dhcp"]
        lines += [f"dhcp-host={x.mac},{x.ip}" for x in ports]
        return "\n".join(lines) + "\n"

    def dhcp_pid(self, nid: int) -> int | None:
        """The pid of the network's dnsmasq when it runs (checked against its cmdline)."""
        try:
            pid = int((self.dir / f"dnsmasq-{nid}.pid").read_text().strip())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.dir / f"dnsmasq-{nid}.conf").encode() in cmd else None

    def dhcp_stop(self, nid: int) -> None:
        """Stop the network's dnsmasq (blocking; waits for it to exit)."""
        pid = self.dhcp_pid(nid)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, 10):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 10)

    async def dhcp(self, net: Network, ports: list[Port]) -> None:
        """(Re)start the network's dnsmasq when its host list changed or it is not running."""
        conf = self.dir / f"dnsmasq-{net.id}.conf"
        text = self._conf(net, ports)
        if self.dhcp_pid(net.id) is not None and conf.exists() and conf.read_text() == text:
            return
        await asyncio.to_thread(self.dhcp_stop, net.id)
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        # dnsmasq forks into the background once it listens; its pid file is authoritative
        await self.run("dnsmasq", f"--conf-file={conf}")

    # -- NICs and rules -------------------------------------------------------------------
    async def open_tap(self, port: Port, net: Network) -> int:
        """A new tap for ``port`` on its network's bridge; the descriptor for qemu."""
        fd = await asyncio.to_thread(_open_tap_in, self.ns_path, port.tap)
        try:
            await self.run("ip", "link", "set", port.tap, "master", net.bridge, "up")
        except BaseException:
            os.close(fd)
            raise
        return fd

    async def firewall(self, nets: list[Network], ports: list[Port]) -> None:
        """Replace the namespace's rules (one nft transaction) for these networks and NICs."""
        text = ruleset(nets, ports, UPLINK if self.nat and any(n.public for n in nets) else None)
        await self.run("nft", "-f", "-", stdin=text.encode())

    async def teardown(self, nets: list[int]) -> None:
        """Stop every dnsmasq and delete the namespace with all it holds."""
        for nid in nets:
            await asyncio.to_thread(self.dhcp_stop, nid)
        for p in self.dir.glob("dnsmasq-*.pid"):
            nid = p.name.split("-")[1].split(".")[0]
            if nid.isdigit():
                await asyncio.to_thread(self.dhcp_stop, int(nid))
        if self.nat:
            await self.uplink_down()
        if self.exists():
            await self.run("ip", "netns", "del", self.ns, ns=False)
