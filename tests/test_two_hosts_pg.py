"""Acceptance of the shared metadata store: two API servers (two instances standing for two
hosts, each a daemon on the rados backend with its gateway child) on one PostgreSQL
database and one Ceph pool. Needs $ARCHIPELAGO_CEPH_CONF and $ARCHIPELAGO_PG_URL
(scripts/test.sh starts both).

- upload through A; list, read, overwrite and delete through B;
- a Plankton image registered on A becomes a volume created and read on B: a thin clone,
  no content block copied;
- 8 clients across both servers writing, copying and deleting the same names: every
  acknowledged write is one recorded version, the final state is the replay of that
  history in serial order, and quota usage equals the stored bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
import sqlalchemy as sa
from pg_helpers import fresh_database, pg_url_or_skip

from archipelago.client import Client
from archipelago.hashing import BLOCK_SIZE
from pithos_gw.meta import MetaStore
from pithos_gw.meta_tables import DELETED
from pithos_gw.meta_tables import versions as v
from testbed.ceph import purge
from tests.daemon_helpers import Daemon, wait_gateway_status
from tests.rados_daemon_helpers import POOL, ceph_conf

pytestmark = [pytest.mark.rados, pytest.mark.timeout(600)]
MiB = 1 << 20


@dataclass
class Host:
    """One instance: its daemon and its API server's URL."""

    d: Daemon
    url: str


@dataclass
class Two:
    a: Host
    b: Host
    db_url: str
    conf: str
    ns: str
    token: str
    account: str

    def h(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token}


def _content_objects(conf: str, ns: str) -> set[str]:
    """Content blocks in the namespace (named by their 64-hex-digit hash)."""
    import rados

    cl = rados.Rados(conffile=conf)
    cl.connect(timeout=10)
    try:
        io = cl.open_ioctx(POOL)
        io.set_namespace(ns)
        names = {o.key for o in io.list_objects()}
        io.close()
    finally:
        cl.shutdown()
    return {n for n in names if len(n) == 64 and all(c in "0123456789abcdef" for c in n)}


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Two]:
    conf = ceph_conf()
    with fresh_database(pg_url_or_skip()) as db_url:
        ns = f"two-{uuid.uuid4().hex[:8]}"
        hosts: list[Daemon] = []
        try:
            for name in ("a", "b"):
                d = Daemon(tmp_path_factory.mktemp(name),
                           ["gateway.listen=127.0.0.1:0", f"database.url={db_url}"])
                hosts.append(d)
                d.archip("daemon", "start", "--no-nbd", "--json", "--gateway", "--backend",
                         "rados", "--ceph-conf", conf, "--pool", POOL, "--namespace", ns,
                         check=True)
            a, b = (Host(d, str(wait_gateway_status(d)["url"])) for d in hosts)
            token = hosts[0].archip("gateway", "user", "add", "alice", check=True).out.strip()
            r = requests.get(f"{b.url}/auth/v1.0", timeout=30,
                             headers={"X-Auth-User": "alice", "X-Auth-Key": token})
            assert r.status_code in (200, 204), r.text  # B knows A's user: one database
            account = r.headers["X-Storage-Url"].rsplit("/", 1)[1]
            yield Two(a, b, db_url, conf, ns, token, account)
        finally:
            for d in hosts:
                d.stop()
            purge(conf, ns, POOL)


def test_upload_on_a_list_read_overwrite_delete_on_b(two: Two) -> None:
    h = two.h()
    a, b = f"{two.a.url}/v1/{two.account}", f"{two.b.url}/v1/{two.account}"
    assert requests.put(f"{a}/c", headers=h, timeout=30).status_code in (201, 202)
    data = random.Random(1).randbytes(5 * MiB + 17)
    assert requests.put(f"{a}/c/o", data=data, headers=h, timeout=60).status_code == 201
    assert requests.get(f"{b}/c", headers=h, timeout=30).text.split() == ["o"]
    assert requests.get(f"{b}/c/o", headers=h, timeout=60).content == data
    assert requests.put(f"{b}/c/o", data=b"new", headers=h, timeout=30).status_code == 201
    assert requests.get(f"{a}/c/o", headers=h, timeout=30).content == b"new"
    assert requests.delete(f"{b}/c/o", headers=h, timeout=30).status_code == 204
    assert requests.get(f"{a}/c/o", headers=h, timeout=30).status_code == 404
    assert requests.get(f"{a}/c", headers=h, timeout=30).status_code == 204  # empty


