"""Issue 23, gateway half, continued: bounded work, client timeouts, a full disk, bad
numbers and names, hashmap scope (points 7, 8, 9, 12 and 13; see test_gw_security.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from archipelago.errors import InvalidArgument
from archipelago.hashing import block_hash
from pithos_gw import hashmaps
from pithos_gw.common import META, GatewayConfig
from tests.fs_helpers import fill, mounted_tmpfs
from tests.gw_helpers import GatewayThread, file_blocker, gw_mem  # noqa: F401
from tests.gw_security_helpers import BS, MiB, User, _trio, register  # noqa: F401

TiB = 1 << 40


@pytest.mark.timeout(120)
def test_p7_assembled_objects_are_not_md5_hashed_over_the_limit(
        trio: tuple[User, User, User]) -> None:
    a, _, _ = trio
    a.req("PUT", "/alice/c1/o", data=b"x")
    # 1 TiB of logical zeros: the MD5 would take ~25 min; the Merkle root is the ETag.
    r = a.req("POST", "/alice/c1/o", headers={"X-Object-Bytes": str(TiB)})
    assert r.status_code == 204, r.text
    h = a.req("HEAD", "/alice/c1/o").headers
    assert h["Content-Length"] == str(TiB) and h["ETag"].strip('"') == h["X-Object-Hash"]
    tail = a.req("GET", "/alice/c1/o", headers={"Range": f"bytes={TiB - 5}-"})
    assert tail.status_code == 206 and tail.content == bytes(5)
    zero = hashlib.sha256(b"").hexdigest()
    doc = {"bytes": TiB, "hashes": [zero] * (TiB // BS)}
    r = a.req("PUT", "/alice/c1/zeros?hashmap", data=json.dumps(doc),
              headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.headers["ETag"].strip('"') == r.headers["X-Object-Hash"]
    # Under the limit an assembled object still gets the MD5 Swift clients check.
    data = os.urandom(MiB)
    a.req("PUT", "/alice/c1/small", data=data)
    doc = {"bytes": MiB, "hashes": [block_hash(data)]}  # trailing zeros stripped (1 in 256)
    r = a.req("PUT", "/alice/c1/again?hashmap", data=json.dumps(doc),
              headers={"Content-Type": "application/json"})
    assert r.headers["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    r = a.req("POST", "/alice/c1/again", headers={"X-Object-Bytes": str(2 * MiB)})
    assert r.headers["ETag"].strip('"') == hashlib.md5(data + bytes(MiB)).hexdigest()
    # A listing's hash is the ETag in both cases.
    listed = {i["name"]: i["hash"] for i in a.req("GET", "/alice/c1?format=json").json()}
    assert listed["o"] == h["X-Object-Hash"]
    assert listed["again"] == hashlib.md5(data + bytes(MiB)).hexdigest()


def _wait(cond: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.timeout(120)
def test_p7_work_stops_when_the_client_disconnects(tmp_path: Path) -> None:
    from tests.gw_helpers import memory_blocker

    g = GatewayThread(memory_blocker, tmp_path / "meta.db",
                      GatewayConfig(assembled_md5_limit=TiB)).start()
    try:
        a = User(g, "alice")
        a.req("PUT", "/alice/c1")
        a.req("PUT", "/alice/c1/o", data=b"x")
        s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        s.sendall(f"POST /v1/alice/c1/o HTTP/1.1\r\nHost: gw\r\nX-Auth-Token: "
                  f"{a.tok['X-Auth-Token']}\r\nX-Object-Bytes: {TiB}\r\n"
                  f"Content-Length: 0\r\n\r\n".encode())
        key = ("alice", "c1", "o")
        _wait(lambda: key in hashmaps._UPDATE_LOCKS, "the update to start")
        s.close()
        # Hashing 1 TiB would hold the object's update lock for ~25 minutes.
        _wait(lambda: key not in hashmaps._UPDATE_LOCKS, "the update to stop")
        assert a.req("HEAD", "/alice/c1/o").headers["Content-Length"] == "1"
    finally:
        g.stop()


def _read_until_closed(s: socket.socket) -> bytes:
    data = bytearray()
    while chunk := s.recv(65536):
        data += chunk
    return bytes(data)


@pytest.mark.timeout(120)
def test_p8_stalled_clients_are_closed_after_client_timeout(tmp_path: Path) -> None:
    from tests.gw_helpers import memory_blocker

    g = GatewayThread(memory_blocker, tmp_path / "meta.db",
                      GatewayConfig(client_timeout=1.0)).start()
    socks: list[socket.socket] = []
    try:
        a = User(g, "alice")
        a.req("PUT", "/alice/c1")
        tok = a.tok["X-Auth-Token"]
        for i in range(20):  # chunked uploads that stop after 1 MiB
            s = socket.create_connection(("127.0.0.1", g.port), timeout=30)
            s.sendall(f"PUT /v1/alice/c1/o{i} HTTP/1.1\r\nHost: gw\r\nX-Auth-Token: {tok}"
                      f"\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n".encode()
                      + bytes(MiB) + b"\r\n")
            socks.append(s)
        for i in range(10):  # headers that never end
            s = socket.create_connection(("127.0.0.1", g.port), timeout=30)
            s.sendall(f"PUT /v1/alice/c1/h{i} HTTP/1.1\r\nHost: gw\r\n".encode())
            socks.append(s)
        for s in socks[:20]:
            assert _read_until_closed(s).startswith(b"HTTP/1.1 408"), "no 408 for a stall"
        for s in socks[20:]:
            assert _read_until_closed(s) == b""
        server = g._runner.server
        assert server is not None
        _wait(lambda: not server.connections, "the server to drop every stalled connection")
        assert a.req("GET", "/alice/c1?format=json").json() == []  # nothing was recorded
    finally:
        for s in socks:
            s.close()
        g.stop()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (needs root; skipped where mounting is not allowed)."""
    with mounted_tmpfs(tmp_path / "disk", "16m") as mnt:
        yield mnt


