"""The gateway's metadata on PostgreSQL (the session's throwaway server, $ARCHIPELAGO_PG_URL):
the same schema as on SQLite, two gateways sharing one database and one block store,
concurrent writers of one name, race-free preconditions, 503 during an outage and success
after it, `archip db copy` from an instance's SQLite files."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from gw_helpers import GatewayThread, file_blocker
from pg_helpers import fresh_database, pg_url_or_skip, private_server, run_cluster

from archipelago.db import sqlite_url
from archipelago.errors import BackendUnavailable
from pithos_gw.meta import MetaStore
from pithos_gw.meta_tables import metadata

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def pg() -> Iterator[str]:
    """A fresh empty database on the session's server."""
    with fresh_database(pg_url_or_skip()) as url:
        yield url


async def _diff(url: str) -> list[object]:
    meta = MetaStore(url)
    try:
        await meta.open()
        names = set(metadata.tables)

        def q(conn: sa.Connection) -> list[object]:
            ctx = MigrationContext.configure(conn, opts={
                "include_name": lambda n, kind, _p: kind != "table" or n in names})
            return list(compare_metadata(ctx, metadata))

        async with meta.db.read() as conn:
            return list(await conn.run_sync(q))
    finally:
        await meta.close()


def test_migrations_create_exactly_the_tables_on_both_engines(pg: str, tmp_path: Path) -> None:
    assert asyncio.run(_diff(pg)) == []
    assert asyncio.run(_diff(sqlite_url(tmp_path / "g.db"))) == []


def _put(meta: MetaStore, name: str, size: int, **kw: object) -> object:
    return meta.object_put("acc", "c", name, size=size, hashes=[], hash=f"h{size}",
                           checksum="", content_type="text/plain", meta={},
                           modified_by="acc", **kw)


async def _two_hosts(url: str) -> tuple[MetaStore, MetaStore]:
    a, b = MetaStore(url), MetaStore(url)
    await asyncio.gather(a.open(), b.open())  # two servers starting together
    await a.container_put("acc", "c", {}, {})
    return a, b


def test_concurrent_writers_of_one_name_all_recorded_later_current(pg: str) -> None:
    async def go() -> None:
        a, b = await _two_hosts(pg)
        try:
            done = await asyncio.gather(*[_put(a if i % 2 else b, "x", i) for i in range(8)])
            serials = sorted(v.serial for v in done)  # type: ignore[attr-defined]
            assert len(set(serials)) == 8
            history = await b.versions("acc", "c", "x")
            assert [s for s, _ in history] == serials
            cur = await a.object_get("acc", "c", "x")
            assert cur is not None and cur.serial == serials[-1]
            assert [o.name for o in await b.object_list("acc", "c")] == ["x"]
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_create_only_precondition_lets_exactly_one_writer_in(pg: str) -> None:
    async def go() -> None:
        a, b = await _two_hosts(pg)
        try:
            done = await asyncio.gather(*[_put(a if i % 2 else b, "y", i, expect=0)
                                          for i in range(8)])
            won = [v for v in done if v is not None]
            assert len(won) == 1
            assert len(await a.versions("acc", "c", "y")) == 1
            cur = await b.object_get("acc", "c", "y")
            assert cur is not None and cur.serial == won[0].serial  # type: ignore[attr-defined]
            # If-Match on that version: one of two concurrent updates wins, the other is told.
            both = await asyncio.gather(_put(a, "y", 100, expect=cur.serial),
                                        _put(b, "y", 200, expect=cur.serial))
            assert sum(v is not None for v in both) == 1
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


@pytest.fixture
def two_gateways(pg: str, tmp_path: Path) -> Iterator[tuple[GatewayThread, GatewayThread]]:
    blocks = file_blocker(tmp_path / "blocks")  # one store, as one Ceph pool for two hosts
    a = GatewayThread(blocks, pg).start()  # type: ignore[arg-type]
    b = GatewayThread(blocks, pg).start()  # type: ignore[arg-type]
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_two_gateways_share_accounts_containers_and_objects(
        two_gateways: tuple[GatewayThread, GatewayThread]) -> None:
    a, b = two_gateways
    key = a.add_user("ann")
    h = {"X-Auth-Token": key}
    base_a, base_b = f"{a.url}/v1/ann", f"{b.url}/v1/ann"
    assert requests.put(f"{base_a}/c", headers=h, timeout=30).status_code == 201
    assert requests.put(f"{base_a}/c/o", data=b"from A", headers=h, timeout=30).status_code == 201
    assert requests.get(f"{base_b}/c", headers=h, timeout=30).text.split() == ["o"]
    assert requests.get(f"{base_b}/c/o", headers=h, timeout=30).content == b"from A"
    assert requests.put(f"{base_b}/c/o", data=b"from B", headers=h, timeout=30).status_code == 201
    assert requests.get(f"{base_a}/c/o", headers=h, timeout=30).content == b"from B"
    r = requests.put(f"{base_b}/c/o", data=b"x", headers={**h, "If-None-Match": "*"}, timeout=30)
    assert r.status_code == 412
    assert requests.delete(f"{base_b}/c/o", headers=h, timeout=30).status_code == 204
    assert requests.get(f"{base_a}/c/o", headers=h, timeout=30).status_code == 404
    assert requests.head(base_a, headers=h, timeout=30).headers["X-Account-Bytes-Used"] == "0"


