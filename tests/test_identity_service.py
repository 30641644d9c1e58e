"""The identity service in-process: users, tokens, passwords, throttling, projects,
quotas and commissions (the Astakos quotaholder rules), the admin of a fresh instance."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from identity_helpers import identity

from archipelago.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
    TooManyRequests,
    Unauthorized,
)
from control.host.migrate import schema_diff
from control.identity.plugin import IdentityPlugin
from control.identity.quotas import Provision, Resource, provisions
from control.identity.tables import holdings, tokens, users

R = "test.widgets"


async def test_migrations_create_exactly_the_tables_and_the_admin(tmp_path: Path) -> None:
    async with identity(tmp_path) as (host, svc):
        assert await schema_diff(host.db, IdentityPlugin.tables) == []
        admin = json.loads((tmp_path / "admin.json").read_text())
        assert stat.S_IMODE((tmp_path / "admin.json").stat().st_mode) == 0o600
        u = await svc.check_password(admin["name"], admin["password"])
        assert u.is_admin and u.uuid == admin["uuid"]
    async with identity(tmp_path) as (host, svc):  # a second start keeps the same admin
        assert [u.name for u in await svc.users()] == ["admin"]
        assert json.loads((tmp_path / "admin.json").read_text()) == admin


async def test_tokens_are_random_hashed_and_expire(tmp_path: Path) -> None:
    async with identity(tmp_path) as (host, svc):
        user, tok = await svc.add_user("alice", email="a@example.org", password="pw-alice")
        assert len(tok) == 43  # 32 random bytes, URL-safe base64
        p = await svc.authenticate(tok)
        assert (p.uuid, p.name, p.is_admin, p.projects) == (user.uuid, "alice", False,
                                                           (user.uuid,))
        async with host.db.read() as conn:
            stored = [r[0] for r in await conn.execute(sa.select(tokens.c.hash))]
            secrets_ = [r[0] for r in await conn.execute(sa.select(users.c.password))]
        assert tok not in stored and all(len(h) == 64 for h in stored)
        assert all(s is None or (s.startswith("scrypt$") and "pw-alice" not in s)
                   for s in secrets_)
        old = await svc.mint_token("alice", lifetime=0)
        with pytest.raises(Unauthorized, match="expired"):
            await svc.authenticate(old)
        with pytest.raises(Unauthorized, match="invalid"):
            await svc.authenticate(tok + "x")
        new = await svc.renew_token("alice")
        with pytest.raises(Unauthorized):
            await svc.authenticate(tok)  # renew revokes the old tokens
        assert (await svc.authenticate(new)).uuid == user.uuid
        await svc.set_active("alice", False)
        with pytest.raises(Unauthorized):
            await svc.authenticate(new)  # disable revokes every token
        with pytest.raises(Unauthorized, match="disabled"):
            await svc.check_password("alice", "pw-alice")
        await svc.set_active("alice", True)
        assert (await svc.check_password(user.uuid, "pw-alice")).name == "alice"
        with pytest.raises(Unauthorized, match="bad credentials"):
            await svc.check_password("alice", "wrong")
        with pytest.raises(Unauthorized, match="bad credentials"):
            await svc.check_password("nobody", "pw-alice")


async def test_bad_users_are_refused(tmp_path: Path) -> None:
    async with identity(tmp_path) as (_, svc):
        await svc.add_user("bob")
        with pytest.raises(AlreadyExists):
            await svc.add_user("bob")
        for bad in ("", "a/b", "a:b", "-x", "x" * 200, "sp ace"):
            with pytest.raises(InvalidArgument):
                await svc.add_user(bad)
        with pytest.raises(InvalidArgument):
            await svc.add_user("carol", password="")
        with pytest.raises(NotFound):
            await svc.user("nobody")


async def test_login_throttling_answers_429_before_checking(tmp_path: Path) -> None:
    async with identity(tmp_path, ["identity.login_attempts=3"]) as (_, svc):
        await svc.add_user("dave", password="right")
        for _ in range(3):
            with pytest.raises(Unauthorized):
                await svc.local.check("dave", "wrong", "10.0.0.1")
        with pytest.raises(TooManyRequests):
            await svc.local.check("dave", "right", "10.0.0.2")  # the name is throttled
        with pytest.raises(TooManyRequests):
            await svc.local.check("other", "x", "10.0.0.1")  # so is the address
        svc.throttle.window = 0.0  # the window passed
        assert (await svc.local.check("dave", "right", "10.0.0.1")).name == "dave"


async def _charge(svc, user: str, project: str, q: int, **kw) -> int:  # type: ignore[no-untyped-def]
    return await svc.issue_commission(provisions(user, project, R, q), "test", **kw)


async def test_commissions_are_two_sided_and_resolve(tmp_path: Path) -> None:
    async with identity(tmp_path) as (host, svc):
        await svc.register_resource(Resource(R, default_limit=2, service="test"))
        u, _ = await svc.add_user("erin")
        s1 = await _charge(svc, u.uuid, u.uuid, 1)
        q = (await svc.user_quotas(u.uuid))[u.uuid][R]
        assert q == {"limit": 2, "usage": 1, "pending": 1, "project_limit": 2,
                     "project_usage": 1, "project_pending": 1}
        assert await svc.pending() == [s1]
        assert (await svc.commission(s1))["provisions"] == [
            {"holder": f"user:{u.uuid}", "source": f"project:{u.uuid}", "resource": R,
             "quantity": 1},
            {"holder": f"project:{u.uuid}", "source": None, "resource": R, "quantity": 1}]
        await svc.accept(s1)
        assert (await svc.user_quotas(u.uuid))[u.uuid][R]["pending"] == 0
        s2 = await _charge(svc, u.uuid, u.uuid, 1)
        with pytest.raises(QuotaExceeded) as over:
            await _charge(svc, u.uuid, u.uuid, 1)  # 1 accepted + 1 pending = limit 2
        data = over.value.fault_data  # type: ignore[attr-defined]
        assert data["limit"] == 2 and data["usage"] == 2 and data["name"] == "NoCapacityError"
        assert data["provision"]["resource"] == R
        await svc.reject(s2)
        with pytest.raises(NotFound):
            await svc.accept(s2)  # resolved already
        s3 = await _charge(svc, u.uuid, u.uuid, -1)
        with pytest.raises(QuotaExceeded) as under:
            await _charge(svc, u.uuid, u.uuid, -1)  # would go below zero
        assert under.value.fault_data["name"] == "NoQuantityError"  # type: ignore[attr-defined]
        bulk = await svc.resolve(accept=[s3], reject=[999])
        assert bulk["accepted"] == [s3] and bulk["rejected"] == []
        assert bulk["failed"][0][0] == 999 and "itemNotFound" in bulk["failed"][0][1]
        q = (await svc.user_quotas(u.uuid))[u.uuid][R]
        assert (q["usage"], q["pending"], q["project_usage"]) == (0, 0, 0)
        forced = await _charge(svc, u.uuid, u.uuid, 5, force=True, auto_accept=True)
        assert forced not in await svc.pending()
        assert (await svc.user_quotas(u.uuid))[u.uuid][R]["usage"] == 5
        with pytest.raises(NotFound):
            await svc.issue_commission([Provision(f"user:{u.uuid}", "project:nope", R, 1)])
        with pytest.raises(NotFound):
            await svc.issue_commission(provisions(u.uuid, u.uuid, "no.such", 1))
        # A failed commission changed nothing: the first provision's reservation rolled back.
        other, _ = await svc.add_user("frank")
        with pytest.raises(NotFound):
            await svc.issue_commission([*provisions(other.uuid, other.uuid, R, 1),
                                        Provision("user:ghost", f"project:{other.uuid}", R, 1)])
        async with host.db.read() as conn:
            rows = (await conn.execute(sa.select(holdings).where(
                holdings.c.holder == f"user:{other.uuid}"))).all()
        assert all(r.usage_max == 0 for r in rows)


async def test_project_limits_and_the_effective_limit(tmp_path: Path) -> None:
    async with identity(tmp_path) as (_, svc):
        await svc.register_resource(Resource(R, default_limit=0))
        a, _ = await svc.add_user("ann")
        b, _ = await svc.add_user("ben")
        pid = await svc.create_project("lab", {R: (5, 3)}, owner="ann")
        await svc.add_member("lab", "ben")
        with pytest.raises(AlreadyExists):
            await svc.add_member("lab", "ben")
        await svc.accept(await _charge(svc, a.uuid, pid, 3))
        with pytest.raises(QuotaExceeded):
            await _charge(svc, a.uuid, pid, 1)  # ann's member limit 3
        await svc.accept(await _charge(svc, b.uuid, pid, 2))
        with pytest.raises(QuotaExceeded) as e:
            await _charge(svc, b.uuid, pid, 1)  # ben has 1 left of 3, the project none of 5
        assert e.value.fault_data["provision"]["holder"] == f"project:{pid}"  # type: ignore[attr-defined]
        q = (await svc.user_quotas(b.uuid))[pid][R]
        # Effective limit = min(limit, project_limit - (project_usage - usage)) = min(3, 5-3) = 2.
        assert (q["limit"], q["usage"], q["project_limit"], q["project_usage"]) == (3, 2, 5, 5)
        with pytest.raises(NotFound):
            await _charge(svc, b.uuid, a.uuid, 1)  # not a member of ann's system project
        projs = await svc.projects()
        assert projs[0]["name"] == "lab" and projs[0]["members"] == ["ann", "ben"]
        with pytest.raises(InvalidArgument):
            await svc.create_project("neg", {R: (-1, 0)})
        with pytest.raises(NotFound):
            await svc.create_project("unknown", {"no.such": (1, 1)})
        assert [p["name"] for p in await svc.projects()] == ["lab"]  # nothing half-created
        await svc.set_quota("ann", R, 7)
        assert (await svc.user_quotas(a.uuid))[a.uuid][R]["limit"] == 7


async def test_reconcile_sets_usage_to_what_is_stored(tmp_path: Path) -> None:
    async with identity(tmp_path) as (_, svc):
        u, _ = await svc.add_user("gus")
        res = "pithos.diskspace"
        await svc.accept(await svc.issue_commission(provisions(u.uuid, u.uuid, res, 100),
                                                    "pithos: put"))
        left = await svc.issue_commission(provisions(u.uuid, u.uuid, res, 50), "pithos: put")
        other = await svc.issue_commission(provisions(u.uuid, u.uuid, res, 7), "compute: x")
        fixed = await svc.reconcile_usage(res, {u.uuid: 130, "legacy-name": 5}, "pithos:")
        assert fixed == {u.uuid: 30}
        assert await svc.pending() == [other] and left not in await svc.pending()
        q = (await svc.user_quotas(u.uuid))[u.uuid][res]
        assert (q["usage"] - q["pending"], q["project_usage"] - q["project_pending"]) == (130, 130)


async def test_commission_guards_see_each_users_provisions_and_can_refuse(tmp_path: Path) -> None:
    async with identity(tmp_path) as (_host, svc):
        await svc.register_resource(Resource(R, default_limit=10, service="test"))
        u, _ = await svc.add_user("gina")
        seen: list[tuple[str, list[int]]] = []
        refuse = {"on": False}

        async def guard(user: str, provs: list[Provision]) -> None:
            seen.append((user, [p.quantity for p in provs]))
            if refuse["on"]:
                raise QuotaExceeded("refused by the guard")

        svc.add_commission_guard(guard)
        svc.add_commission_guard(guard)  # once only
        s = await svc.issue_commission(provisions(u.uuid, u.uuid, R, 3))
        assert seen == [(u.uuid, [3])]          # the project-side provision is not the user's
        refuse["on"] = True
        with pytest.raises(QuotaExceeded, match="refused by the guard"):
            await svc.issue_commission(provisions(u.uuid, u.uuid, R, 1))
        assert await svc.pending() == [s]        # nothing reserved by the refused one
        await svc.issue_commission(provisions(u.uuid, u.uuid, R, 1), force=True)  # forced: no guard
        assert len(seen) == 2
