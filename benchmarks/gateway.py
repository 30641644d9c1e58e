"""Gateway benchmark: Swift PUT/GET throughput, small-object req/s, hashmap "upload" time.

Starts a real gateway process (`python -m pithos_gw.server`, uvloop, file blocker in
a temporary data dir, by default on /dev/shm so the disk does not dominate) and drives
it with an aiohttp client in this process. ``--blocks`` picks how the gateway reaches
its blocks: ``direct`` (the gateway opens the file blocker itself, standalone
`archip gateway start`), ``peers`` (the gateway is the daemon's child,
`archip daemon start --gateway`: every block goes through the blocker peers over the
shared-memory segment) or ``both`` (default; one fresh data dir each):

- PUT then GET of ``--objects`` 64 MiB objects (distinct content), MiB/s;
- 4 KiB objects, 8 concurrent clients: PUT then GET of ``--small`` objects, req/s;
- a ``--hashmap-mib`` file (default 1 GiB) stored once by a streamed PUT, then the
  time to "upload" it again under a new name with PUT ?hashmap (only hashes travel).

The last lines are machine-readable, one per mode:

    gateway: put_mib_s=<x> get_mib_s=<y> small_req_s=<z>          (direct)
    gateway-peers: put_mib_s=<x> get_mib_s=<y> small_req_s=<z>    (through the peers)

(small_req_s is the mean of the small PUT and GET rates.)
Usage: .venv/bin/python benchmarks/gateway.py [--objects 4] [--small 2000] [--hashmap-mib 1024]

``--plugins-compare`` measures only the 4 KiB PUT/GET rates of the API server with no
control-plane plugins (``control.plugins=[]``) against the default one (identity: token
checks and quota charges), interleaved rounds, median [min-max] and the ratio.

Against a real OpenStack Swift, side by side: ``python -m benchmarks.swift_compare``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import uvloop

MiB = 1 << 20
BLOCK = 4 * MiB
#: The small-object size of the 4 KiB tests and how many clients run them at once.
SMALL = 4096
SMALL_CLIENTS = 8


def start_gateway(data_dir: Path, fsync: bool,
                  overrides: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """Start the API server as `archip gateway start` does, on its own blocker (not the
    daemon's peers; ``overrides``: more -o settings); returns it and its base URL."""
    cmd = [sys.executable, "-m", "control.host.apiserver", "--data-dir", str(data_dir),
           "--listen", "127.0.0.1:0", "--blocks", "direct",
           "-o", f"blocker.file.fsync={'true' if fsync else 'false'}"]
    for o in overrides:
        cmd += ["-o", o]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = data_dir / "run" / "gateway.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gateway failed: {proc.stderr.read().decode() if proc.stderr else ''}")
        if state.exists():
            return proc, json.loads(state.read_text())["url"]
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("gateway did not start")


def _archip(data_dir: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "control", "--data-dir", str(data_dir), *args],
                          check=True, capture_output=True, text=True, timeout=120).stdout


