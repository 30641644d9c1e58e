"""The quotaholder's transaction bodies (holdings, commissions), synchronous over one
connection: HotPath runs them on the serial SQLite thread or through ``run_sync``.

Statements are built once (hot.run executes them straight on pysqlite); FOR UPDATE takes
the row locks on PostgreSQL (SQLite's BEGIN IMMEDIATE already serializes writers).
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from archipelago.errors import NotFound, QuotaExceeded
from control.host.events import EventBus
from control.host.plugin import Event
from control.host.webapi import with_data
from control.identity.hot import emit, run
from control.identity.tables import commissions, holdings, limits, members, projects, resources
from control.identity.tables import provisions as provision_rows

_b = sa.bindparam
_KEY = (holdings.c.holder == _b("h"), holdings.c.source == _b("s"),
        holdings.c.resource == _b("r"))
_HOLDING = sa.select(holdings.c.limit, holdings.c.usage_min, holdings.c.usage_max).where(
    *_KEY).with_for_update()
# First use of a holding by two transactions at once (two charges of a new account): the
# second insert waits for the first and then does nothing; its move finds the row.
_NEW_HOLDING = {name: d.insert(holdings).values(
    holder=_b("h"), source=_b("s"), resource=_b("r"), limit=_b("lim"), usage_min=0,
    usage_max=0).on_conflict_do_nothing()
    for name, d in (("postgresql", postgresql), ("sqlite", sqlite))}
_MOVE = holdings.update().where(*_KEY).values(usage_min=holdings.c.usage_min + _b("dmin"),
                                              usage_max=holdings.c.usage_max + _b("dmax"))
# The move of an issue, answering the holding after it (one statement instead of a
# locking read and an update; the row lock is the same).
_BUMP = _MOVE.returning(holdings.c.limit, holdings.c.usage_min, holdings.c.usage_max)
_DEFAULT = sa.select(resources.c.default_limit).where(resources.c.name == _b("r"))
_SYSTEM = sa.select(projects.c.system).where(projects.c.uuid == _b("p"))
_LIMITS = sa.select(limits.c.project_limit, limits.c.member_limit).where(
    limits.c.project == _b("p"), limits.c.resource == _b("r"))
_MEMBER = sa.select(members.c.user).where(members.c.project == _b("p"), members.c.user == _b("u"))
_NEW_COMMISSION = commissions.insert().values(
    name=_b("n"), issue_time=_b("t"), state=_b("st"), resolved=_b("at")).returning(
    commissions.c.serial)
_NEW_PROVISION = provision_rows.insert().values(
    serial=_b("sn"), idx=_b("i"), holder=_b("h"), source=_b("s"), resource=_b("r"),
    quantity=_b("q"))
_COMMISSION = sa.select(commissions.c.name, commissions.c.state).where(
    commissions.c.serial == _b("sn")).with_for_update()
_PROVISIONS = sa.select(provision_rows.c.holder, provision_rows.c.source,
                        provision_rows.c.resource, provision_rows.c.quantity).where(
    provision_rows.c.serial == _b("sn")).order_by(provision_rows.c.idx)
_SETTLE = commissions.update().where(commissions.c.serial == _b("sn")).values(
    state=_b("st"), resolved=_b("at"))


def default_limit(db: sa.Connection, project: str, resource: str, member: bool) -> int:
    """The limit a new holding of ``project`` gets: identity_limits, else the resource's
    default for system projects, else 0; NotFound for an unknown resource or project."""
    res = run(db, _DEFAULT, {"r": resource}).fetchone()
    if res is None:
        raise NotFound(f"unknown resource {resource!r}")
    proj = run(db, _SYSTEM, {"p": project}).fetchone()
    if proj is None:
        raise NotFound(f"unknown project {project!r}")
    lim = run(db, _LIMITS, {"p": project, "r": resource}).fetchone()
    if lim is not None:
        return int(lim[1] if member else lim[0])
    return int(res[0]) if proj[0] else 0


def limit_of(db: sa.Connection, holder: str, source: str, resource: str) -> int:
    """The limit of a holding not yet created; NotFound when no such holding can exist."""
    kind, _, who = holder.partition(":")
    if kind == "project" and not source and who:
        return default_limit(db, who, resource, member=False)
    skind, _, project = source.partition(":")
    if kind == "user" and skind == "project" and who and project:
        if run(db, _MEMBER, {"p": project, "u": who}).fetchone() is None:
            raise NotFound(f"no holding {holder} in {source} (not a member)")
        return default_limit(db, project, resource, member=True)
    raise NotFound(f"unknown holding {holder!r} (source {source or None!r})")


def holding(db: sa.Connection, holder: str, source: str, resource: str,
            create: bool = True) -> tuple[int, int, int]:
    """(limit, usage_min, usage_max), created with its project's limit on first use."""
    key = {"h": holder, "s": source, "r": resource}
    row = run(db, _HOLDING, key).fetchone()
    if row is not None:
        return int(row[0]), int(row[1]), int(row[2])
    limit = limit_of(db, holder, source, resource)
    if create:
        run(db, _NEW_HOLDING[db.dialect.name], {**key, "lim": limit})
    return limit, 0, 0


