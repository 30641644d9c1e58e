"""Projects, memberships, limits and the quota views (GET /quotas, service_quotas)."""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from archipelago.errors import AlreadyExists, InvalidArgument, NotFound
from control.identity.quotas import _check_limit
from control.identity.tables import holdings, limits, members, projects, resources, users

log = logging.getLogger("control.identity")


class ProjectsMixin:
    """Projects and quota views of IdentityService."""

    db: Any

    async def _project(self, conn: AsyncConnection, who: str) -> Any:
        row = (await conn.execute(sa.select(projects).where(
            sa.or_(projects.c.uuid == who, projects.c.name == who)))).first()
        if row is None:
            raise NotFound(f"no project {who!r}")
        return row

    async def _user_uuid(self, conn: AsyncConnection, who: str) -> str:
        row = (await conn.execute(sa.select(users.c.uuid).where(
            sa.or_(users.c.uuid == who, users.c.name == who)))).first()
        if row is None:
            raise NotFound(f"no user {who!r}")
        return str(row[0])

    async def _check_resource(self, conn: AsyncConnection, name: str) -> None:
        if (await conn.execute(sa.select(resources.c.name)
                               .where(resources.c.name == name))).first() is None:
            raise NotFound(f"unknown resource {name!r}")

    async def _set_limits(self, conn: AsyncConnection, project: str, resource: str,
                          project_limit: int, member_limit: int) -> None:
        _check_limit(project_limit)
        _check_limit(member_limit)
        await self._check_resource(conn, resource)
        await conn.execute(limits.delete().where(limits.c.project == project,
                                                 limits.c.resource == resource))
        await conn.execute(limits.insert().values(project=project, resource=resource,
                                                  project_limit=project_limit,
                                                  member_limit=member_limit))
        # Existing holdings take the new limits; usage is kept (it may now exceed them:
        # nothing is taken away, new charges are refused until usage drops).
        await conn.execute(holdings.update().where(
            holdings.c.holder == f"project:{project}", holdings.c.source == "",
            holdings.c.resource == resource).values(limit=project_limit))
        await conn.execute(holdings.update().where(
            holdings.c.source == f"project:{project}", holdings.c.resource == resource
        ).values(limit=member_limit))

    async def create_project(self, name: str, limits_: dict[str, tuple[int, int]],
                             owner: str | None = None) -> str:
        """A project with {resource: (project_limit, member_limit)}; returns its uuid."""
        if not isinstance(name, str) or not 0 < len(name) <= 128 or name.startswith("system:"):
            raise InvalidArgument("project names are 1-128 characters, not starting 'system:'")
        uid = str(uuidlib.uuid4())
        async with self.db.begin() as conn:
            if (await conn.execute(sa.select(projects.c.uuid).where(
                    projects.c.name == name))).first() is not None:
                raise AlreadyExists(f"project {name!r} already exists")
            owner_uuid = await self._user_uuid(conn, owner) if owner else None
            await conn.execute(projects.insert().values(uuid=uid, name=name, system=False,
                                                        owner=owner_uuid, created=time.time()))
            for res, (plim, mlim) in limits_.items():
                await self._set_limits(conn, uid, res, plim, mlim)
            if owner_uuid:
                await conn.execute(members.insert().values(project=uid, user=owner_uuid))
        if owner_uuid:
            self.token_cache.drop_user(owner_uuid)  # type: ignore[attr-defined]
        return uid

    async def add_member(self, project: str, user: str) -> None:
        """Make ``user`` a member of ``project`` (AlreadyExists if it is one)."""
        async with self.db.begin() as conn:
            p = await self._project(conn, project)
            if p.system:
                raise InvalidArgument("system projects have exactly one member")
            u = await self._user_uuid(conn, user)
            if (await conn.execute(sa.select(members.c.user).where(
                    members.c.project == p.uuid, members.c.user == u))).first():
                raise AlreadyExists(f"{user!r} is already a member of {p.name!r}")
            await conn.execute(members.insert().values(project=p.uuid, user=u))
        self.token_cache.drop_user(u)  # type: ignore[attr-defined] -- its Principal.projects

    async def projects(self, include_system: bool = False) -> list[dict[str, Any]]:
        """Projects with their members and limits."""
        async with self.db.read() as conn:
            q = sa.select(projects).order_by(projects.c.name)
            if not include_system:
                q = q.where(projects.c.system == sa.false())
            out = []
            for p in (await conn.execute(q)).all():
                mem = [r[0] for r in await conn.execute(
                    sa.select(users.c.name).join(members, members.c.user == users.c.uuid)
                    .where(members.c.project == p.uuid).order_by(users.c.name))]
                lims = {r.resource: {"project_limit": int(r.project_limit),
                                     "member_limit": int(r.member_limit)}
                        for r in await conn.execute(sa.select(limits).where(
                            limits.c.project == p.uuid))}
                out.append({"uuid": p.uuid, "name": p.name, "system": bool(p.system),
                            "owner": p.owner, "members": mem, "limits": lims})
        return out

    async def set_quota(self, user: str, resource: str, limit: int) -> None:
        """The limit of ``resource`` in a user's system project (both sides)."""
        async with self.db.begin() as conn:
            u = await self._user_uuid(conn, user)
            await self._set_limits(conn, u, resource, limit, limit)

    async def user_quotas(self, user: str) -> dict[str, dict[str, dict[str, int]]]:
        """{project: {resource: {limit, usage, pending, project_limit, project_usage,
        project_pending}}} over the user's projects (usage includes pending charges)."""
        async with self.db.read() as conn:
            u = await self._user_uuid(conn, user)
            projs = [r[0] for r in await conn.execute(
                sa.select(members.c.project).where(members.c.user == u))]
            names = [r[0] for r in await conn.execute(
                sa.select(resources.c.name).order_by(resources.c.name))]
            out: dict[str, dict[str, dict[str, int]]] = {}
            for p in sorted(projs, key=lambda x: (x != u, x)):
                per: dict[str, dict[str, int]] = {}
                for res in names:
                    lim, umin, umax = await self._holding(conn, f"user:{u}", f"project:{p}",
                                                          res, create=False)  # type: ignore[attr-defined]
                    plim, pmin, pmax = await self._holding(conn, f"project:{p}", "", res,
                                                           create=False)  # type: ignore[attr-defined]
                    per[res] = {"limit": lim, "usage": umax, "pending": umax - umin,
                                "project_limit": plim, "project_usage": pmax,
                                "project_pending": pmax - pmin}
                out[p] = per
        return out

    async def service_quotas(self, user: str | None = None) -> dict[str, Any]:
        """{user uuid: user_quotas} for one user or all."""
        if user is not None:
            u = (await self.user(user)).uuid  # type: ignore[attr-defined]
            return {u: await self.user_quotas(u)}
        async with self.db.read() as conn:
            uuids = [r[0] for r in await conn.execute(sa.select(users.c.uuid))]
        return {u: await self.user_quotas(u) for u in uuids}

    async def _set_usage(self, conn: AsyncConnection, u: str, resource: str, want: int) -> int:
        """Set the system-project usage of user ``u`` (both holdings) to ``want``."""
        _, umin, umax = await self._holding(  # type: ignore[attr-defined]
            conn, f"user:{u}", f"project:{u}", resource)
        if umin == want and umax == want:
            return 0
        await self._holding(conn, f"project:{u}", "", resource)  # type: ignore[attr-defined]
        for holder, source in ((f"user:{u}", f"project:{u}"), (f"project:{u}", "")):
            await conn.execute(holdings.update().where(
                holdings.c.holder == holder, holdings.c.source == source,
                holdings.c.resource == resource).values(
                usage_min=holdings.c.usage_min + (want - umin),
                usage_max=holdings.c.usage_max + (want - umax)))
        return want - umin

    async def set_usage(self, user: str, resource: str, value: int) -> None:
        """Set a user's system-project usage (what it really holds, e.g. when adopted)."""
        async with self.db.begin() as conn:
            await self._set_usage(conn, await self._user_uuid(conn, user), resource, value)

    async def reconcile_usage(self, resource: str, usage: dict[str, int],
                              prefix: str) -> dict[str, int]:
        """Reject pending commissions named ``prefix``..., then set every user's system
        ``resource`` usage to ``usage`` (absent: 0). Returns the corrections made."""
        for serial in await self.pending(prefix):  # type: ignore[attr-defined]
            await self.reject(serial)  # type: ignore[attr-defined]
        fixed: dict[str, int] = {}
        async with self.db.begin() as conn:
            uuids = {r[0] for r in await conn.execute(sa.select(users.c.uuid))}
            for account in set(usage) - uuids:
                log.warning("account %r stores %d bytes but is no identity user: not charged",
                            account, usage[account])
            for u in sorted(uuids):
                diff = await self._set_usage(conn, u, resource, usage.get(u, 0))
                if diff:
                    fixed[u] = diff
        if fixed:
            log.warning("%s usage corrected after a restart: %s", resource, fixed)
        return fixed
