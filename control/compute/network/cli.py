"""`archip network create|list|delete` and `archip server attach-nic|detach-nic|firewall`
(over the API server, like the other server commands)."""

from __future__ import annotations

import argparse
from typing import Any

from archipelago.errors import NotFound
from control.context import print_json, wants_json

BASE = "/compute/v2.0"


def _api(a: argparse.Namespace) -> Any:
    from control.compute.cli import api

    return api(a)


def network_ref(c: Any, spec: str) -> dict[str, Any]:
    """``NET`` or ``NET=IP`` (a fixed address) as a server.networks entry."""
    ref, _, ip = spec.partition("=")
    out: dict[str, Any] = {"uuid": resolve_network(c, ref)["id"]}
    if ip:
        out["fixed_ip"] = ip
    return out


def resolve_network(c: Any, ref: str) -> dict[str, Any]:
    """A network by id or (unique) name."""
    nets = c.call("GET", f"{BASE}/networks")["networks"]
    found = [n for n in nets if n["id"] == ref] or [n for n in nets if n["name"] == ref]
    if len(found) != 1:
        raise NotFound(f"network {ref!r} not found" if not found
                       else f"{len(found)} networks are named {ref!r}: give the id")
    return dict(found[0])


def _create(a: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": a.name, "cidr": a.cidr, "public": a.public}
    if a.user:
        body["user"] = a.user
    n = _api(a).call("POST", f"{BASE}/networks", {"network": body})["network"]
    if wants_json(a):
        print_json(n)
    else:
        print(f"created network {n['id']} {n['name']!r} ({n['cidr']}, gateway {n['gateway_ip']}"
              f"{', public' if n['public'] else ''})")
    return 0


def _list(a: argparse.Namespace) -> int:
    nets = _api(a).call("GET", f"{BASE}/networks")["networks"]
    if wants_json(a):
        print_json(nets)
    else:
        print(f"{'ID':>4}  {'NAME':20} {'CIDR':18} {'TYPE':14} USER")
        for n in nets:
            print(f"{n['id']:>4}  {n['name'][:20]:20} {n['cidr']:18} {n['type']:14} {n['user_id']}")
    return 0


def _delete(a: argparse.Namespace) -> int:
    c = _api(a)
    n = resolve_network(c, a.network)
    c.call("DELETE", f"{BASE}/networks/{n['id']}")
    if wants_json(a):
        print_json({"deleted": n["id"]})
    else:
        print(f"deleted network {n['id']} {n['name']!r}")
    return 0


def _attach(a: argparse.Namespace) -> int:
    from control.compute.cli import resolve

    c = _api(a)
    sid = resolve(c, a.server)["id"]
    nid = resolve_network(c, a.network)["id"]
    body = {"network_id": nid, "device_id": sid, "SNF:firewall_profile": a.firewall}
    if a.fixed_ip:
        body["fixed_ips"] = [{"ip_address": a.fixed_ip}]
    p = c.call("POST", f"{BASE}/ports", {"port": body})["port"]
    if wants_json(a):
        print_json(p)
    else:
        print(f"attached port {p['id']} ({p['mac_address']}, "
              f"{p['fixed_ips'][0]['ip_address']}) of network {nid} to server {sid}")
    return 0


def _detach(a: argparse.Namespace) -> int:
    from control.compute.cli import resolve

    c = _api(a)
    sid = resolve(c, a.server)["id"]
    p = c.call("GET", f"{BASE}/ports/{a.port}")["port"]
    if p["device_id"] != sid:
        raise NotFound(f"server {sid} has no NIC {a.port!r}")
    c.call("DELETE", f"{BASE}/ports/{a.port}")
    if wants_json(a):
        print_json({"detached": a.port, "server": sid})
    else:
        print(f"detached port {a.port} from server {sid}")
    return 0


def _firewall(a: argparse.Namespace) -> int:
    from control.compute.cli import resolve

    c = _api(a)
    sid = resolve(c, a.server)["id"]
    c.call("POST", f"{BASE}/servers/{sid}/action",
           {"firewallProfile": {"profile": a.profile, "nic": a.port}})
    p = c.call("GET", f"{BASE}/ports/{a.port}")["port"]
    if wants_json(a):
        print_json(p)
    else:
        print(f"port {a.port} of server {sid}: firewall {p['SNF:firewall_profile']}")
    return 0


def register(subparsers: argparse._SubParsersAction, server: argparse._SubParsersAction) -> None:
    """Add `archip network ...` and the NIC commands under `archip server`."""
    p = subparsers.add_parser("network", help="networks of servers (Cyclades)")
    sub = p.add_subparsers(title="network commands", metavar="ACTION")
    s = sub.add_parser("create", help="create a network (a private one charges quota)")
    s.add_argument("name")
    s.add_argument("--cidr", required=True, help="IPv4 subnet, e.g. 10.0.1.0/24")
    s.add_argument("--public", action="store_true", help="public network (administrators)")
    s.add_argument("--user", help="owner (administrators create networks for users)")
    s.set_defaults(func=_create)
    s = sub.add_parser("list", help="list networks")
    s.set_defaults(func=_list)
    s = sub.add_parser("delete", help="delete a network no NIC is on")
    s.add_argument("network")
    s.set_defaults(func=_delete)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    profiles = ("ENABLED", "PROTECTED", "DISABLED")
    s = server.add_parser("attach-nic", help="add a NIC on a network (hot-plugged if running)")
    s.add_argument("server")
    s.add_argument("network")
    s.add_argument("--firewall", default="ENABLED", choices=profiles)
    s.add_argument("--fixed-ip", help="this address (default: the lowest free one)")
    s.set_defaults(func=_attach)
    s = server.add_parser("detach-nic", help="remove a NIC (a port id)")
    s.add_argument("server")
    s.add_argument("port")
    s.set_defaults(func=_detach)
    s = server.add_parser("firewall", help="set the firewall profile of a NIC")
    s.add_argument("server")
    s.add_argument("port")
    s.add_argument("profile", choices=profiles)
    s.set_defaults(func=_firewall)
