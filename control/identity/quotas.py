"""Resources, holdings and commissions (the Astakos quotaholder).

A holding (holder, source, resource) has a limit and usage_min <= usage_max: issuing a
commission adds positive quantities to usage_max (checked against the limit) and negative
ones to usage_min (checked against zero); accepting moves the other bound, rejecting
undoes the issue. Every charge is two provisions: the user's in a project and the
project's own, so the effective limit is min(limit, project_limit - others' usage).
Holdings appear lazily with the limit their project gives (identity_limits, or the
resource's default for system projects).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from archipelago.errors import InvalidArgument, NotFound
from control.host.webapi import fault_body
from control.identity import ledger
from control.identity.hot import HotPath
from control.identity.tables import (
    commissions,
    resources,
)
from control.identity.tables import provisions as provision_rows

#: Largest quantity or limit (fits a signed 64-bit column).
MAX_QUANTITY = (1 << 63) - 1


@dataclass(frozen=True)
class Resource:
    """A quota resource (registered by the plugin that charges it)."""

    name: str
    unit: str = ""
    description: str = ""
    default_limit: int = 0
    service: str = ""


@dataclass(frozen=True)
class Provision:
    """One line of a commission: ``quantity`` of ``resource`` on (holder, source)."""

    holder: str
    source: str | None
    resource: str
    quantity: int

    def to_dict(self) -> dict[str, Any]:
        """The reference's JSON form."""
        return {"holder": self.holder, "source": self.source, "resource": self.resource,
                "quantity": self.quantity}


def provisions(user: str, project: str, resource: str, quantity: int) -> list[Provision]:
    """The two-sided charge: the user's share in ``project`` and the project's own."""
    return [Provision(f"user:{user}", f"project:{project}", resource, quantity),
            Provision(f"project:{project}", None, resource, quantity)]


def parse_provision(doc: Any) -> Provision:
    """A Provision from its JSON form; InvalidArgument when malformed."""
    if not isinstance(doc, dict):
        raise InvalidArgument("a provision is an object")
    holder, source, res, q = (doc.get("holder"), doc.get("source"), doc.get("resource"),
                              doc.get("quantity"))
    if not isinstance(holder, str) or not isinstance(res, str):
        raise InvalidArgument("a provision needs holder and resource strings")
    if source is not None and not isinstance(source, str):
        raise InvalidArgument("a provision's source is a string or null")
    if not isinstance(q, int) or isinstance(q, bool) or abs(q) > MAX_QUANTITY:
        raise InvalidArgument("a provision's quantity is an integer")
    return Provision(holder, source or None, res, q)


