"""Fencing on RADOS (docs/fencing.md, "RADOS"): a forced open or unlock raises the map's
fence generation and blocklists the evicted writer's client; its next write, zero and
flush fail with Fenced and none of its bytes land after the new holder's open. Needs the
project's Ceph ($ARCHIPELAGO_CEPH_CONF)."""

from __future__ import annotations

import contextlib
import errno
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from archipelago.blocker.base import make_owner
from archipelago.blocker.rados import RadosBlocker
from archipelago.blocker.rados_fence import FENCE_PREFIX, RadosFence, register_sync
from archipelago.errors import Fenced
from archipelago.mapper import Mapper
from testbed.ceph import purge
from tests.conftest import RADOS_TEST_POOL, ceph_conf_or_skip
from tests.rados_daemon_helpers import POOL

pytestmark = [pytest.mark.rados, pytest.mark.timeout(180)]

BS = 64 * 1024


@pytest.fixture
async def make() -> AsyncIterator[Callable[[], RadosBlocker]]:
    """make(): a new RadosBlocker (its own RADOS client) on one fresh namespace."""
    conf = ceph_conf_or_skip()
    ns = f"fence-{uuid.uuid4().hex}"
    made: list[RadosBlocker] = []

    def _make() -> RadosBlocker:
        b = RadosBlocker(conf, RADOS_TEST_POOL, ns, timeout=20)
        made.append(b)
        return b

    yield _make
    for b in made:
        await b.close()
    purge(conf, ns, RADOS_TEST_POOL)


def blocklisted(b: RadosBlocker) -> bool:
    """True if ``b``'s client address is on the cluster's blocklist (asked by a new client)."""
    return b._cluster.get_addrs() in blocklist(b.conffile)


async def test_forced_open_fences_and_blocklists_the_evicted_writer(
        make: Callable[[], RadosBlocker]) -> None:
    """A (alive) writes; B opens with force: A's client is blocklisted, every mutation of
    A fails with Fenced, and a fresh client reads exactly B's data over A's old data."""
    ba, bb = make(), make()
    ma, mb = Mapper(ba, make_owner("a")), Mapper(bb, make_owner("b"))
    await ma.create("vol", 4 * BS, block_size=BS)
    va = await ma.open("vol")
    await va.write(0, b"\xa1" * BS)  # allocates an owned block
    await va.write(100, b"\xa2" * 1000)  # in place
    await va.flush()
    vb = await mb.open("vol", force=True)
    assert vb.gen is not None and va.gen is not None and vb.gen > va.gen
    assert blocklisted(ba) and not blocklisted(bb)
    await vb.write(0, b"\xb1" * 512)  # into the block A wrote
    await vb.write(BS, b"\xb2" * BS)
    await vb.flush()
    for op in (va.write(0, b"\xee" * 4096), va.write(2 * BS, b"\xee" * BS),
               va.write(BS, b"\xee" * 10), va.zero(0, BS), va.flush()):
        with pytest.raises(Fenced):
            await op
    await vb.close()
    reader = Mapper(make(), make_owner("r"))
    vr = await reader.open("vol", force=True)
    want = bytearray(b"\xa1" * BS + b"\xb2" * BS + bytes(2 * BS))
    want[100:1100] = b"\xa2" * 1000
    want[0:512] = b"\xb1" * 512
    assert await vr.read(0, 4 * BS) == bytes(want)
    await reader.close()


async def test_forced_unlock_fences_the_holder_before_anyone_opens(
        make: Callable[[], RadosBlocker]) -> None:
    """`archip volume unlock --force` (Mapper.unlock) bumps and blocklists by itself."""
    ba, bc = make(), make()
    ma = Mapper(ba, make_owner("a"))
    await ma.create("vol", 4 * BS, block_size=BS)
    va = await ma.open("vol")
    await va.write(0, b"a" * BS)
    await Mapper(bc, make_owner("cli")).unlock("vol", force=True)
    with pytest.raises(Fenced):
        await va.write(0, b"b")
    assert blocklisted(ba)


async def test_clean_handover_blocklists_nobody(make: Callable[[], RadosBlocker]) -> None:
    """A volume closed cleanly unregisters its writer: the next open evicts no one;
    removing the volume removes its fence object."""
    ba, bb = make(), make()
    ma, mb = Mapper(ba, make_owner("a")), Mapper(bb, make_owner("b"))
    await ma.create("vol", 4 * BS, block_size=BS)
    va = await ma.open("vol")
    await va.write(0, b"a" * BS)
    await va.close()
    vb = await mb.open("vol")
    await vb.write(0, b"b" * BS)
    await vb.close()
    assert not blocklisted(ba) and not blocklisted(bb)
    await ba.write("x", 0, b"1")  # A's client still works
    assert not any(n.startswith(FENCE_PREFIX) for n in await ba.list())  # not objects
    assert [o.key for o in ba._io.list_objects() if o.key.startswith(FENCE_PREFIX)]
    await mb.remove("vol")
    assert not [o.key for o in ba._io.list_objects() if o.key.startswith(FENCE_PREFIX)]