def test_image_registered_on_a_is_a_thin_clone_volume_on_b(two: Two) -> None:
    h = two.h()
    r = random.Random(2)
    data = r.randbytes(BLOCK_SIZE) + bytes(BLOCK_SIZE) + r.randbytes(MiB + 123)
    base = f"{two.a.url}/v1/{two.account}"
    assert requests.put(f"{base}/images", headers=h, timeout=30).status_code in (201, 202)
    assert requests.put(f"{base}/images/disk.raw", data=data, headers=h,
                        timeout=60).status_code == 201
    reg = requests.post(f"{two.a.url}/image/v1.0/images", timeout=30, headers={
        **h, "X-Image-Meta-Name": "disk.raw",
        "X-Image-Meta-Location": f"pithos://{two.account}/images/disk.raw"})
    assert reg.status_code in (200, 201), reg.text
    image = reg.json()["image"]["id"]
    blocks = _content_objects(two.conf, two.ns)
    info = two.b.d.archip("--json", "volume", "create", "--from-image", image, "vm-b",
                          check=True).json()
    size = -(-len(data) // 512) * 512
    assert info["size"] == size
    assert _content_objects(two.conf, two.ns) == blocks  # no content block copied
    with Client.connect(two.b.d.data_dir) as c, c.open("vm-b") as v:
        assert hashlib.sha256(bytes(v.read(0, size))).digest() == hashlib.sha256(
            data + bytes(size - len(data))).digest()


def test_eight_clients_across_both_servers_match_a_serial_replay(two: Two) -> None:
    h = two.h()
    names = ["n0", "n1", "n2"]
    bases = [f"{srv.url}/v1/{two.account}/race" for srv in (two.a, two.b)]
    assert requests.put(bases[0], headers=h, timeout=30).status_code in (201, 202)
    payloads: dict[bytes, bytes] = {}
    acked = {n: {"writes": 0, "deletes": 0} for n in names}
    lock = threading.Lock()
    errors: list[str] = []

    def client(k: int) -> None:
        rnd = random.Random(100 + k)
        base = bases[k % 2]
        with requests.Session() as s:
            for i in range(12):
                name, op = rnd.choice(names), rnd.choice(("put", "put", "copy", "delete"))
                if op == "put":
                    body = f"client {k} op {i} ".encode() * rnd.randint(1, 400)
                    with lock:
                        payloads[hashlib.md5(body).digest()] = body
                    r = s.put(f"{base}/{name}", data=body, headers=h, timeout=60)
                    ok = r.status_code == 201
                elif op == "copy":
                    src = rnd.choice(names)
                    r = s.put(f"{base}/{name}", headers={**h, "X-Copy-From": f"/race/{src}"},
                              timeout=60)
                    ok = r.status_code == 201
                    if r.status_code == 404:
                        continue  # the source did not exist then: nothing written
                else:
                    r = s.delete(f"{base}/{name}", headers=h, timeout=60)
                    ok = r.status_code == 204
                    if r.status_code == 404:
                        continue
                if not ok:
                    errors.append(f"{op} {name}: {r.status_code} {r.text[:200]}")
                    continue
                with lock:
                    acked[name]["writes" if op != "delete" else "deletes"] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    assert sum(a["writes"] for a in acked.values()) > 20  # the race really ran

    async def history() -> dict[str, list[tuple[int, int, str]]]:
        """Every version row of each name, in serial (= commit) order."""
        meta = MetaStore(two.db_url)
        try:
            out = {}
            for n in names:
                async with meta.db.read() as conn:
                    rows = (await conn.execute(
                        sa.select(v.c.serial, v.c.cluster, v.c.checksum).where(
                            v.c.account == two.account, v.c.container == "race",
                            v.c.name == n).order_by(v.c.serial))).all()
                out[n] = [(r[0], r[1], r[2]) for r in rows]
            return out
        finally:
            await meta.close()

    hist = asyncio.run(history())
    expected_listing = []
    total = 0
    for n in names:
        rows = hist[n]
        # Every acknowledged write is one version, every acknowledged delete one marker.
        assert sum(1 for r in rows if r[1] != DELETED) == acked[n]["writes"], n
        assert sum(1 for r in rows if r[1] == DELETED) == acked[n]["deletes"], n
        # Serial replay: the last row decides; both servers agree with it.
        last = rows[-1] if rows else None
        for base in bases:
            got = requests.get(f"{base}/{n}", headers=h, timeout=30)
            if last is None or last[1] == DELETED:
                assert got.status_code == 404, n
            else:
                assert got.status_code == 200, n
                assert hashlib.md5(got.content).hexdigest() == last[2], n
                assert hashlib.md5(got.content).digest() in payloads
        if last is not None and last[1] != DELETED:
            expected_listing.append(n)
            total += len(payloads[bytes.fromhex(last[2])])
    for base in bases:
        listed = requests.get(base, headers=h, timeout=30).text.split()
        assert listed == expected_listing
    stored = 0
    for base in bases:
        acc = requests.head(base.rsplit("/", 1)[0], headers=h, timeout=30)
        stored = int(acc.headers["X-Account-Bytes-Used"])
        assert stored == total + _other_bytes(two)
    q = requests.get(f"{two.a.url}/account/v1.0/quotas", headers=h, timeout=30).json()
    usage = q[two.account]["pithos.diskspace"]
    assert usage["usage"] == stored and usage["pending"] == 0


def _other_bytes(two: Two) -> int:
    """Bytes of the account's objects outside the race container (earlier tests)."""
    base = f"{two.b.url}/v1/{two.account}"
    out = 0
    for c in requests.get(base, headers=two.h(), timeout=30).text.split():
        if c != "race":
            r = requests.head(f"{base}/{c}", headers=two.h(), timeout=30)
            out += int(r.headers["X-Container-Bytes-Used"])
    return out
