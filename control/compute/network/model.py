"""Networks and ports (NICs): records, input checks, the address plan and API shapes."""

from __future__ import annotations

import ipaddress
import secrets
import time
from dataclasses import dataclass
from typing import Any

from archipelago.errors import InvalidArgument

#: Cyclades' firewall profiles of a NIC (inbound traffic to the VM):
#: ENABLED = established/related + ssh + icmp; PROTECTED = established/related only;
#: DISABLED = everything.
ENABLED, PROTECTED, DISABLED = "ENABLED", "PROTECTED", "DISABLED"
PROFILES = (ENABLED, PROTECTED, DISABLED)
#: Smallest and largest private subnets (a /29 still leaves 5 guests beside the gateway).
MIN_PREFIX, MAX_PREFIX = 16, 29


def check_cidr(cidr: Any) -> ipaddress.IPv4Network:
    """An IPv4 subnet /16../29 given as its network address ("10.0.1.0/24")."""
    try:
        net = ipaddress.IPv4Network(str(cidr), strict=True)
    except ValueError as e:
        raise InvalidArgument(f"cidr {cidr!r} is not an IPv4 subnet: {e}") from None
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        raise InvalidArgument(f"cidr {cidr!r}: the prefix must be /{MIN_PREFIX}../{MAX_PREFIX}")
    return net


def check_profile(profile: Any) -> str:
    """ENABLED, PROTECTED or DISABLED (case-insensitive)."""
    p = str(profile).upper()
    if p not in PROFILES:
        raise InvalidArgument(f"firewall profile {profile!r}: one of {', '.join(PROFILES)}")
    return p


def check_fixed(net: Network, ip: Any, taken: set[str]) -> str:
    """A fixed address asked for on ``net``: a host of its subnet, not the gateway."""
    try:
        a = ipaddress.IPv4Address(str(ip))
    except ValueError:
        raise InvalidArgument(f"fixed_ip {ip!r} is not an IPv4 address") from None
    n = ipaddress.IPv4Network(net.cidr)
    if a not in n or a in (n.network_address, n.broadcast_address) or str(a) == net.gateway:
        raise InvalidArgument(f"fixed_ip {ip} is not a free host address of {net.cidr} "
                              f"(gateway {net.gateway})")
    if str(a) in taken:
        raise InvalidArgument(f"fixed_ip {ip} asked for twice")
    return str(a)


def new_mac() -> str:
    """A random locally administered unicast MAC (02:xx:...)."""
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


def free_address(cidr: str, gateway: str, used: set[str]) -> str:
    """The lowest host address of ``cidr`` that is neither the gateway nor used."""
    from archipelago.errors import QuotaExceeded

    for a in ipaddress.IPv4Network(cidr).hosts():
        s = str(a)
        if s != gateway and s not in used:
            return s
    raise QuotaExceeded(f"network {cidr} has no free address left")


def iso(t: float) -> str:
    """An API timestamp."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class Network:
    """A network row."""

    id: int
    name: str
    user_id: str
    cidr: str
    gateway: str
    public: bool
    created_at: float

    @property
    def bridge(self) -> str:
        """Its bridge's name in the namespace (IFNAMSIZ: 15 characters)."""
        return f"abr{self.id}"

    def to_api(self) -> dict[str, Any]:
        """The Cyclades (Neutron) network shape; the subnet is inlined and listed by id."""
        return {"id": str(self.id), "name": self.name, "status": "ACTIVE",
                "tenant_id": self.user_id, "user_id": self.user_id,
                "type": "IP_LESS_ROUTED" if self.public else "MAC_FILTERED",
                "public": self.public, "router:external": self.public, "shared": self.public,
                "admin_state_up": True, "SNF:floating_ip_pool": False,
                "subnets": [str(self.id)], "cidr": self.cidr, "gateway_ip": self.gateway,
                "created": iso(self.created_at), "updated": iso(self.created_at), "links": []}


@dataclass
class Port:
    """A port row: one NIC of a server (or of nothing yet)."""

    id: int
    network_id: int
    user_id: str
    server_id: str | None
    mac: str
    ip: str
    firewall: str
    created_at: float

    @property
    def tap(self) -> str:
        """Its tap device's name in the namespace."""
        return f"atp{self.id}"

    def to_api(self) -> dict[str, Any]:
        """The Cyclades port shape."""
        return {"id": str(self.id), "name": "", "network_id": str(self.network_id),
                "tenant_id": self.user_id, "user_id": self.user_id,
                "device_id": self.server_id or "", "device_owner": "vm" if self.server_id else "",
                "mac_address": self.mac, "status": "ACTIVE" if self.server_id else "DOWN",
                "fixed_ips": [{"subnet": str(self.network_id), "ip_address": self.ip}],
                "SNF:firewall_profile": self.firewall, "security_groups": [],
                "created": iso(self.created_at), "updated": iso(self.created_at), "links": []}