def move(db: sa.Connection, holder: str, source: str, resource: str, dmin: int,
         dmax: int) -> None:
    """Add to a holding's usage bounds (it must exist)."""
    run(db, _MOVE, {"h": holder, "s": source, "r": resource, "dmin": dmin, "dmax": dmax})


def issue(db: sa.Connection, events: list[Event], bus: EventBus, provs: list[Any],
          name: str, force: bool, auto_accept: bool) -> int:
    """Reserve every provision; the serial, or QuotaExceeded/NotFound (the caller's
    transaction rolls back, undoing the moves). ``auto_accept`` settles it at once (both
    bounds move)."""
    for p in provs:
        source, q = p.source or "", p.quantity
        dmin, dmax = (q, q) if auto_accept else (min(q, 0), max(q, 0))
        key = {"h": p.holder, "s": source, "r": p.resource, "dmin": dmin, "dmax": dmax}
        row = run(db, _BUMP, key).fetchone()
        if row is None:  # first use: create it with its project's limit
            holding(db, p.holder, source, p.resource)
            row = run(db, _BUMP, key).fetchone()
        limit, umin, umax = int(row[0]), int(row[1]) - dmin, int(row[2]) - dmax  # before
        if q >= 0 and not force and umax + q > limit:
            raise over(p, "NoCapacityError", limit, umax)
        if q < 0 and not force and umin + q < 0:
            raise over(p, "NoQuantityError", limit, umin)
    now = time.time()
    serial = int(run(db, _NEW_COMMISSION, {
        "n": name, "t": now, "st": "accepted" if auto_accept else "pending",
        "at": now if auto_accept else None}).fetchone()[0])
    for i, p in enumerate(provs):
        run(db, _NEW_PROVISION, {"sn": serial, "i": i, "h": p.holder, "s": p.source or "",
                                 "r": p.resource, "q": p.quantity})
        if auto_accept:
            _accepted(db, events, bus, serial, name, p.holder, p.source or "", p.resource,
                      p.quantity, now)
    return serial


def _accepted(db: sa.Connection, events: list[Event], bus: EventBus, serial: int, name: str,
              holder: str, source: str, resource: str, q: int, now: float) -> None:
    """identity.commission.accepted for a user provision (billing's input)."""
    if holder.startswith("user:") and source:
        emit(db, bus, events, Event("identity.commission.accepted", {
            "serial": serial, "name": name, "holder": holder, "user": holder[5:],
            "project": source.partition(":")[2], "resource": resource, "delta": q,
            "time": now}))


def resolve(db: sa.Connection, events: list[Event], bus: EventBus, serial: int,
            accept: bool) -> None:
    """Accept (usage) or reject (undo) a pending commission; NotFound when not pending.
    Accepting emits identity.commission.accepted per user provision (billing's input)."""
    row = run(db, _COMMISSION, {"sn": serial}).fetchone()
    if row is None or row[1] != "pending":
        raise NotFound(f"no pending commission {serial}")
    name, now = row[0], time.time()
    for holder, source, resource, quantity in run(db, _PROVISIONS, {"sn": serial}).fetchall():
        q = int(quantity)
        holding(db, holder, source, resource)  # a project dropped meanwhile: recreated
        if accept:
            move(db, holder, source, resource, max(q, 0), min(q, 0))
        else:
            move(db, holder, source, resource, -min(q, 0), -max(q, 0))
        if accept:
            _accepted(db, events, bus, serial, name, holder, source, resource, q, now)
    run(db, _SETTLE, {"sn": serial, "st": "accepted" if accept else "rejected", "at": now})


def over(p: Any, kind: str, limit: int, usage: int) -> QuotaExceeded:
    """The 413 of a refused provision, with the reference's overLimit data."""
    what = "above its limit" if kind == "NoCapacityError" else "below zero"
    err = QuotaExceeded(f"Quota exceeded: {p.resource} of {p.holder} would go {what} "
                        f"(limit {limit}, usage {usage}, requested {p.quantity:+d})")
    return with_data(err, {"provision": p.to_dict(), "name": kind, "limit": limit,
                           "usage": usage})  # type: ignore[return-value]