def start_daemon_gateway(data_dir: Path, fsync: bool) -> str:
    """Start a daemon running the gateway as its child (blocks through the peers); its URL."""
    _archip(data_dir, "-o", f"blocker.file.fsync={'true' if fsync else 'false'}",
            "-o", "gateway.listen=127.0.0.1:0", "daemon", "start", "--no-nbd", "--gateway")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            state = json.loads((data_dir / "run" / "gateway.json").read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
            continue
        if state.get("blocks") != "peers":
            raise SystemExit(f"the daemon's gateway uses {state.get('blocks')} blocks")
        return str(state["url"])
    raise SystemExit("the daemon's gateway did not start")


def stop_daemon(data_dir: Path) -> None:
    """`archip daemon stop` (stops the gateway child too)."""
    _archip(data_dir, "daemon", "stop")


def add_user(data_dir: Path, name: str = "bench", overrides: tuple[str, ...] = ()) -> str:
    """Create the benchmark user; returns its key."""
    opts = [a for o in overrides for a in ("-o", o)]
    out = subprocess.run([sys.executable, "-m", "control", "--data-dir", str(data_dir), *opts,
                          "gateway", "user", "add", name], check=True, capture_output=True,
                         text=True)
    return out.stdout.strip()


def blocks_of(seed: int, size: int, base: bytes) -> list[bytes]:
    """Distinct 4 MiB blocks (a counter stamped on a random base) covering ``size``."""
    out = []
    for i in range(0, size, BLOCK):
        stamp = f"{seed}:{i}:".encode()
        out.append(stamp + base[len(stamp) : min(BLOCK, size - i)])
    return out


async def stream(parts: list[bytes]) -> AsyncIterator[bytes]:
    """Chunked request body from a list of parts."""
    for p in parts:
        yield p


async def login(s: aiohttp.ClientSession, url: str, user: str, key: str) -> tuple[str, str]:
    """(storage URL, token) by v1 auth."""
    async with s.get(f"{url}/auth/v1.0", headers={"X-Auth-User": user, "X-Auth-Key": key}) as r:
        assert r.status in (200, 204), r.status
        return r.headers["X-Storage-Url"], r.headers["X-Auth-Token"]


def small_bodies(base: bytes, n: int = 64) -> list[bytes]:
    """``n`` distinct 4 KiB object bodies (16 random bytes ahead of ``base``)."""
    return [os.urandom(16) + base[: SMALL - 16] for _ in range(n)]


async def small_objects(s: aiohttp.ClientSession, h: dict[str, str], method: str,
                        names: list[str], bodies: list[bytes]) -> None:
    """PUT (``method`` "put") or GET every one of ``names`` from SMALL_CLIENTS concurrent
    clients; each checks its answer (201, or SMALL bytes back)."""

    async def client(k: int) -> None:
        for i in range(k, len(names), SMALL_CLIENTS):
            if method == "put":
                async with s.put(names[i], data=bodies[i % len(bodies)], headers=h) as r:
                    assert r.status == 201
            else:
                async with s.get(names[i], headers=h) as r:
                    assert len(await r.read()) == SMALL

    await asyncio.gather(*(client(k) for k in range(SMALL_CLIENTS)))


async def run(url: str, key: str, args: argparse.Namespace) -> dict[str, float]:
    """All measurements; returns the numbers by name."""
    base = os.urandom(BLOCK)
    res: dict[str, float] = {}
    conn = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=conn) as s:
        acct, token = await login(s, url, "bench", key)
        h = {"X-Auth-Token": token}
        async with s.put(f"{acct}/b", headers=h) as r:
            assert r.status in (201, 202), r.status
        objs = [blocks_of(n, 64 * MiB, base) for n in range(args.objects)]
        t0 = time.perf_counter()
        for n, parts in enumerate(objs):
            async with s.put(f"{acct}/b/big{n}", data=stream(parts), headers=h) as r:
                assert r.status == 201, await r.text()
        res["put_mib_s"] = args.objects * 64 / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for n in range(args.objects):
            got = 0
            async with s.get(f"{acct}/b/big{n}", headers=h) as r:
                async for chunk in r.content.iter_chunked(1 << 20):
                    got += len(chunk)
            assert got == 64 * MiB
        res["get_mib_s"] = args.objects * 64 / (time.perf_counter() - t0)

        bodies = small_bodies(base)
        names = [f"{acct}/b/small/{i}" for i in range(args.small)]
        for method in ("put", "get"):
            t0 = time.perf_counter()
            await small_objects(s, h, method, names, bodies)
            res[f"small_{method}_req_s"] = args.small / (time.perf_counter() - t0)

        size = args.hashmap_mib * MiB
        parts = blocks_of(10_000, size, base)
        t0 = time.perf_counter()
        async with s.put(f"{acct}/b/huge", data=stream(parts), headers=h) as r:
            assert r.status == 201
        res["huge_put_s"] = time.perf_counter() - t0
        async with s.get(f"{acct}/b/huge?hashmap&format=json", headers=h) as r:
            hashmap = await r.read()
        t0 = time.perf_counter()
        async with s.put(f"{acct}/b/huge-again?hashmap&format=json", data=hashmap,
                         headers={**h, "Content-Type": "application/json"}) as r:
            assert r.status == 201, await r.text()
        res["hashmap_upload_s"] = time.perf_counter() - t0
        res["hashmap_bytes"] = len(hashmap)
    return res


class Server:
    """One gateway under test: "direct" (its own process) or "peers" (a daemon's child)."""

    def __init__(self, mode: str, args: argparse.Namespace) -> None:
        self.mode = mode
        self.data_dir = Path(tempfile.mkdtemp(prefix="gw-bench-", dir=args.dir))
        self.proc: subprocess.Popen[bytes] | None = None
        self.daemon = False
        self.key = add_user(self.data_dir)
        if mode == "peers":
            self.daemon = True
            self.url = start_daemon_gateway(self.data_dir, args.fsync)
        else:
            self.proc, self.url = start_gateway(self.data_dir, args.fsync)

    def stop(self) -> None:
        """Stop the gateway (and the daemon) and remove the data dir."""
        try:
            if self.proc is not None:
                self.proc.terminate()
                self.proc.wait(30)
            if self.daemon:
                stop_daemon(self.data_dir)
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)


#: --plugins-compare: label -> the API server's -o overrides.
PLUGIN_SETS = {"no plugins": ("control.plugins=[]",), "identity": ()}


async def small_round(url: str, key: str, n: int, tag: str) -> dict[str, float]:
    """PUT then GET ``n`` fresh 4 KiB objects (new names: every PUT is a charged create)."""
    res: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as s:
        acct, token = await login(s, url, "bench", key)
        h = {"X-Auth-Token": token}
        async with s.put(f"{acct}/s", headers=h) as r:
            assert r.status in (201, 202), r.status
        names = [f"{acct}/s/{tag}/{i}" for i in range(n)]
        bodies = small_bodies(os.urandom(SMALL))
        for method in ("put", "get"):
            t0 = time.perf_counter()
            await small_objects(s, h, method, names, bodies)
            res[method] = n / (time.perf_counter() - t0)
    return res


