"""The compute plugin's Alembic branch creates exactly its tables (SQLite here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from control.compute import tables
from control.host.db import Database
from control.host.migrate import Migrator, schema_diff


async def test_migrations_create_exactly_the_tables(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    try:
        m = Migrator({"compute": "control.compute.versions"}, [])
        await m.upgrade(db)
        await m.upgrade(db)  # idempotent
        assert await schema_diff(db, tables.metadata) == []
        st = await m.status(db)
        assert st["compute"]["current"] == st["compute"]["head"] == "compute_0003"
    finally:
        await db.close()


async def test_0002_adds_boot_files_to_existing_disks(tmp_path: Path) -> None:
    """A database at compute_0001 with disks upgrades in place (rows kept, boot files NULL)
    and downgrades back."""
    import sqlalchemy as sa
    from alembic import command

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    try:
        m = Migrator({"compute": "control.compute.versions"}, [])

        def to(rev: str, fn: Any = command.upgrade) -> Callable[[Any], None]:
            def run(conn: Any) -> None:
                m._run(conn, command.upgrade, "host@head")
                m._run(conn, fn, rev)
            return run

        await db.run_sync(to("compute_0001"))
        async with db.begin() as conn:
            await conn.execute(sa.text(
                "INSERT INTO compute_disks (user_id, volume, node, size, source_type, "
                "delete_on_termination, charged) VALUES ('u', 'v', 'd0', 1, 'image', 1, 1)"))
        await m.upgrade(db)
        async with db.read() as conn:
            rows = (await conn.execute(sa.select(tables.disks))).all()
        assert [(r.volume, r.kernel_image, r.ramdisk_image) for r in rows] == [("v", None, None)]
        await db.run_sync(to("compute_0001", command.downgrade))
        async with db.read() as conn:
            res = await conn.execute(sa.text("SELECT * FROM compute_disks"))
            cols, rows = list(res.keys()), res.all()
        assert "kernel_image" not in cols and [r.volume for r in rows] == ["v"]
    finally:
        await db.close()


async def test_0003_adds_networks_and_ports_and_downgrades(tmp_path: Path) -> None:
    """compute_0002 with a server upgrades to 0003 (rows kept, the two tables made and
    usable with their unique address per network) and downgrades back."""
    import sqlalchemy as sa
    from alembic import command
    from sqlalchemy.exc import IntegrityError

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    try:
        m = Migrator({"compute": "control.compute.versions"}, [])

        def to(rev: str, fn: Any = command.upgrade) -> Callable[[Any], None]:
            def run(conn: Any) -> None:
                m._run(conn, command.upgrade, "host@head")
                m._run(conn, fn, rev)
            return run

        await db.run_sync(to("compute_0002"))
        async with db.begin() as conn:
            await conn.execute(sa.text(
                "INSERT INTO compute_flavors (name, vcpus, ram, disk, created_at) "
                "VALUES ('f', 1, 256, 1, 0)"))
            await conn.execute(sa.text(
                "INSERT INTO compute_servers (id, name, user_id, flavor_id, status, "
                "kernel_args, fault, created_at, updated_at) "
                "VALUES ('s1', 's', 'u', 1, 'STOPPED', '', '', 0, 0)"))
        await m.upgrade(db)
        assert await schema_diff(db, tables.metadata) == []
        async with db.begin() as conn:
            await conn.execute(tables.networks.insert().values(
                id=1, name="n", user_id="u", cidr="10.0.0.0/24", gateway="10.0.0.1",
                public=False, created_at=0))
            await conn.execute(tables.ports.insert().values(
                network_id=1, user_id="u", server_id="s1", mac="02:00:00:00:00:01",
                ip="10.0.0.2", firewall="ENABLED", created_at=0))
        try:
            async with db.begin() as conn:
                await conn.execute(tables.ports.insert().values(
                    network_id=1, user_id="u", server_id="s1", mac="02:00:00:00:00:02",
                    ip="10.0.0.2", firewall="ENABLED", created_at=0))
            raise AssertionError("a second port got the same address")
        except IntegrityError:
            pass
        await db.run_sync(to("compute_0002", command.downgrade))
        async with db.read() as conn:
            names = set((await conn.execute(sa.text(
                "SELECT name FROM sqlite_master WHERE type='table'"))).scalars())
            sids = (await conn.execute(sa.text("SELECT id FROM compute_servers"))).scalars().all()
        assert "compute_networks" not in names and "compute_ports" not in names
        assert sids == ["s1"]
    finally:
        await db.close()