def test_outage_is_503_and_service_resumes_after(tmp_path: Path) -> None:
    with private_server() as (d, url):
        g = GatewayThread(file_blocker(tmp_path / "blocks"), url).start()  # type: ignore[arg-type]
        try:
            key = g.add_user("ola")
            h = {"X-Auth-Token": key}
            base = f"{g.url}/v1/ola"
            assert requests.put(f"{base}/c", headers=h, timeout=30).status_code == 201
            assert requests.put(f"{base}/c/a", data=b"before", headers=h,
                                timeout=30).status_code == 201
            assert run_cluster("stop", str(d)).returncode == 0
            # The token is cached (users are never deleted): the metadata read fails.
            assert requests.get(f"{base}/c/a", headers=h, timeout=60).status_code == 503
            assert requests.put(f"{base}/c/b", data=b"during", headers=h,
                                timeout=60).status_code == 503
            with pytest.raises(BackendUnavailable):
                g.call(_get(g))
            assert run_cluster("start", str(d)).returncode == 0
            assert requests.get(f"{base}/c/a", headers=h, timeout=60).content == b"before"
            assert requests.put(f"{base}/c/b", data=b"after", headers=h,
                                timeout=60).status_code == 201
            assert requests.get(f"{base}/c", headers=h, timeout=60).text.split() == ["a", "b"]
        finally:
            g.stop()


async def _get(g: GatewayThread) -> object:
    from pithos_gw.common import META

    return await g.app[META].object_get("ola", "c", "a")


def test_restart_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """4 writers keep uploading while the server stops (clean), stays down and comes back:
    every reply is 201 or 503, and every 201 reads back afterwards."""
    with private_server() as (d, url):
        g = GatewayThread(file_blocker(tmp_path / "blocks"), url).start()  # type: ignore[arg-type]
        try:
            h = {"X-Auth-Token": g.add_user("lou")}
            base = f"{g.url}/v1/lou/c"
            assert requests.put(base, headers=h, timeout=30).status_code == 201
            acked: dict[str, bytes] = {}
            statuses: set[int] = set()
            lock = threading.Lock()
            phase = {"restarted": False}
            seen_ok, seen_503, ok_after, stop = (threading.Event() for _ in range(4))

            def writer(k: int) -> None:
                with requests.Session() as s:
                    i = 0
                    while not stop.is_set():
                        name, body = f"w{k}-{i}", f"{k}/{i}".encode() * 100
                        i += 1
                        st = s.put(f"{base}/{name}", data=body, headers=h, timeout=60).status_code
                        with lock:
                            statuses.add(st)
                            if st == 201:
                                acked[name] = body
                                (ok_after if phase["restarted"] else seen_ok).set()
                            elif st == 503:
                                seen_503.set()

            threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            try:
                assert seen_ok.wait(60)
                assert run_cluster("stop", str(d)).returncode == 0
                assert seen_503.wait(60)
                assert run_cluster("start", str(d)).returncode == 0
                with lock:
                    phase["restarted"] = True
                assert ok_after.wait(60)
            finally:
                stop.set()
                for t in threads:
                    t.join(120)
            assert statuses <= {201, 503}, statuses
            for name, body in acked.items():
                assert requests.get(f"{base}/{name}", headers=h, timeout=30).content == body
        finally:
            g.stop()


def test_db_copy_moves_an_instance_into_postgresql(pg: str, tmp_path: Path) -> None:
    inst = tmp_path / "inst"
    inst.mkdir(mode=0o700)

    async def fill() -> None:
        meta = MetaStore(inst / "gateway.db")
        await meta.open()
        await meta.container_put("acc", "c", {"k": "v"}, {})
        for i in range(3):
            await _put(meta, "o", i)
        await meta.close()

    asyncio.run(fill())
    archip = [sys.executable, "-m", "control", "--data-dir", str(inst)]
    p = subprocess.run([*archip, "db", "copy", "--to", pg], capture_output=True, text=True,
                       timeout=120, check=False, env={**os.environ, "ARCHIPELAGO_CONFIG": ""})
    assert p.returncode == 0, p.stderr
    assert "versions" in p.stdout

    async def check() -> None:
        meta = MetaStore(pg)
        try:
            await meta.open()
            c = await meta.container_get("acc", "c")
            assert c is not None and c.meta == {"k": "v"} and c.bytes == 2
            assert len(await meta.versions("acc", "c", "o")) == 3
            v = await _put(meta, "o", 9)  # the serial sequence continues past the copy
            assert v.serial == 4  # type: ignore[attr-defined]
        finally:
            await meta.close()

    asyncio.run(check())
    again = subprocess.run([*archip, "db", "copy", "--to", pg], capture_output=True, text=True,
                           timeout=120, check=False)
    assert again.returncode != 0 and "not empty" in again.stderr