def compare_plugins(args: argparse.Namespace) -> int:
    """4 KiB PUT/GET req/s with no plugins vs identity, interleaved rounds."""
    servers: dict[str, tuple[Path, subprocess.Popen[bytes], str, str]] = {}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in PLUGIN_SETS}
    load0 = os.getloadavg()
    try:
        for label, ov in PLUGIN_SETS.items():
            d = Path(tempfile.mkdtemp(prefix="gw-bench-", dir=args.dir))
            key = add_user(d, overrides=ov)
            proc, url = start_gateway(d, args.fsync, ov)
            servers[label] = (d, proc, url, key)
        for i in range(args.repeat):
            order = list(servers) if i % 2 == 0 else list(reversed(servers))
            for label in order:
                _, _, url, key = servers[label]
                runs[label].append(uvloop.run(small_round(url, key, args.small, f"r{i}")))
    finally:
        for d, proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(30)
            shutil.rmtree(d, ignore_errors=True)
    load1 = os.getloadavg()

    def stat(label: str, m: str) -> tuple[float, float, float]:
        xs = [r[m] for r in runs[label]]
        return statistics.median(xs), min(xs), max(xs)

    print(f"4 KiB objects, {SMALL_CLIENTS} clients, {args.small} per round, "
          f"{args.repeat} interleaved rounds; load average {load0[0]:.2f} -> {load1[0]:.2f}")
    base = next(iter(PLUGIN_SETS))
    for m in ("put", "get"):
        for label in PLUGIN_SETS:
            med, lo, hi = stat(label, m)
            ratio = stat(base, m)[0] / med
            print(f"{m.upper()} {label:>10}: {med:7.0f} [{lo:.0f}-{hi:.0f}] req/s"
                  + ("" if label == base else f"  ({ratio:.2f}x slower than {base})"))
    return 0


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """Best of the repeats (rates: highest; times: lowest): the least disturbed run."""
    return {k: (min if k.endswith("_s") and not k.endswith("mib_s") and "req_s" not in k
                else max)(r[k] for r in runs) for k in runs[0]}


def main() -> int:
    """Run the benchmark and print the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=4, help="64 MiB objects to PUT and GET")
    p.add_argument("--small", type=int, default=2000, help="4 KiB objects to PUT and GET")
    p.add_argument("--hashmap-mib", type=int, default=1024, help="size of the hashmap file")
    p.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                   help="where the temporary data dirs go")
    p.add_argument("--fsync", action="store_true", help="fsync blocks (default off)")
    p.add_argument("--blocks", choices=("direct", "peers", "both"), default="both",
                   help="gateway opens the blocker itself, goes through the daemon, or both")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds, the modes interleaved; the best round of each is reported")
    p.add_argument("--plugins-compare", action="store_true",
                   help="only 4 KiB PUT/GET: no plugins vs identity, median of --repeat rounds")
    args = p.parse_args()
    if args.plugins_compare:
        return compare_plugins(args)
    modes = ["direct", "peers"] if args.blocks == "both" else [args.blocks]
    servers: list[Server] = []
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    try:
        for m in modes:
            servers.append(Server(m, args))
        for _ in range(args.repeat):
            for srv in servers:
                runs[srv.mode].append(uvloop.run(run(srv.url, srv.key, args)))
    finally:
        for srv in servers:
            srv.stop()
    results = {m: best(r) for m, r in runs.items()}
    for mode, res in results.items():
        print(f"-- blocks {mode} (best of {args.repeat})")
        print(f"PUT 64 MiB objects:  {res['put_mib_s']:8.1f} MiB/s")
        print(f"GET 64 MiB objects:  {res['get_mib_s']:8.1f} MiB/s")
        print(f"4 KiB PUT, 8 clients: {res['small_put_req_s']:7.0f} req/s")
        print(f"4 KiB GET, 8 clients: {res['small_get_req_s']:7.0f} req/s")
        print(f"{args.hashmap_mib} MiB streamed PUT: {res['huge_put_s']:.2f} s; "
              f"same file via hashmap: {res['hashmap_upload_s'] * 1000:.1f} ms "
              f"({res['hashmap_bytes'] / 1024:.1f} KiB of hashes)")
    for mode, res in results.items():
        small = (res["small_put_req_s"] + res["small_get_req_s"]) / 2
        name = "gateway" if mode == "direct" else "gateway-peers"
        print(f"{name}: put_mib_s={res['put_mib_s']:.1f} get_mib_s={res['get_mib_s']:.1f} "
              f"small_req_s={small:.0f} huge_put_s={res['huge_put_s']:.2f} "
              f"hashmap_upload_ms={res['hashmap_upload_s'] * 1000:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