@pytest.mark.timeout(120)
def test_p9_full_disk_answers_507_and_reads_still_work(small_fs: Path) -> None:
    g = GatewayThread(file_blocker(small_fs / "blocks"), small_fs / "meta.db").start()
    try:
        a = User(g, "alice")
        assert a.req("PUT", "/alice/c1").status_code == 201
        data = os.urandom(MiB)
        assert a.req("PUT", "/alice/c1/kept", data=data,
                     headers={"X-Object-Meta-A": "1"}).status_code == 201
        assert a.req("PUT", "/alice/c1/gone", data=b"g").status_code == 201
        fill(small_fs / "filler")
        big = {f"X-Container-Meta-K{i}": "v" * 250 for i in range(15)}
        seen = set()
        for i in range(400):  # until SQLite must grow a file on the full disk
            r = a.req("PUT", f"/alice/full{i}", headers=big)
            seen.add(r.status_code)
            assert r.status_code in (201, 507), (i, r.status_code, r.text)
            if r.status_code == 507:
                break
        assert 507 in seen
        writes = [("PUT", "/alice/c1/new", {"data": os.urandom(2 * MiB)}),
                  ("PUT", "/alice/c1/small", {"data": b"tiny"}),
                  ("POST", "/alice/c1/kept", {"headers": {"X-Object-Meta-B": "2"}}),
                  ("POST", "/alice/c1", {"headers": {"X-Container-Meta-B": "2"}}),
                  ("POST", "/alice", {"headers": {"X-Account-Meta-B": "2"}}),
                  ("COPY", "/alice/c1/kept", {"headers": {"Destination": "/c1/copy"}}),
                  ("DELETE", "/alice/c1/gone", {})]
        for method, path, kw in writes:
            r = a.req(method, path, **kw)
            assert r.status_code in (507, 201, 202, 204), (method, path, r.status_code, r.text)
        # Everything written before reads back.
        got = a.req("GET", "/alice/c1/kept")
        assert got.status_code == 200 and got.content == data
        for path in ("/alice", "/alice/c1", "/alice/c1?format=json"):
            assert a.req("GET", path).status_code in (200, 204)
        (small_fs / "filler").unlink()
        assert a.req("PUT", "/alice/again").status_code == 201
        assert a.req("PUT", "/alice/c1/after", data=data).status_code == 201
        assert a.req("GET", "/alice/c1/after").content == data
    finally:
        g.stop()


