"""The gateway's own v1 users: keys are stored only as their sha256, and an older
database's plain keys are hashed by the migration (non-negotiable 5: credentials hashed)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from archipelago.errors import Unauthorized
from pithos_gw.hooks import LegacyAuth
from pithos_gw.meta import MetaStore


def _rows(db: Path) -> dict[str, str]:
    eng = sa.create_engine(f"sqlite:///{db}")
    with eng.connect() as c:
        rows = dict(c.execute(sa.text("SELECT account, key FROM users")).all())
    eng.dispose()
    return rows


def test_keys_are_stored_hashed_and_still_log_in(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"

    async def go() -> None:
        meta = MetaStore(db)
        await meta.open()
        try:
            key = await meta.user_add("alice")
            stored = _rows(db)["alice"]
            assert key not in stored and stored == hashlib.sha256(key.encode()).hexdigest()
            auth = LegacyAuth(meta)
            assert await auth.login_v1("alice", key, None) == ("alice", key)
            assert await auth.login_v1("alice:alice", key, None) == ("alice", key)
            assert await auth.authenticate(key, None) == "alice"
            for bad in (stored, key + "x", ""):  # the stored hash is no credential
                with pytest.raises(Unauthorized):
                    await auth.login_v1("alice", bad, None)
                with pytest.raises(Unauthorized):
                    await auth.authenticate(bad, None)
        finally:
            await meta.close()

    asyncio.run(go())


def test_migration_hashes_the_plain_keys_of_an_older_database(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"

    async def make_old() -> None:  # a database at gateway_0001 with a plain key
        meta = MetaStore(db)
        await meta.open()
        await meta.close()

    asyncio.run(make_old())
    eng = sa.create_engine(f"sqlite:///{db}")
    with eng.begin() as c:
        c.execute(sa.text("INSERT INTO users VALUES ('bob', 'plain-old-key', 0)"))
        c.execute(sa.text("UPDATE gateway_alembic_version SET version_num = 'gateway_0001'"))
    eng.dispose()

    async def reopen() -> None:
        meta = MetaStore(db)
        await meta.open()  # migrates to head
        try:
            assert _rows(db)["bob"] == hashlib.sha256(b"plain-old-key").hexdigest()
            assert await LegacyAuth(meta).login_v1("bob", "plain-old-key", None) == (
                "bob", "plain-old-key")
        finally:
            await meta.close()

    asyncio.run(reopen())