def iso(ts: float) -> str:
    """2013-06-19T15:23:59+00:00."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _check_limit(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_QUANTITY:
        raise InvalidArgument(f"limits are integers from 0 to {MAX_QUANTITY}, not {value!r}")
    return value


#: ``await guard(user_uuid, that user's provisions)`` before a commission; raises to refuse.
CommissionGuard = Callable[[str, list["Provision"]], Awaitable[None]]


class QuotasMixin:
    """The quota half of IdentityService."""

    db: Any
    events: Any
    hot: HotPath

    # guards (other plugins' say on commissions, e.g. billing's deny_when_negative) -----
    def add_commission_guard(self, guard: CommissionGuard) -> None:
        """Consult ``guard`` before every commission (but forced ones) that provisions a user
        holding; it raises QuotaExceeded to refuse. Adding the same guard twice is a no-op."""
        guards = self.__dict__.setdefault("_guards", [])
        if guard not in guards:
            guards.append(guard)

    async def _check_guards(self, provs: list[Provision]) -> None:
        # Before the commission's transaction: a guard reads the database itself.
        guards = self.__dict__.get("_guards", [])
        users = dict.fromkeys(p.holder[5:] for p in provs if p.holder.startswith("user:"))
        for guard in guards:
            for user in users:
                await guard(user, [p for p in provs if p.holder == f"user:{user}"])

    # resources --------------------------------------------------------------
    async def register_resource(self, res: Resource) -> None:
        """Create or update a resource (idempotent; plugins call it from open())."""
        _check_limit(res.default_limit)
        async with self.db.begin() as conn:
            row = (await conn.execute(sa.select(resources).where(resources.c.name == res.name)
                                      .with_for_update())).first()
            values = {"unit": res.unit, "description": res.description,
                      "service": res.service, "default_limit": res.default_limit}
            if row is None:
                await conn.execute(resources.insert().values(name=res.name, **values))
            elif any(getattr(row, k) != v for k, v in values.items()):
                await conn.execute(resources.update().where(resources.c.name == res.name)
                                   .values(**values))

    async def resources(self) -> dict[str, Resource]:
        """Every resource by name."""
        async with self.db.read() as conn:
            return {r.name: Resource(r.name, r.unit, r.description, int(r.default_limit),
                                     r.service)
                    for r in await conn.execute(sa.select(resources).order_by(resources.c.name))}

    # holdings and commissions (bodies in ledger.py, run by the hot path) ----------
    async def _holding(self, conn: AsyncConnection, holder: str, source: str,
                       resource: str, create: bool = True) -> tuple[int, int, int]:
        """(limit, usage_min, usage_max) in ``conn``'s transaction (ledger.holding)."""
        return await conn.run_sync(
            lambda c: ledger.holding(c, holder, source, resource, create))

    async def holding_of(self, holder: str, source: str, resource: str) -> tuple[int, int, int]:
        """(limit, usage_min, usage_max) of a holding, not creating it (a read)."""
        return await self.hot.read(
            lambda c: ledger.holding(c, holder, source, resource, create=False))

    async def issue_commission(self, provs: list[Provision], name: str = "", *,
                               force: bool = False, auto_accept: bool = False) -> int:
        """Reserve every provision at once; the serial, or QuotaExceeded/NotFound (nothing
        changes then)."""
        if not provs:
            raise InvalidArgument("a commission needs at least one provision")
        if not isinstance(name, str) or len(name) > 256:
            raise InvalidArgument("commission names are strings of at most 256 characters")
        if not force:
            await self._check_guards(provs)
        return await self.hot.write(lambda c, ev: ledger.issue(
            c, ev, self.events, provs, name, force, auto_accept))

    async def accept(self, serial: int) -> None:
        """Make a pending commission usage; NotFound when it is not pending."""
        await self.hot.write(lambda c, ev: ledger.resolve(c, ev, self.events, serial, True))

    async def reject(self, serial: int) -> None:
        """Cancel a pending commission; NotFound when it is not pending."""
        await self.hot.write(lambda c, ev: ledger.resolve(c, ev, self.events, serial, False))

    async def resolve(self, accept: list[int], reject: list[int]) -> dict[str, Any]:
        """Bulk action: {"accepted": [..], "rejected": [..], "failed": [[serial, fault]]}."""
        out: dict[str, Any] = {"accepted": [], "rejected": [], "failed": []}
        for serials, ok, key in ((accept, True, "accepted"), (reject, False, "rejected")):
            for s in serials:
                try:
                    await (self.accept(s) if ok else self.reject(s))
                    out[key].append(s)
                except NotFound as e:
                    out["failed"].append([s, fault_body(404, e.message)])
        return out

    async def pending(self, prefix: str | None = None) -> list[int]:
        """Serials of pending commissions (whose name starts with ``prefix``)."""
        q = sa.select(commissions.c.serial).where(commissions.c.state == "pending")
        if prefix:
            q = q.where(sa.func.substr(commissions.c.name, 1, len(prefix)) == prefix)
        async with self.db.read() as conn:
            return [int(r[0]) for r in await conn.execute(q.order_by(commissions.c.serial))]

    async def commission(self, serial: int) -> dict[str, Any]:
        """A commission: serial, name, issue_time, state, provisions."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(commissions).where(
                commissions.c.serial == serial))).first()
            if row is None:
                raise NotFound(f"no commission {serial}")
            provs = [Provision(r.holder, r.source or None, r.resource, int(r.quantity)).to_dict()
                     for r in await conn.execute(sa.select(provision_rows).where(
                         provision_rows.c.serial == serial).order_by(provision_rows.c.idx))]
        return {"serial": serial, "name": row.name, "issue_time": iso(row.issue_time),
                "state": row.state, "provisions": provs}

