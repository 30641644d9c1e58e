"""Identity's hot path: the token cache (TTL by an injected clock, revocations in this
process drop entries at once, expiry checked on every hit), quotas exact under concurrent
PUTs on SQLite and PostgreSQL, and no token in clear in the logs or the databases."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from api_helpers import ApiServer
from hypothesis import given
from hypothesis import strategies as st
from identity_helpers import identity
from pg_helpers import fresh_database, pg_url_or_skip

from archipelago.errors import Unauthorized
from archipelago.hashing import token_hash
from control.identity.tables import tokens
from control.identity.tokencache import TokenCache

R = "pithos.diskspace"


class Clock:
    """A clock tests move by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Config overrides of each metadata engine."""
    if request.param == "sqlite":
        yield []
        return
    with fresh_database(pg_url_or_skip()) as url:
        yield [f'database.url="{url}"']


@given(ttl=st.floats(0.1, 100), steps=st.lists(st.floats(0, 50), max_size=8))
def test_cache_entry_lives_exactly_ttl(ttl: float, steps: list[float]) -> None:
    clock = Clock()
    c = TokenCache(ttl, clock=clock)
    c.put("k", "principal", 5.0)
    start = clock.t
    for dt in steps:
        clock.t += dt
        got = c.get("k")
        assert (got == ("principal", 5.0)) == (clock.t < start + ttl)
        if got is None:
            assert len(c) == 0
            break


def test_cache_is_bounded_and_off_at_ttl_zero() -> None:
    c = TokenCache(10, size=3, clock=Clock())
    for k in "abcd":
        c.put(k, k, 1.0)
    assert len(c) == 3 and c.get("a") is None and c.get("d") == ("d", 1.0)
    off = TokenCache(0, clock=Clock())
    off.put("a", "a", 1.0)
    assert off.get("a") is None and len(off) == 0


async def _revoke_elsewhere(svc: Any, tok: str) -> None:
    """Delete a token the way another process (CLI, a second API server) would."""
    async with svc.db.begin() as conn:
        await conn.execute(tokens.delete().where(tokens.c.hash == token_hash(tok)))


async def test_another_process_revocation_is_seen_after_the_ttl(tmp_path: Path) -> None:
    async with identity(tmp_path, ["identity.token_cache_ttl=5"]) as (_, svc):
        clock = Clock()
        svc.token_cache = TokenCache(5, clock=clock)
        user, tok = await svc.add_user("ann")
        assert (await svc.authenticate(tok)).uuid == user.uuid
        await _revoke_elsewhere(svc, tok)
        clock.t += 4.9
        assert (await svc.authenticate(tok)).uuid == user.uuid  # cached: documented lag
        clock.t += 0.1
        with pytest.raises(Unauthorized, match="invalid token"):
            await svc.authenticate(tok)


@pytest.mark.parametrize("how", ["revoke", "disable", "renew", "password"])
async def test_revocation_in_this_process_drops_the_entry_at_once(
        tmp_path: Path, how: str, engine: list[str]) -> None:
    async with identity(tmp_path, engine) as (_, svc):
        svc.token_cache = TokenCache(3600, clock=Clock())  # would never expire by itself
        user, tok = await svc.add_user("bob", password="pw-of-bob")
        await svc.authenticate(tok)
        key = token_hash(tok)
        assert svc.token_cache.get(key) is not None
        if how == "revoke":
            assert await svc.revoke_token(tok)
        elif how == "disable":
            await svc.set_active("bob", False)
        elif how == "renew":
            await svc.renew_token("bob")
        else:
            await svc.set_password("bob", "new-pw-of-bob")
        assert svc.token_cache.get(key) is None
        if how != "password":  # a password change keeps the user's tokens valid
            with pytest.raises(Unauthorized):
                await svc.authenticate(tok)


async def test_membership_change_is_seen_at_once(tmp_path: Path) -> None:
    async with identity(tmp_path) as (_, svc):
        svc.token_cache = TokenCache(3600, clock=Clock())
        user, tok = await svc.add_user("cat")
        assert (await svc.authenticate(tok)).projects == (user.uuid,)
        p = await svc.create_project("team", {})
        await svc.add_member("team", "cat")
        assert (await svc.authenticate(tok)).projects == (user.uuid, p)


async def test_an_expired_token_is_refused_even_when_cached(tmp_path: Path) -> None:
    async with identity(tmp_path) as (_, svc):
        svc.token_cache = TokenCache(3600, clock=Clock())
        user, _ = await svc.add_user("dan")
        wall = Clock(svc.now())
        svc.now = wall
        tok, expires = await svc.login_token(user.uuid, lifetime=60)
        await svc.authenticate(tok)
        wall.t = expires
        with pytest.raises(Unauthorized, match="expired"):
            await svc.authenticate(tok)
        assert svc.token_cache.get(token_hash(tok)) is None


def test_quota_is_exact_under_concurrent_puts(tmp_path: Path, engine: list[str]) -> None:
    size, limit, n = 1000, 7_500, 24  # room for exactly 7 of the 24
    with ApiServer(tmp_path, overrides=engine) as api:
        svc = api.host.plugin("identity").service  # type: ignore[attr-defined]
        user, tok = api.call(svc.add_user("eve"))
        api.call(svc.set_quota("eve", R, limit))
        h = {"X-Auth-Token": tok}
        base = f"{api.url}/v1/{user.uuid}/c"
        assert requests.put(base, headers=h, timeout=30).status_code == 201
        codes: list[int] = []

        def worker(k: int) -> None:
            with requests.Session() as s:
                for i in range(k, n, 8):
                    codes.append(s.put(f"{base}/o{i}", data=b"x" * size, headers=h,
                                       timeout=60).status_code)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(codes) == [201] * (limit // size) + [413] * (n - limit // size)
        q = requests.get(api.url + "/account/v1.0/quotas", headers=h,
                         timeout=30).json()[user.uuid][R]
        stored = int(requests.head(f"{api.url}/v1/{user.uuid}", headers=h,
                                   timeout=30).headers["X-Account-Bytes-Used"])
        assert q["usage"] == stored == (limit // size) * size and q["pending"] == 0
        assert q["project_usage"] == stored


def test_no_token_in_clear_reaches_the_logs_or_the_databases(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-a-token-" + "z" * 30
    with ApiServer(tmp_path) as api:
        svc = api.host.plugin("identity").service  # type: ignore[attr-defined]
        user, tok = api.call(svc.add_user("fay", password="pw-of-fay"))
        r = requests.get(api.url + "/auth/v1.0", headers={"X-Auth-User": "fay",
                                                          "X-Auth-Key": "pw-of-fay"})
        tok2 = r.headers["X-Auth-Token"]
        base = f"{api.url}/v1/{user.uuid}/c"
        for t in (tok, tok2):
            h = {"X-Auth-Token": t}
            assert requests.put(base, headers=h).status_code in (201, 202)
            assert requests.put(f"{base}/o", data=b"d" * 100, headers=h).status_code == 201
            assert requests.get(f"{base}/o?X-Auth-Token={t}").status_code == 200
        assert requests.get(f"{base}/o", headers={"X-Auth-Token": wrong}).status_code == 401
        assert api.call(svc.revoke_token(tok2))
        assert requests.get(f"{base}/o", headers={"X-Auth-Token": tok2}).status_code == 401
        with pytest.raises(Unauthorized):
            api.call(svc.authenticate(wrong))
    secrets = [tok, tok2, wrong]
    # Not the test's client (urllib3) nor the test server's access log (the API server
    # runs without one: pithos_gw.server.serve, access_log=None).
    server = [r for r in caplog.records if not r.name.startswith(("urllib3", "aiohttp.access"))]
    assert any(r.name.startswith("aiosqlite") for r in server), "the check would prove nothing"
    text = "\n".join(r.getMessage() + repr(r.args) for r in server)
    for s in secrets:
        assert s not in text
    files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert any(p.name == "control.db" for p in files)
    for p in files:
        data = p.read_bytes()
        for s in secrets:
            assert s.encode() not in data, f"a token in clear in {p}"
    assert token_hash(tok).encode() in (tmp_path / "control.db").read_bytes() + b"".join(
        p.read_bytes() for p in files if p.name == "control.db-wal")


async def test_pre_upload_check_never_refuses_on_a_stale_view(tmp_path: Path,
                                                              engine: list[str]) -> None:
    from archipelago.errors import QuotaExceeded
    from control.identity.service import GatewayQuota

    async with identity(tmp_path, engine) as (_, svc):
        clock = Clock()
        gq = GatewayQuota(svc, clock=clock)
        user, _ = await svc.add_user("gus")
        await svc.set_quota("gus", R, 1000)
        a = user.uuid
        await gq.check(a, 600)  # reads the database: room 1000, usage 0
        await gq.accept(await gq.issue(a, 600, "o1"))
        with pytest.raises(QuotaExceeded, match="usage 600"):
            await gq.check(a, 500)  # the view says over: read again, still over
        # Freed elsewhere (another process): the view still says 600, the database 0.
        await svc.set_usage(a, R, 0)
        await gq.check(a, 900)  # not refused on the stale view
        # Grown elsewhere: a stale view lets the upload through; the charge refuses it.
        await svc.set_usage(a, R, 950)
        await gq.check(a, 40)
        with pytest.raises(QuotaExceeded):
            await gq.issue(a, 100, "o2")
        clock.t += svc.settings.token_cache_ttl  # the view expires: read again
        with pytest.raises(QuotaExceeded, match="usage 950"):
            await gq.check(a, 100)


async def test_a_growth_held_back_by_a_precondition_is_given_back(tmp_path: Path) -> None:
    from control.identity.service import GatewayQuota
    from pithos_gw.quota import ChargedMetaStore

    async with identity(tmp_path) as (_, svc):
        user, _ = await svc.add_user("hal")
        a = user.uuid
        meta = ChargedMetaStore(tmp_path / "gateway.db", GatewayQuota(svc))
        await meta.open()
        try:
            await meta.container_put(a, "c", {}, {})

            def put(size: int, expect: int | None = None) -> Any:
                kw = {} if expect is None else {"expect": expect}
                return meta.object_put(a, "c", "x", size=size, hashes=[], hash=f"h{size}",
                                       checksum="", content_type="text/plain", meta={},
                                       modified_by=a, **kw)

            v = await put(100)
            assert await put(400, expect=v.serial + 1000) is None  # lost its precondition
            q = (await svc.user_quotas(a))[a][R]
            assert q["usage"] == 100 and q["pending"] == 0
            assert await svc.pending("pithos:") == []
            assert (await put(400, expect=v.serial)) is not None
            assert (await svc.user_quotas(a))[a][R]["usage"] == 400
        finally:
            await meta.close()
