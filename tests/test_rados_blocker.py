"""RADOS-specific blocker behaviour: two clients, RADOS locks, namespaces, unreachable clusters.

The cluster comes from $ARCHIPELAGO_CEPH_CONF (scripts/test.sh starts one with
tests/ceph_cluster.py); without it these tests skip, except the unreachable-cluster
tests, which need only python3-rados.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from archipelago.errors import BackendUnavailable, ConfigError, Locked, NotFound, TimedOut
from archipelago.hashing import ZERO_HASH, block_hash

rados = pytest.importorskip("rados", reason="python3-rados is not installed")

from archipelago.blocker.rados import COPY_CHUNK, LOCK_PREFIX, RadosBlocker  # noqa: E402
from testbed.ceph import purge  # noqa: E402

pytestmark = [pytest.mark.rados, pytest.mark.timeout(120)]
POOL = "archipelago-test"


def _conf() -> str:
    conf = os.environ.get("ARCHIPELAGO_CEPH_CONF")
    if not conf:
        pytest.skip("ARCHIPELAGO_CEPH_CONF is unset: no Ceph cluster (scripts/test.sh starts one)")
    return conf


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., RadosBlocker]]:
    """make(namespace=None, **kw): a new RadosBlocker (a new RADOS client) on the test pool."""
    conf = _conf()
    ns = f"t-{uuid.uuid4().hex}"
    made: list[RadosBlocker] = []

    def _make(namespace: str | None = None, **kw: object) -> RadosBlocker:
        b = RadosBlocker(conf, POOL, ns if namespace is None else namespace, **kw)  # type: ignore[arg-type]
        made.append(b)
        return b

    yield _make
    # Remove everything the test left, lock objects included, with a raw client.
    for space in {b.namespace for b in made}:
        purge(conf, space, POOL, timeout=10)
    for b in made:
        await b.close()


def owner(tag: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{tag}"


async def test_lock_held_by_another_client_names_the_owner(make: Callable[..., RadosBlocker]) -> None:
    a, b = make(), make()
    await a.lock("vol", owner("a"))
    with pytest.raises(Locked, match=owner("a")):
        await b.lock("vol", owner("b"))
    info = await b.lock_info("vol")
    assert info is not None and info.owner == owner("a") and not info.stale
    with pytest.raises(Locked):
        await b.unlock("vol", owner("b"))
    await b.unlock("vol", owner("b"), force=True)  # force break of another client's lock
    assert await a.lock_info("vol") is None
    await b.lock("vol", owner("b"))
    with pytest.raises(Locked, match=owner("b")):
        await a.lock("vol", owner("a"))


async def test_same_owner_on_a_new_client_retakes_and_releases(
    make: Callable[..., RadosBlocker],
) -> None:
    # RADOS ties a lock to (client id, cookie): a reconnected process is a new client.
    first = make()
    await first.lock("vol", owner("x"))
    await first.close()
    second = make()
    with pytest.raises(Locked):
        await second.lock("vol", owner("y"))
    await second.unlock("vol", owner("x"))  # the owner releases its lock from a new client
    assert await second.lock_info("vol") is None
    await first.lock("vol", owner("x"))  # first reconnects lazily
    await second.lock("vol", owner("x"))  # and the owner re-takes it from the other client
    info = await first.lock_info("vol")
    assert info is not None and info.owner == owner("x")


async def test_lock_wait_gets_the_lock_when_another_client_releases(
    make: Callable[..., RadosBlocker],
) -> None:
    a, b = make(), make()
    await a.lock("vol", owner("a"))

    async def release_soon() -> None:
        await asyncio.sleep(0.2)
        await a.unlock("vol", owner("a"))

    await asyncio.gather(release_soon(), b.lock("vol", owner("b"), wait=True, timeout=30))
    assert (await a.lock_info("vol")).owner == owner("b")  # type: ignore[union-attr]


async def test_locks_are_not_objects_and_do_not_touch_objects(make: Callable[..., RadosBlocker]) -> None:
    b = make()
    await b.put("vol", b"data")
    await b.lock("vol", owner("a"))
    assert await b.list() == ["vol"]
    assert await b.read("vol", 0, 4) == b"data"
    await b.delete("vol")
    assert await b.lock_info("vol") is not None  # the lock outlives the object
    assert await b.list() == []
    assert LOCK_PREFIX.endswith("/")  # "/" never appears in a valid object name


async def test_namespaces_isolate_objects_and_locks(make: Callable[..., RadosBlocker]) -> None:
    ns1, ns2 = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    one, two = make(ns1), make(ns2)
    await one.put("obj", b"one")
    await one.lock("vol", owner("one"))
    assert await two.list() == []
    assert not await two.exists("obj")
    assert await two.read("obj", 0, 3) == bytes(3)
    assert await two.lock_info("vol") is None
    await two.lock("vol", owner("two"))
    await two.put("obj", b"two")
    assert await one.read("obj", 0, 3) == b"one"


async def test_hash_dedups_and_strips_trailing_zeros(make: Callable[..., RadosBlocker]) -> None:
    b = make()
    data = os.urandom(1000) + bytes(3000)
    await b.put("x", data)
    await b.put("y", data)
    h1, h2 = await b.hash("x"), await b.hash("y")
    assert h1 == h2 == block_hash(data)
    assert await b.size(h1) == 1000  # stored as Pithos stores it
    assert await b.read(h1, 0, 4000) == data
    assert await b.list() == sorted([h1, "x", "y"])
    await b.put("z", bytes(4096))
    assert await b.hash("z") == ZERO_HASH
    assert not await b.exists(ZERO_HASH)


async def test_copy_larger_than_one_chunk(make: Callable[..., RadosBlocker]) -> None:
    b = make()
    data = os.urandom(COPY_CHUNK + 12345)
    await b.put("big", data)
    await b.put("dst", b"old content that is longer than nothing")
    await b.copy("big", "dst")
    assert await b.size("dst") == len(data)
    assert await b.read("dst", 0, len(data)) == data
    await b.put("small", b"abc")
    await b.copy("small", "dst")  # a shorter source replaces the whole destination
    assert await b.size("dst") == 3


async def test_many_parallel_writes_do_not_block_the_loop(make: Callable[..., RadosBlocker]) -> None:
    b = make()
    payloads = {f"o{i}": os.urandom(256 * 1024) for i in range(48)}
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    await asyncio.gather(*(b.put(n, d) for n, d in payloads.items()))
    got = await asyncio.gather(*(b.read(n, 0, len(d)) for n, d in payloads.items()))
    done.set()
    await t
    assert got == list(payloads.values())
    assert ticks > len(payloads)  # the loop kept running while librados worked


async def test_missing_pool_is_not_found() -> None:
    b = RadosBlocker(_conf(), pool=f"no-such-pool-{uuid.uuid4().hex[:8]}", timeout=10)
    with pytest.raises(NotFound, match="pool"):
        await b.read("x", 0, 1)
    await b.close()


async def test_missing_conf_file_is_a_config_error(tmp_path: Path) -> None:
    b = RadosBlocker(str(tmp_path / "nope.conf"), timeout=2)
    with pytest.raises(ConfigError):
        await b.size("x")
    await b.close()


@pytest.mark.timeout(60)
async def test_unreachable_cluster_fails_within_the_timeout(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "ceph.conf"
    conf.write_text(
        f"[global]\nmon host = [v2:127.0.0.1:{port}]\nauth client required = none\n"
        "log to stderr = false\nerr to stderr = false\n"
    )
    b = RadosBlocker(str(conf), timeout=2)
    with pytest.raises((BackendUnavailable, TimedOut), match="Ceph cluster"):
        await b.write("x", 0, b"data")
    with pytest.raises((BackendUnavailable, TimedOut)):  # and again: no cached half-state
        await b.lock("x", owner("a"))
    await b.close()


async def test_read_only_cephx_user_gets_a_clear_error(
    make: Callable[..., RadosBlocker], tmp_path: Path,
) -> None:
    conf = _conf()
    admin = make()
    await admin.put("obj", b"visible")
    user = f"client.ro-{uuid.uuid4().hex[:8]}"
    cl = rados.Rados(conffile=conf)
    cl.connect(timeout=10)
    try:
        ret, out, err = cl.mon_command(json.dumps({
            "prefix": "auth get-or-create", "entity": user,
            "caps": ["mon", "allow r", "osd", f"allow r pool={POOL}"]}), b"")
        if ret != 0:
            pytest.skip(f"cannot create a cephx user (auth none?): {err}")
        keyring = tmp_path / "ro.keyring"
        keyring.write_bytes(out)
        ro = make(admin.namespace, keyring=str(keyring), rados_id=user.removeprefix("client."),
                  timeout=10)
        assert await ro.read("obj", 0, 7) == b"visible"
        with pytest.raises(BackendUnavailable, match="permission denied"):
            await ro.put("obj", b"changed")
        assert await admin.read("obj", 0, 7) == b"visible"
    finally:
        cl.mon_command(json.dumps({"prefix": "auth rm", "entity": user}), b"")
        cl.shutdown()
