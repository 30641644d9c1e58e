"""Database access of networks and ports (SQLAlchemy Core)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from archipelago.errors import NotFound
from control.compute.network.model import Network, Port
from control.compute.tables import networks, ports


def _net(r: Any) -> Network:
    return Network(id=r.id, name=r.name, user_id=r.user_id, cidr=r.cidr, gateway=r.gateway,
                   public=bool(r.public), created_at=r.created_at)


def _port(r: Any) -> Port:
    return Port(id=r.id, network_id=r.network_id, user_id=r.user_id, server_id=r.server_id,
                mac=r.mac, ip=r.ip, firewall=r.firewall, created_at=r.created_at)


async def network_list(conn: AsyncConnection, user: str | None = None) -> list[Network]:
    """Networks by id: every one (user None), else the user's and the public ones."""
    q = sa.select(networks).order_by(networks.c.id)
    if user is not None:
        q = q.where(sa.or_(networks.c.user_id == user, networks.c.public.is_(True)))
    return [_net(r) for r in await conn.execute(q)]


async def network_get(conn: AsyncConnection, nid: Any) -> Network:
    """A network by id (NotFound)."""
    if not str(nid).isdigit():
        raise NotFound(f"network {nid!r} not found")
    r = (await conn.execute(sa.select(networks).where(networks.c.id == int(nid)))).first()
    if r is None:
        raise NotFound(f"network {nid!r} not found")
    return _net(r)


async def network_insert(conn: AsyncConnection, name: str, user: str, cidr: str, gateway: str,
                         public: bool) -> Network:
    """Insert a network; the new row."""
    now = time.time()
    res = await conn.execute(networks.insert().values(
        name=name, user_id=user, cidr=cidr, gateway=gateway, public=public, created_at=now))
    return Network(int(res.inserted_primary_key[0]), name, user, cidr, gateway, public, now)


async def network_delete(conn: AsyncConnection, nid: int) -> None:
    """Delete a network row (its ports must be gone)."""
    await conn.execute(networks.delete().where(networks.c.id == nid))


async def port_list(conn: AsyncConnection, *, network: int | None = None,
                    server: str | None = None, user: str | None = None) -> list[Port]:
    """Ports by id, filtered by network, server and owner."""
    q = sa.select(ports).order_by(ports.c.id)
    if network is not None:
        q = q.where(ports.c.network_id == network)
    if server is not None:
        q = q.where(ports.c.server_id == server)
    if user is not None:
        q = q.where(ports.c.user_id == user)
    return [_port(r) for r in await conn.execute(q)]


async def port_get(conn: AsyncConnection, pid: Any) -> Port:
    """A port by id (NotFound)."""
    if not str(pid).isdigit():
        raise NotFound(f"port {pid!r} not found")
    r = (await conn.execute(sa.select(ports).where(ports.c.id == int(pid)))).first()
    if r is None:
        raise NotFound(f"port {pid!r} not found")
    return _port(r)


async def port_insert(conn: AsyncConnection, net: int, user: str, server: str | None, mac: str,
                      ip: str, firewall: str) -> Port:
    """Insert a port; the new row."""
    now = time.time()
    res = await conn.execute(ports.insert().values(
        network_id=net, user_id=user, server_id=server, mac=mac, ip=ip, firewall=firewall,
        created_at=now))
    return Port(int(res.inserted_primary_key[0]), net, user, server, mac, ip, firewall, now)


async def port_set(conn: AsyncConnection, pid: int, **values: Any) -> None:
    """Update columns of a port."""
    await conn.execute(ports.update().where(ports.c.id == pid).values(**values))


async def port_delete(conn: AsyncConnection, pid: int) -> None:
    """Delete a port row."""
    await conn.execute(ports.delete().where(ports.c.id == pid))
