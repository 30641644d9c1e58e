"""Gateway metadata benchmark: 4 KiB PUT and GET rates (8 clients) with the metadata on
SQLite (the default, DATA_DIR/gateway.db) and on PostgreSQL ([database] url), same run.

The standalone gateway process (file blocker without fsync under --dir, /dev/shm by
default) is started once per engine, with a fresh account. PostgreSQL comes from
``--pg-url`` or $ARCHIPELAGO_PG_URL, else this benchmark starts a throwaway server of its
own (testbed/pg_cluster.py: Debian's PostgreSQL 15, unix socket only) and stops it after;
``--no-pg`` runs SQLite only. The objects of the PostgreSQL run stay in that database.

Last lines, machine-readable:

    gateway-db: engine=sqlite put_req_s=<x> get_req_s=<y>
    gateway-db: engine=postgresql put_req_s=<x> get_req_s=<y>

Usage: .venv/bin/python -m benchmarks.gateway_db [--small 2000] [--pg-url URL] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import uvloop

from benchmarks.gateway import add_user, start_gateway

CLIENTS = 8


async def rates(url: str, account: str, key: str, n: int) -> dict[str, float]:
    """PUT then GET ``n`` 4 KiB objects with 8 concurrent clients: req/s of each."""
    h = {"X-Auth-Token": key}
    base = f"{url}/v1/{account}/b"
    data = [os.urandom(4096) for _ in range(64)]
    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as s:
        async with s.put(base, headers=h) as r:
            assert r.status in (201, 202), r.status
        for method in ("PUT", "GET"):
            async def worker(k: int, method: str = method) -> None:
                for i in range(k, n, CLIENTS):
                    if method == "PUT":
                        async with s.put(f"{base}/o{i}", data=data[i % 64], headers=h) as r:
                            assert r.status == 201, r.status
                    else:
                        async with s.get(f"{base}/o{i}", headers=h) as r:
                            assert r.status == 200 and len(await r.read()) == 4096

            t0 = time.perf_counter()
            await asyncio.gather(*[worker(k) for k in range(CLIENTS)])
            out[f"{method.lower()}_req_s"] = n / (time.perf_counter() - t0)
    return out


def one(engine: str, pg_url: str, args: argparse.Namespace) -> dict[str, float]:
    """One round on one engine: a fresh data dir, gateway process and account."""
    data_dir = Path(tempfile.mkdtemp(prefix="gw-db-bench-", dir=args.dir))
    # The v1 users of the gateway itself (no identity plugin): the standalone gateway.
    overrides = ("control.plugins=[]",) + ((f"database.url={pg_url}",) if engine == "postgresql"
                                           else ())
    account = f"bench-{uuid.uuid4().hex[:8]}"
    proc = None
    try:
        key = add_user(data_dir, account, overrides)
        proc, url = start_gateway(data_dir, False, overrides)
        return uvloop.run(rates(url, account, key, args.small))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> int:
    """Run the benchmark and print the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=2000, help="4 KiB objects to PUT and GET")
    p.add_argument("--pg-url", default=os.environ.get("ARCHIPELAGO_PG_URL", ""),
                   help="PostgreSQL URL (default $ARCHIPELAGO_PG_URL, else a throwaway server)")
    p.add_argument("--no-pg", action="store_true", help="SQLite only")
    p.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                   help="where the temporary data dirs go")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds, the engines interleaved; the best round of each is reported")
    args = p.parse_args()
    engines = ["sqlite"] + ([] if args.no_pg else ["postgresql"])
    runs: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
    server = None
    if not args.no_pg and not args.pg_url:
        from testbed import pg_cluster

        server = Path(tempfile.mkdtemp(prefix="gw-db-bench-pg-"))
        args.pg_url = pg_cluster.up(server, watch_pid=os.getpid())
    try:
        for _ in range(args.repeat):
            for e in engines:
                runs[e].append(one(e, args.pg_url, args))
    finally:
        if server is not None:
            pg_cluster.down(server)
            shutil.rmtree(server, ignore_errors=True)
    for e, rs in runs.items():
        put = max(r["put_req_s"] for r in rs)
        get = max(r["get_req_s"] for r in rs)
        print(f"gateway-db: engine={e} put_req_s={put:.0f} get_req_s={get:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