async def test_registration_at_a_stale_generation_is_refused(
        make: Callable[[], RadosBlocker]) -> None:
    """A new client instance (a restarted blocker peer) of an evicted writer cannot
    register at the old generation: the assert is in the same op as the registration."""
    b1, b2 = make(), make()
    f1 = RadosFence(b1, frozenset)
    g1 = await f1.bump("uid1")
    await f1.ensure("uid1", g1)
    g2 = await RadosFence(b2, frozenset).bump("uid1")
    assert g2 == g1 + 1 and blocklisted(b1)
    b3 = make()  # a fresh client, not blocklisted
    io = await b3._ioctx()
    assert register_sync(io, "uid1", g1, frozenset({"127.0.0.1:0/1"})) < 0
    with pytest.raises(Fenced):
        await RadosFence(b3, frozenset).ensure("uid1", g1)
    await RadosFence(b3, frozenset).ensure("uid1", g2)  # the current one registers


def test_two_daemons_over_nbd(tmp_path: Path) -> None:
    """Issue 18's acceptance on the project's Ceph: daemon A writes a volume over NBD;
    daemon B opens it with force (A is alive) and writes; A's next writes and flush fail
    with an error (A's blocker peers are blocklisted) and B reads back exactly its data
    over A's older data: none of A's bytes landed after B's open."""
    nbd = pytest.importorskip("nbd", reason="python3-libnbd is not installed")
    from archipelago.client.blocking import Client
    from tests.daemon_helpers import Daemon

    conf = ceph_conf_or_skip()
    ns = f"fence-{uuid.uuid4().hex}"
    a, b = Daemon(tmp_path / "a", ["metrics.listen="]), Daemon(tmp_path / "b", ["metrics.listen="])
    try:
        for d in (a, b):
            d.archip("daemon", "start", "--json", "--backend", "rados", "--ceph-conf", conf,
                     "--pool", POOL, "--namespace", ns, check=True)
        for vol in ("vm", "other"):
            a.archip("volume", "create", vol, "--size", str(8 * BS), "--block-size", "64K",
                     check=True)
        ha, ho = nbd.NBD(), nbd.NBD()  # A also keeps "other" open: it must keep working
        for h, vol in ((ha, "vm"), (ho, "other")):
            h.set_export_name(vol)
            h.connect_unix(str(a.data_dir / "nbd.sock"))
        ho.pwrite(b"\x0a" * BS, 0)
        ha.pwrite(b"\xa1" * (2 * BS), 0)  # allocations
        for k in range(4):
            ha.pwrite(b"\xa2" * 4096, k * 4096)  # in place
        ha.flush()
        peers_a = {p.read_text() for p in (a.data_dir / "run" / "rados-clients").iterdir()
                   if not p.name.startswith(".")}
        assert peers_a
        cb = Client.connect(b.data_dir)
        vb = cb.open("vm", force=True)  # A is alive and still has it open
        vb.write(0, b"\xb1" * 4096)  # into the block A wrote in place
        vb.write(2 * BS, b"\xb2" * BS)
        vb.flush()
        assert peers_a <= blocklist(conf)
        for off, n in ((4096, 4096), (0, 512), (4 * BS, BS)):  # in place, in place, new
            with pytest.raises(nbd.Error) as e:
                ha.pwrite(b"\xee" * n, off)
            assert e.value.errno in ("EIO", errno.EIO), e.value
        with pytest.raises(nbd.Error):
            ha.flush()
        want = bytearray(b"\xa1" * (2 * BS) + b"\xb2" * BS + bytes(5 * BS))
        want[0:4 * 4096] = b"\xa2" * (4 * 4096)
        want[0:4096] = b"\xb1" * 4096
        assert bytes(vb.read(0, 8 * BS)) == bytes(want)
        # A's blocker peers were blocklisted and restarted with new clients: A's other
        # volume still works (requests re-issued, the new clients registered).
        for k in range(8):
            ho.pwrite(bytes([k]) * BS, k * BS)
        ho.flush()
        assert ho.pread(8 * BS, 0) == b"".join(bytes([k]) * BS for k in range(8))
        ho.shutdown()
        vb.close()
        cb.close()
        with contextlib.suppress(nbd.Error):
            ha.shutdown()
    finally:
        a.stop()
        b.stop()
        purge(conf, ns, POOL)


def blocklist(conf: str) -> set[str]:
    """Addresses on the cluster's blocklist."""
    import rados

    # Pacific prints the address list, then the (empty) range list: two documents.
    cl = rados.Rados(conffile=conf)
    cl.connect(timeout=10)
    try:
        rc, out, err = cl.mon_command(json.dumps({"prefix": "osd blocklist ls",
                                                  "format": "json"}), b"", timeout=10)
        assert rc == 0, err
        entries, _ = json.JSONDecoder().raw_decode(out.decode() or "[]")
        return {e["addr"] for e in entries}
    finally:
        cl.shutdown()