def test_p12_numbers_and_json_out_of_range_are_400(trio: tuple[User, User, User]) -> None:
    a, _, _ = trio
    a.req("PUT", "/alice/c1/o", data=b"x")
    big = "9" * 23
    assert a.req("GET", f"/alice/c1/o?version={big}").status_code == 400
    assert a.req("GET", "/alice/c1/o?version=-1").status_code in (400, 404)
    assert a.req("COPY", "/alice/c1/o", headers={"Destination": "/c1/p",
                                                 "X-Source-Version": big}).status_code == 400
    for until in ("nan", "inf", "-inf", "1e999", "1e300", "-1e300", "NaN"):
        for path in ("/alice/c1/o", "/alice/c1", "/alice"):
            for m in ("GET", "HEAD"):
                r = a.req(m, f"{path}?until={until}")
                assert r.status_code == 400, (m, path, until, r.status_code)
    assert a.req("GET", f"/alice/c1?limit={big}").status_code != 500
    deep = "[" * 100_000 + "]" * 100_000
    for body in (deep, '{"bytes": 1, "hashes": ' + deep + "}"):
        r = a.req("PUT", "/alice/c1/h?hashmap", data=body,
                  headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.status_code
    a.req("PUT", "/alice/c1/img", data=b"i")
    iid = register(a, "pithos://alice/c1/img").json()["image"]["id"]
    r = a.img("PUT", f"/{iid}/members", data='{"memberships": ' + deep + "}")
    assert r.status_code == 400


def test_p12_ranges_names_and_hashmap_bounds(tmp_path: Path) -> None:
    from tests.gw_helpers import memory_blocker

    g = GatewayThread(memory_blocker, tmp_path / "meta.db",
                      GatewayConfig(max_file_size=16 * MiB)).start()
    try:
        a = User(g, "alice")
        a.req("PUT", "/alice/c1")
        data = os.urandom(1000)
        a.req("PUT", "/alice/c1/o", data=data)
        # More than two overlapping ranges: the Range header is ignored (Swift).
        r = a.req("GET", "/alice/c1/o", headers={"Range": "bytes=" + ",".join(["0-"] * 49)})
        assert r.status_code == 200 and r.content == data
        r = a.req("GET", "/alice/c1/o", headers={"Range": "bytes=0-10,5-20,8-30"})
        assert r.status_code == 200 and r.content == data
        r = a.req("GET", "/alice/c1/o", headers={"Range": "bytes=0-10,5-20"})
        assert r.status_code == 206 and r.headers["Content-Type"].startswith("multipart/")
        # Names are measured in UTF-8 bytes.
        assert a.req("PUT", "/alice/c1/" + "\u00e9" * 513, data=b"x").status_code == 400
        assert a.req("PUT", "/alice/c1/" + "\u00e9" * 512, data=b"x").status_code == 201
        assert a.req("PUT", "/alice/" + "\u00e9" * 129).status_code == 400
        assert a.req("PUT", "/alice/" + "\u00e9" * 128).status_code == 201
        # A hashmap never names more blocks than max_file_size allows (here 4).
        h = [hashlib.sha256(bytes([i])).hexdigest() for i in range(5)]
        for doc in ({"bytes": 5 * BS, "hashes": h}, {"bytes": 17 * MiB, "hashes": h}):
            r = a.req("PUT", "/alice/c1/big?hashmap", data=json.dumps(doc),
                      headers={"Content-Type": "application/json"})
            assert r.status_code == 413, r.status_code
        r = a.req("PUT", "/alice/c1/big?hashmap", data=json.dumps(h * 100000),
                  headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        r = a.req("PUT", "/alice/c1/big?hashmap",
                  data=json.dumps({"bytes": 4 * BS, "hashes": h[:4]}),
                  headers={"Content-Type": "application/json"})
        assert r.status_code == 409 and json.loads(r.content) == h[:4]
        assert b", " not in r.content  # compact
    finally:
        g.stop()


@pytest.mark.parametrize("name", ["..", ".", "", "alice ", " alice", "a\nb", "a\rb", "*",
                                  "a:b", "a/b", "a,b", "a;b", "a=b", "a\x00b", "x" * 300])
def test_p12_account_names_are_checked(gw_mem: GatewayThread, name: str) -> None:  # noqa: F811
    with pytest.raises(InvalidArgument):
        gw_mem.call(gw_mem.app[META].user_add(name))


def test_p12_user_add_cli_refuses_bad_names(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from control.cli import main

    rc = main(["--data-dir", str(tmp_path), "gateway", "user", "add", "a:b"])
    err = capsys.readouterr().err
    assert rc == InvalidArgument.exit_code and err.startswith("archip: error:"), err
    assert main(["--data-dir", str(tmp_path), "gateway", "user", "add", "bob"]) == 0


def test_p12_parser_errors_do_not_echo_the_request(gw_mem: GatewayThread) -> None:  # noqa: F811
    for raw in (b"GET /v1/a HTTP/1.1\r\nHost: x\r\nX-Evil: <script>\x01</script>\r\n\r\n",
                b"GET /v1/a HTTP/1.1\r\nHost: x\r\nX-<script>: v\r\n\r\n",
                b"GET /v1/<script>\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
                b"G<script>ET /v1/a HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /v1/a HTTP/1.1\r\nHost: x\r\nX-L: " + b"<script>" * 2000 + b"\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", gw_mem.port), timeout=10)
        s.sendall(raw)
        got = _read_until_closed(s)
        s.close()
        assert got.startswith(b"HTTP/1.") and b" 400 " in got.split(b"\r\n")[0], got[:80]
        assert b"script" not in got and len(got) < 1000, got


def _hashmap(u: User, path: str, hashes: list[str], size: int) -> requests.Response:
    return u.req("PUT", path + "?hashmap", data=json.dumps({"bytes": size, "hashes": hashes}),
                 headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("scope", ["account", "global"])
def test_p13_hashmap_scope(tmp_path: Path, scope: str) -> None:
    from tests.gw_helpers import memory_blocker

    cfg = GatewayConfig() if scope == "account" else GatewayConfig(hashmap_scope="global")
    g = GatewayThread(memory_blocker, tmp_path / "meta.db", cfg).start()
    try:
        a, b = User(g, "alice"), User(g, "bob")
        a.req("PUT", "/alice/c1")
        b.req("PUT", "/bob/mine")
        secret = os.urandom(MiB)
        h = block_hash(secret)  # not sha256(secret): it may end with zero bytes
        a.req("PUT", "/alice/c1/secret", data=secret)
        a.req("PUT", "/alice/c1/proj", data=b"p")
        a.req("POST", "/alice/c1/proj", headers={"X-Object-Sharing": "write=bob"})
        stored = g.count_blocks()
        # Knowing a block's hash is not enough to read it (the default scope).
        r = _hashmap(b, "/bob/mine/stolen", [h], MiB)
        r2 = _hashmap(b, "/alice/c1/proj", [h], MiB)  # nor through a shared object
        if scope == "global":
            assert r.status_code == 201 and r2.status_code == 201
            assert b.req("GET", "/bob/mine/stolen").content == secret
            return
        assert r.status_code == 409 and r.json() == [h]
        assert r2.status_code == 409 and r2.json() == [h]
        assert b.req("GET", "/bob/mine/stolen").status_code == 404
        assert a.req("GET", "/alice/c1/proj").content == b"p"
        # Whoever has the data proves it by uploading it; the bytes stay stored once.
        r = b.req("POST", "/bob/mine", data=secret,
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202 and r.json() == [h]
        assert g.count_blocks() == stored
        assert _hashmap(b, "/bob/mine/mine", [h], MiB).status_code == 201
        # The owner re-uploads by hashmap at once; zero blocks need no proof.
        assert _hashmap(a, "/alice/c1/again", [h], MiB).status_code == 201
        zero = hashlib.sha256(b"").hexdigest()
        assert _hashmap(b, "/bob/mine/zeros", [zero, zero], 2 * BS).status_code == 201
    finally:
        g.stop()
