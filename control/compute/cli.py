"""`archip flavor list|create`, `archip server ...`, `archip image upload`.

Flavors only change the database: they run in-process. Servers need the API server (it
owns the qemu processes): those commands call /compute/v2.0 over HTTP with the instance's
admin token. `image upload` stores the file through the gateway and registers it in
Plankton in one step.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from archipelago.errors import InvalidArgument, NotFound, TimedOut
from control.compute.http import Api, api_url
from control.context import get_instance, print_json, wants_json

#: Seconds `server create` / `start` wait for the server to leave BUILD.
WAIT = 600.0


def api(args: argparse.Namespace) -> Api:
    """A client of the running API server with the admin token."""
    from control.compute.credentials import admin_token

    return Api(api_url(get_instance(args)), admin_token(args))


def _flavor_create(a: argparse.Namespace) -> int:
    from control.host.clirun import run_plugin

    f = run_plugin(a, "compute", lambda p: p.service.flavor_create(a.name, a.vcpus, a.ram, a.disk))
    if wants_json(a):
        print_json(f.to_api())
    else:
        print(f"created flavor {f.name} (id {f.id}: {f.vcpus} vcpus, {f.ram} MiB, {f.disk} GiB)")
    return 0


def _flavor_list(a: argparse.Namespace) -> int:
    from control.host.clirun import run_plugin

    fl = run_plugin(a, "compute", lambda p: p.service.flavors())
    if wants_json(a):
        print_json([f.to_api() for f in fl])
    else:
        print(f"{'ID':>4}  {'NAME':20} {'VCPUS':>5} {'RAM MiB':>8} {'DISK GiB':>8}")
        for f in fl:
            print(f"{f.id:>4}  {f.name:20} {f.vcpus:>5} {f.ram:>8} {f.disk:>8}")
    return 0


def resolve(c: Api, ref: str) -> dict[str, Any]:
    """A server by id or (unique) name."""
    q = urllib.parse.quote(ref, safe="")
    try:
        return dict(c.call("GET", f"/compute/v2.0/servers/{q}")["server"])
    except NotFound:
        pass
    found = [s for s in c.call("GET", "/compute/v2.0/servers/detail?all_tenants=1")["servers"]
             if s["name"] == ref]
    if len(found) != 1:
        raise NotFound(f"server {ref!r} not found" if not found
                       else f"{len(found)} servers are named {ref!r}: give the id")
    return dict(found[0])


def _wait(c: Api, sid: str, until: tuple[str, ...], timeout: float = WAIT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        s = dict(c.call("GET", f"/compute/v2.0/servers/{sid}")["server"])
        if s["status"] in until:
            return s
        if time.monotonic() > deadline:
            raise TimedOut(f"server {sid} is still {s['status']} after {timeout:g} s")
        time.sleep(0.3)


def _show(a: argparse.Namespace, s: dict[str, Any], verb: str = "") -> int:
    if wants_json(a):
        print_json(s)
    else:
        print(f"{verb}{' ' if verb else ''}server {s['id']} {s['name']!r}: {s.get('status', '')}")
        if s.get("fault"):
            print(f"  fault: {s['fault']['message']}")
    return 0


def _server_create(a: argparse.Namespace) -> int:
    from control.volume_fmt import parse_size

    c = api(a)
    body: dict[str, Any] = {"name": a.name, "flavorRef": a.flavor, "kernel_args": a.kernel_args}
    for key, val in (("imageRef", a.image), ("snapshotRef", a.snapshot), ("volumeRef", a.volume)):
        if val:
            body[key] = val
    if a.volume_size:
        body["volume_size"] = parse_size(a.volume_size)
    if a.user:
        body["user"] = a.user
    bdm = []
    for spec in a.blank or []:
        bdm.append({"source_type": "blank", "volume_size": int(parse_size(spec) >> 30) or 1,
                    "delete_on_termination": True})
    if bdm:
        body["block_device_mapping_v2"] = bdm
    if a.network:
        from control.compute.network.cli import network_ref

        body["networks"] = [network_ref(c, n) for n in a.network]
    s = c.call("POST", "/compute/v2.0/servers", {"server": body})["server"]
    if not a.no_wait:
        s = _wait(c, s["id"], ("ACTIVE", "ERROR", "STOPPED"))
    return _show(a, s, "created")


def _server_list(a: argparse.Namespace) -> int:
    servers = api(a).call("GET", "/compute/v2.0/servers/detail?all_tenants=1")["servers"]
    if wants_json(a):
        print_json(servers)
    else:
        print(f"{'ID':36}  {'NAME':20} {'STATUS':8} {'FLAVOR':6} USER")
        for s in servers:
            print(f"{s['id']:36}  {s['name'][:20]:20} {s['status']:8} {s['flavor']['id']:6} "
                  f"{s['user_id']}")
    return 0


def _server_info(a: argparse.Namespace) -> int:
    c = api(a)
    s = resolve(c, a.server)
    s["volumeAttachments"] = c.call("GET", f"/compute/v2.0/servers/{s['id']}/"
                                    "os-volume_attachments")["volumeAttachments"]
    s["ports"] = c.call("GET", f"/compute/v2.0/ports?device_id={s['id']}")["ports"]
    if wants_json(a):
        print_json(s)
        return 0
    _show(a, s)
    print(f"  user {s['user_id']}  flavor {s['flavor']['id']}  image "
          f"{(s['image'] or {}).get('id', '-')}  created {s['created']}")
    for d in s["volumeAttachments"]:
        print(f"  {d['device']}  {d['volumeId']}  {d['size']} bytes"
              f"{'  (deleted with the server)' if d['delete_on_termination'] else ''}")
    for p in s["ports"]:
        print(f"  nic port {p['id']}  network {p['network_id']}  {p['mac_address']}  "
              f"{p['fixed_ips'][0]['ip_address']}  firewall {p['SNF:firewall_profile']}")
    return 0


def _action(a: argparse.Namespace, body: dict[str, Any], until: tuple[str, ...],
            verb: str) -> int:
    c = api(a)
    s = resolve(c, a.server)
    c.call("POST", f"/compute/v2.0/servers/{s['id']}/action", body)
    return _show(a, _wait(c, s["id"], until), verb)


def _server_delete(a: argparse.Namespace) -> int:
    c = api(a)
    s = resolve(c, a.server)
    c.call("DELETE", f"/compute/v2.0/servers/{s['id']}")
    if wants_json(a):
        print_json({"deleted": s["id"]})
    else:
        print(f"deleted server {s['id']} {s['name']!r}")
    return 0


def _server_console(a: argparse.Namespace) -> int:
    c = api(a)
    sid = resolve(c, a.server)["id"]
    out = sys.stdout.buffer
    if a.follow:
        for chunk in c.stream(f"/compute/v2.0/servers/{sid}/console/stream"):
            out.write(chunk)
            out.flush()
    else:
        out.write(c.text(f"/compute/v2.0/servers/{sid}/console"))
    out.flush()
    return 0


def _server_attach(a: argparse.Namespace) -> int:
    c = api(a)
    sid = resolve(c, a.server)["id"]
    d = c.call("POST", f"/compute/v2.0/servers/{sid}/os-volume_attachments",
               {"volumeAttachment": {"volumeId": a.volume}})["volumeAttachment"]
    if wants_json(a):
        print_json(d)
    else:
        print(f"attached {a.volume!r} to server {sid} as {d['device']}")
    return 0


def _server_detach(a: argparse.Namespace) -> int:
    c = api(a)
    sid = resolve(c, a.server)["id"]
    c.call("DELETE", f"/compute/v2.0/servers/{sid}/os-volume_attachments/"
           f"{urllib.parse.quote(a.volume, safe='')}")
    if wants_json(a):
        print_json({"detached": a.volume, "server": sid})
    else:
        print(f"detached {a.volume!r} from server {sid}")
    return 0


def _server_snapshot(a: argparse.Namespace) -> int:
    c = api(a)
    sid = resolve(c, a.server)["id"]
    snap = c.call("POST", f"/compute/v2.0/servers/{sid}/action",
                  {"createImage": {"name": a.name}})["snapshot"]
    if wants_json(a):
        print_json(snap)
    else:
        print(f"snapshot {snap['name']!r} of volume {snap['volume']!r} (server {sid})")
    return 0


def _image_upload(a: argparse.Namespace) -> int:
    from control.compute.upload import upload

    props: dict[str, str] = {}
    for kv in a.property or []:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise InvalidArgument(f"--property {kv!r}: expected KEY=VALUE")
        props[k] = v
    path = Path(a.file)
    if not path.is_file():
        raise NotFound(f"{a.file}: no such file")
    img = upload(a, path, a.name, a.disk_format, props, a.user)
    if wants_json(a):
        print_json(img)
    else:
        print(img["id"])
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `archip flavor`, `archip server` and `archip image`."""
    p = subparsers.add_parser("flavor", help="VM flavors (vcpus, RAM, disk)")
    sub = p.add_subparsers(title="flavor commands", metavar="ACTION")
    s = sub.add_parser("list", help="list flavors")
    s.set_defaults(func=_flavor_list)
    s = sub.add_parser("create", help="create a flavor")
    s.add_argument("name")
    s.add_argument("--vcpus", type=int, required=True)
    s.add_argument("--ram", type=int, required=True, help="MiB")
    s.add_argument("--disk", type=int, default=0, help="GiB (0: the image's size)")
    s.set_defaults(func=_flavor_create)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    p = subparsers.add_parser("server", help="VMs (qemu) booted from images on volumes")
    sub = p.add_subparsers(title="server commands", metavar="ACTION")
    s = sub.add_parser("create", help="create and boot a server")
    s.add_argument("name")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="Plankton image id (thin clone of its map)")
    src.add_argument("--snapshot", help="snapshot to clone the boot disk from")
    src.add_argument("--volume", help="existing volume to boot from")
    s.add_argument("--flavor", required=True, help="flavor id or name")
    s.add_argument("--user", help="owner (administrators create servers for users)")
    s.add_argument("--volume-size", help="boot disk size (default: the flavor's, else the image's)")
    s.add_argument("--kernel-args", default="", help="extra kernel command line (-kernel boots)")
    s.add_argument("--blank", action="append", metavar="SIZE", help="extra blank volume (repeatable)")
    s.add_argument("--network", action="append", metavar="NET[=IP]",
                   help="a NIC on this network (id or name, =IP: a fixed address; "
                   "repeatable, the first is eth0)")
    s.add_argument("--no-wait", action="store_true", help="return while the server is BUILD")
    s.set_defaults(func=_server_create)
    s = sub.add_parser("list", help="list servers")
    s.set_defaults(func=_server_list)
    for name, fn, help_ in (("info", _server_info, "describe a server"),
                            ("delete", _server_delete, "delete a server")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("server")
        s.set_defaults(func=fn)
    s = sub.add_parser("start", help="boot a stopped server")
    s.add_argument("server")
    s.set_defaults(func=lambda a: _action(a, {"os-start": None}, ("ACTIVE", "ERROR"), "started"))
    s = sub.add_parser("stop", help="ACPI shutdown (hard stop after [compute] stop_timeout)")
    s.add_argument("server")
    s.set_defaults(func=lambda a: _action(a, {"os-stop": None}, ("STOPPED",), "stopped"))
    s = sub.add_parser("reboot", help="reboot (soft: shutdown + boot; --hard: reset)")
    s.add_argument("server")
    s.add_argument("--hard", action="store_true")
    s.set_defaults(func=lambda a: _action(a, {"reboot": {"type": "HARD" if a.hard else "SOFT"}},
                                          ("ACTIVE", "ERROR", "STOPPED"), "rebooted"))
    s = sub.add_parser("resize", help="change the flavor of a stopped server")
    s.add_argument("server")
    s.add_argument("--flavor", required=True)
    s.set_defaults(func=lambda a: _action(a, {"resize": {"flavorRef": a.flavor}},
                                          ("STOPPED", "ERROR"), "resized"))
    s = sub.add_parser("console", help="the serial console log")
    s.add_argument("server")
    s.add_argument("--follow", "-f", action="store_true", help="keep streaming while it runs")
    s.set_defaults(func=_server_console)
    s = sub.add_parser("attach", help="attach a volume (hot-plugged when running)")
    s.add_argument("server")
    s.add_argument("volume")
    s.set_defaults(func=_server_attach)
    s = sub.add_parser("detach", help="detach a volume")
    s.add_argument("server")
    s.add_argument("volume")
    s.set_defaults(func=_server_detach)
    s = sub.add_parser("snapshot", help="snapshot a server's boot volume (also while it runs)")
    s.add_argument("server")
    s.add_argument("name")
    s.set_defaults(func=_server_snapshot)
    from control.compute.network import cli as net_cli

    net_cli.register(subparsers, sub)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    p = subparsers.add_parser("image", help="images (Plankton) for servers")
    sub = p.add_subparsers(title="image commands", metavar="ACTION")
    s = sub.add_parser("upload", help="store a file through the gateway and register it")
    s.add_argument("file")
    s.add_argument("--name", required=True)
    s.add_argument("--disk-format", default="diskdump", choices=("aki", "ari", "diskdump", "raw"))
    s.add_argument("--property", action="append", metavar="K=V")
    s.add_argument("--user", help="owner (administrators upload for users)")
    s.set_defaults(func=_image_upload)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
