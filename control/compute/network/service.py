"""Networks and ports for the API and for servers: checks first (nothing half-made), quota
``cyclades.network.private`` through identity, then the database, then the namespace.

A private network belongs to one user; its subnet must not overlap that user's other
networks or a public one (users' private networks are isolated Ethernets, so two users
may pick the same subnet, as on Cyclades). Public networks are made by administrators and
any user may put a NIC on them. A port is a NIC of one server, with a fixed address
handed out by the network's dnsmasq to the port's MAC only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from typing import Any

from archipelago.errors import (
    AlreadyExists,
    ArchipelagoError,
    Busy,
    Forbidden,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
)
from archipelago.metrics import DHCP_RESTARTS
from control.compute import quota
from control.compute.model import ACTIVE, check_name
from control.compute.network import store
from control.compute.network.dhcp_watch import DhcpWatch
from control.compute.network.host import NetHost
from control.compute.network.model import (
    ENABLED,
    Network,
    Port,
    check_cidr,
    check_fixed,
    check_profile,
    free_address,
    new_mac,
)

log = logging.getLogger("control.compute")
#: Seconds between two restarts of one network's dnsmasq.
RESTART_GAP = 5.0


class NetworkService:
    """The networks of one compute service (``svc``: ComputeService)."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc
        cfg = svc.cfg
        self.host = NetHost(svc.ctx.instance.data_dir, cfg.public_nat, cfg.public_uplink)
        self._lock = asyncio.Lock()
        self.dhcp_watch = DhcpWatch(self._dhcp_exited)
        self._restarted: dict[int, float] = {}  # network id -> monotonic time of its last

    @property
    def db(self) -> Any:
        """The control database."""
        return self.svc.ctx.db

    # -- networks -------------------------------------------------------------------------
    async def list(self, caller: Any) -> list[Network]:
        """The caller's networks and the public ones (every network for an admin)."""
        async with self.db.read() as conn:
            return await store.network_list(conn, None if caller.is_admin else caller.uuid)

    async def get(self, caller: Any, nid: Any) -> Network:
        """A network the caller may see (NotFound otherwise)."""
        async with self.db.read() as conn:
            n = await store.network_get(conn, nid)
        if not (caller.is_admin or n.public or n.user_id == caller.uuid):
            raise NotFound(f"network {nid!r} not found")
        return n

    async def create(self, caller: Any, name: Any, cidr: Any, public: bool = False,
                     user: str | None = None) -> Network:
        """A new network with its bridge and DHCP server (private ones charge quota)."""
        check_name("network", name)
        net = check_cidr(cidr)
        if public and not caller.is_admin:
            raise Forbidden("only an administrator creates a public network")
        owner = await self.svc.owner_of(caller, user)
        async with self.db.read() as conn:
            others = await store.network_list(conn, None if public else owner)
        for o in others:
            if ipaddress.IPv4Network(o.cidr).overlaps(net):
                raise InvalidArgument(f"subnet {net} overlaps {o.cidr} of network {o.id} "
                                      f"({o.name!r})")
        gateway = str(next(net.hosts()))
        charge = {} if public else {quota.NETWORK: 1}
        async with self._lock, self.svc.quotas.charge(owner, charge,
                                                      f"compute network-create {owner} {net}"):
            async with self.db.begin() as conn:
                n = await store.network_insert(conn, name, owner, str(net), gateway, public)
            try:
                await self._apply([n.id])
            except BaseException:
                with contextlib.suppress(ArchipelagoError):
                    await self.host.bridge_down(n)
                async with self.db.begin() as conn:
                    await store.network_delete(conn, n.id)
                await self._apply([])
                raise
        return n

    async def delete(self, caller: Any, nid: Any) -> None:
        """Delete an unused network: its dnsmasq and bridge, then the namespace if it was
        the last one; Busy while NICs are on it."""
        n = await self.get(caller, nid)
        if n.public and not caller.is_admin:
            raise Forbidden("only an administrator deletes a public network")
        async with self._lock:
            async with self.db.begin() as conn:
                used = await store.port_list(conn, network=n.id)
                if used:
                    raise Busy(f"network {n.id} ({n.name!r}) is in use by "
                               f"{len(used)} port(s) of server(s) "
                               f"{', '.join(sorted({p.server_id or '-' for p in used}))}")
                await store.network_delete(conn, n.id)
            await self.host.bridge_down(n)
            if not n.public:
                await self.svc.quotas.release(n.user_id, {quota.NETWORK: -1},
                                              f"compute network-delete {n.user_id} {n.id}")
            await self._apply([])

    async def happened(self, action: str, args: list[str]) -> bool:
        """Did the network change of a commission a crash left pending happen?
        (``network-create OWNER CIDR``: a network of that subnet exists, the subnet being
        unique per owner; ``network-delete OWNER ID``: it is gone.)"""
        async with self.db.read() as conn:
            nets = await store.network_list(conn)
        if action == "network-create" and len(args) == 2:
            return any(n.user_id == args[0] and n.cidr == args[1] for n in nets)
        if action == "network-delete" and len(args) == 2:
            return all(str(n.id) != args[1] for n in nets)
        return False

    # -- ports ----------------------------------------------------------------------------
    async def plan(self, caller: Any, owner: str, refs: list[Any],
                   have: int = 0) -> list[tuple[Network, str | None]]:
        """The networks (and asked-for fixed addresses) a server of ``owner`` gets NICs on,
        checked, the NIC limit included. A ref is a network id or {"uuid", "fixed_ip"}."""
        out: list[tuple[Network, str | None]] = []
        for ref in refs:
            nid, ip = (ref.get("uuid"), ref.get("fixed_ip")) if isinstance(ref, dict) else (ref, None)
            n = await self.get(caller, nid)
            if not (n.public or n.user_id == owner):
                raise NotFound(f"network {nid!r} not found")
            if ip is not None:
                ip = check_fixed(n, ip, {x for m, x in out if m.id == n.id})
            out.append((n, ip))
        if have + len(out) > self.svc.cfg.max_nics:
            raise QuotaExceeded(f"a server has at most {self.svc.cfg.max_nics} NICs "
                                f"([compute] max_nics); asked for {have + len(out)}")
        return out

    async def insert_ports(self, conn: Any, sid: str, owner: str,
                           plan: list[tuple[Network, str | None]],
                           firewall: str = ENABLED) -> list[Port]:
        """Port rows for a server (inside the caller's transaction): MAC and address."""
        out = []
        for n, ip in plan:
            used = {p.ip for p in await store.port_list(conn, network=n.id)}
            if ip is not None and ip in used:
                raise AlreadyExists(f"address {ip} of network {n.id} is taken")
            out.append(await store.port_insert(conn, n.id, owner, sid, new_mac(),
                                               ip or free_address(n.cidr, n.gateway, used),
                                               firewall))
        return out

    async def addresses(self, sids: list[str]) -> dict[str, dict[str, Any]]:
        """Per server (already checked visible): Cyclades' ``addresses`` (by network) and
        ``attachments`` (one per NIC, with its firewall profile)."""
        want = set(sids)
        async with self.db.read() as conn:
            ports = [p for p in await store.port_list(conn) if p.server_id in want]
        out: dict[str, dict[str, Any]] = {}
        for p in ports:
            d = out.setdefault(str(p.server_id), {"addresses": {}, "attachments": []})
            d["addresses"].setdefault(str(p.network_id), []).append(
                {"addr": p.ip, "version": 4, "OS-EXT-IPS:type": "fixed",
                 "OS-EXT-IPS-MAC:mac_addr": p.mac})
            d["attachments"].append({"id": str(p.id), "network_id": str(p.network_id),
                                     "mac_address": p.mac, "ipv4": p.ip, "ipv6": "",
                                     "firewallProfile": p.firewall})
        return out

    async def ports(self, caller: Any, server: str | None = None) -> list[Port]:
        """Ports the caller may see (of one server)."""
        async with self.db.read() as conn:
            return await store.port_list(conn, server=server,
                                         user=None if caller.is_admin else caller.uuid)

    async def port(self, caller: Any, pid: Any) -> Port:
        """A port the caller may see."""
        async with self.db.read() as conn:
            p = await store.port_get(conn, pid)
        if not (caller.is_admin or p.user_id == caller.uuid):
            raise NotFound(f"port {pid!r} not found")
        return p

    async def port_create(self, caller: Any, network: Any, server: Any,
                          firewall: Any = ENABLED, fixed_ip: str | None = None) -> Port:
        """A NIC on ``network`` for ``server`` (hot-plugged when it runs)."""
        from control.compute.network import plug

        profile = check_profile(firewall)
        if not server:
            raise InvalidArgument("port.device_id (the server) is required")
        s = await self.svc.get(caller, str(server))
        async with self.svc.lock(s.id):
            s = await self.svc.get(caller, s.id)
            have = len(await self.ports(caller, s.id))
            ((n, ip),) = await self.plan(caller, s.user_id,
                                         [{"uuid": network, "fixed_ip": fixed_ip}], have)
            async with self._lock:
                async with self.db.begin() as conn:
                    (p,) = await self.insert_ports(conn, s.id, s.user_id, [(n, ip)], profile)
                try:
                    await self._apply([n.id])
                    if s.status == ACTIVE and self.svc.runtime.running(s.id):
                        await plug.hotplug(self, s.id, p, n)
                except BaseException:
                    async with self.db.begin() as conn:
                        await store.port_delete(conn, p.id)
                    with contextlib.suppress(ArchipelagoError):
                        await self._apply([n.id])
                    raise
        return p

    async def port_delete(self, caller: Any, pid: Any) -> None:
        """Remove a NIC (unplugged from the running guest first)."""
        from control.compute.network import plug

        p = await self.port(caller, pid)
        sid = p.server_id
        async with contextlib.AsyncExitStack() as st:
            if sid:
                await st.enter_async_context(self.svc.lock(sid))
                if self.svc.runtime.running(sid):
                    await plug.unplug(self, sid, p, self.svc.cfg.stop_timeout)
            async with self._lock:
                async with self.db.begin() as conn:
                    await store.port_delete(conn, p.id)
                await self._apply([p.network_id])

    async def set_firewall(self, caller: Any, sid: str, pid: Any, profile: Any) -> Port:
        """Change a NIC's firewall profile (applied at once)."""
        prof = check_profile(profile)
        s = await self.svc.get(caller, sid)
        p = await self.port(caller, pid)
        if p.server_id != s.id:
            raise NotFound(f"server {s.id} has no NIC {pid!r}")
        async with self._lock:
            async with self.db.begin() as conn:
                await store.port_set(conn, p.id, firewall=prof)
            await self._apply([])
        p.firewall = prof
        return p

    async def changed(self, nets: list[int]) -> None:
        """Ports of these networks changed in the database: DHCP hosts and rules follow."""
        async with self._lock:
            await self._apply(nets)

    async def server_gone(self, sid: str) -> None:
        """A server was deleted: drop its ports (its qemu and so its taps are gone)."""
        async with self._lock:
            async with self.db.begin() as conn:
                ports = await store.port_list(conn, server=sid)
                for p in ports:
                    await store.port_delete(conn, p.id)
            if ports:
                await self._apply(sorted({p.network_id for p in ports}))

    # -- the namespace ----------------------------------------------------------------------
    async def _apply(self, changed: list[int]) -> None:
        """Make the namespace match the database: bridges and dnsmasq of ``changed``
        networks, every rule; no network left: no namespace."""
        async with self.db.read() as conn:
            nets = await store.network_list(conn)
            ports = await store.port_list(conn)
        if not nets:
            self.dhcp_watch.track({})
            await self.host.teardown([])
            return
        await self.host.ensure()
        for n in nets:
            if n.id in changed or self.host.dhcp_pid(n.id) is None:
                await self.host.bridge_up(n)
                await self.host.dhcp(n, [p for p in ports if p.network_id == n.id])
        self.dhcp_watch.track({n.id: self.host.dhcp_pid(n.id) for n in nets})
        await self.host.firewall(nets, ports)

    async def _dhcp_exited(self, nid: int) -> None:
        """A watched dnsmasq exited: restart it unless the service stopped it on purpose
        (its network is gone, or a new dnsmasq already serves it)."""
        async with self._lock:
            if not await self._dhcp_missing(nid):
                return
        gap = time.monotonic() - self._restarted.get(nid, -RESTART_GAP)
        if gap < RESTART_GAP:  # a dnsmasq that dies at once must not restart in a tight loop
            await asyncio.sleep(RESTART_GAP - gap)
        async with self._lock:
            if await self._dhcp_missing(nid):
                self._restarted[nid] = time.monotonic()
                DHCP_RESTARTS.inc()
                log.warning("the dnsmasq of network %d exited: restarting it", nid)
                await self._apply([])

    async def _dhcp_missing(self, nid: int) -> bool:
        """Network ``nid`` exists and no dnsmasq serves it (call under the lock)."""
        async with self.db.read() as conn:
            ids = {n.id for n in await store.network_list(conn)}
        return nid in ids and self.host.dhcp_pid(nid) is None

    async def restore(self) -> None:
        """Start of the API server: re-adopt (or rebuild) the namespace, bridges, dnsmasq."""
        async with self._lock:
            async with self.db.read() as conn:
                ids = [n.id for n in await store.network_list(conn)]
            if ids or self.host.exists():
                await self._apply(ids)

    async def close(self) -> None:
        """Daemon stop: remove everything unless a server with NICs still runs (its network
        then stays, and the next start re-adopts it)."""
        await self.dhcp_watch.close()
        async with self._lock:
            async with self.db.read() as conn:
                ports = await store.port_list(conn)
                nets = [n.id for n in await store.network_list(conn)]
            if any(p.server_id and self.svc.runtime.running(p.server_id) for p in ports):
                log.info("servers with NICs still run: their network namespace stays")
                return
            await self.host.teardown(nets)

    async def nics(self, s: Any) -> list[Any]:
        """Taps for the NICs of server ``s`` about to boot (descriptors for qemu)."""
        from control.compute.vm import NicSpec

        async with self.db.read() as conn:
            ports = await store.port_list(conn, server=s.id)
            nets = {n.id: n for n in await store.network_list(conn)}
        if not ports:
            return []
        out: list[NicSpec] = []
        async with self._lock:
            # a missing namespace (or a dnsmasq not restarted yet) comes back here
            await self._apply([] if self.host.exists() else list(nets))
            try:
                for p in ports:
                    out.append(NicSpec(p.id, p.mac, await self.host.open_tap(p, nets[p.network_id])))
            except BaseException:
                for n in out:
                    NicSpec.close(n)
                raise
        return out

