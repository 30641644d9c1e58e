"""Issue 23, gateway half: the reproducers of a hostile user and an unlucky operator.

One test per numbered point of the issue (test_p1_..., test_p2_...), each written from
the issue's reproducer over real HTTP against a real gateway.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from archipelago.blocker.memory import MemoryBlocker
from archipelago.errors import BackendUnavailable, InvalidArgument
from pithos_gw import hashmaps
from pithos_gw.common import META, GatewayConfig
from tests.daemon_helpers import Daemon
from tests.gw_helpers import GatewayThread, file_blocker, gw_mem  # noqa: F401

MiB = 1024 * 1024
BS = 4 * MiB


class User:
    """One account's token and a request helper addressing any account's paths."""

    def __init__(self, g: GatewayThread, account: str) -> None:
        self.g = g
        self.name = account
        self.tok = {"X-Auth-Token": g.add_user(account)}

    def req(self, method: str, path: str, **kw: object) -> requests.Response:
        """``path`` starts with the account: /alice/c/o."""
        headers = {**self.tok, **kw.pop("headers", {})}  # type: ignore[dict-item]
        return requests.request(method, f"{self.g.url}/v1{path}", headers=headers,
                                timeout=30, **kw)  # type: ignore[arg-type]

    def img(self, method: str, path: str = "", **kw: object) -> requests.Response:
        """A Plankton request under /image/v1.0/images."""
        headers = {**self.tok, **kw.pop("headers", {})}  # type: ignore[dict-item]
        return requests.request(method, f"{self.g.url}/image/v1.0/images{path}",
                                headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


@pytest.fixture
def trio(gw_mem: GatewayThread) -> tuple[User, User, User]:  # noqa: F811
    a, b, c = User(gw_mem, "alice"), User(gw_mem, "bob"), User(gw_mem, "carol")
    assert a.req("PUT", "/alice/c1").status_code == 201
    assert b.req("PUT", "/bob/mine").status_code == 201
    return a, b, c


def _register(u: User, loc: str, name: str = "img") -> requests.Response:
    return u.img("POST", headers={"X-Image-Meta-Name": name, "X-Image-Meta-Location": loc})


def test_p1_image_takeover(trio: tuple[User, User, User]) -> None:
    a, b, carol = trio
    a.req("PUT", "/alice/c1/disk", data=b"alice's disk")
    a.req("POST", "/alice/c1/disk", headers={"X-Object-Sharing": "read=bob"})
    loc = "pithos://alice/c1/disk"
    # A read-sharee cannot register someone else's object (Pithos: only the owner may
    # change an object's permissions, and registering sets them).
    r = _register(b, loc)
    assert r.status_code == 403, r.text
    iid = _register(a, loc, "alice's").json()["image"]["id"]
    # Nor re-register it once registered: the row stays alice's.
    assert _register(b, loc, "bob's").status_code == 403
    got = a.img("GET", f"/{iid}").json()["image"]
    assert got["owner"] == "alice" and got["name"] == "alice's"
    # Members only by the image owner: bob cannot publish alice's file.
    assert b.img("PUT", f"/{iid}/members/*").status_code == 403
    r = b.img("PUT", f"/{iid}/members", json={"memberships": [{"member_id": "*"}]})
    assert r.status_code == 403
    assert a.req("HEAD", "/alice/c1/disk").headers["X-Object-Sharing"] == "read=bob"
    assert carol.req("GET", "/alice/c1/disk").status_code == 403
    assert b.img("DELETE", f"/{iid}").status_code == 403
    assert a.img("DELETE", f"/{iid}").status_code == 204


def test_p1_owner_deletes_a_row_hijacked_before_the_fix(
        trio: tuple[User, User, User]) -> None:
    a, b, carol = trio
    a.req("PUT", "/alice/c1/disk", data=b"alice's disk")
    iid = _register(a, "pithos://alice/c1/disk").json()["image"]["id"]
    meta = a.g.app[META]
    row = a.g.call(meta.image_get(iid))
    assert row is not None
    row["owner"] = "bob"  # what INSERT OR REPLACE by a read-sharee left behind
    a.g.call(meta.image_put(iid, "bob", row))
    # The stale owner field gives bob nothing; the object's owner keeps every right.
    assert b.img("PUT", f"/{iid}/members/carol").status_code in (403, 404)
    assert carol.req("GET", "/alice/c1/disk").status_code == 403
    assert a.img("PUT", f"/{iid}/members/carol").status_code == 204
    assert a.img("DELETE", f"/{iid}").status_code == 204
    assert a.img("HEAD", f"/{iid}").status_code == 404


def test_p2_write_sharee_cannot_make_a_directory(trio: tuple[User, User, User]) -> None:
    a, b, _ = trio
    a.req("PUT", "/alice/c1/proj", data=b"a file")
    a.req("PUT", "/alice/c1/proj/secret", data=b"alice only")
    a.req("POST", "/alice/c1/proj", headers={"X-Object-Sharing": "write=bob"})
    assert b.req("GET", "/alice/c1/proj/secret").status_code == 403
    for ctype in ("application/directory", "application/folder",
                  "Application/Directory; charset=x"):
        r = b.req("PUT", "/alice/c1/proj", data=b"", headers={"Content-Type": ctype})
        assert r.status_code == 403, (ctype, r.status_code)
    # Not through COPY either (bob's own directory object copied over alice's file).
    b.req("PUT", "/bob/mine/d", data=b"", headers={"Content-Type": "application/directory"})
    r = b.req("COPY", "/bob/mine/d", headers={"Destination": "/c1/proj",
                                               "Destination-Account": "alice"})
    assert r.status_code == 403
    r = b.req("PUT", "/alice/c1/proj", headers={"X-Copy-From": "/mine/d",
                                                "X-Source-Account": "bob"})
    assert r.status_code == 403
    assert a.req("HEAD", "/alice/c1/proj").headers["Content-Type"] != "application/directory"
    assert b.req("GET", "/alice/c1/proj/secret").status_code == 403
    # Writing new content of an ordinary type is still allowed to a write-sharee.
    r = b.req("PUT", "/alice/c1/proj", data=b"edited", headers={"Content-Type": "text/plain"})
    assert r.status_code == 201
    # The owner may still turn it into a folder.
    r = a.req("PUT", "/alice/c1/proj", data=b"",
              headers={"Content-Type": "application/directory"})
    assert r.status_code == 201


def test_p2_move_by_a_sharee_never_deletes_the_owners_object(
        trio: tuple[User, User, User]) -> None:
    a, b, _ = trio
    a.req("PUT", "/alice/c1/doc", data=b"alice's doc")
    a.req("PUT", "/alice/c1/tree/x", data=b"x")
    a.req("POST", "/alice/c1/doc", headers={"X-Object-Sharing": "write=bob"})
    a.req("POST", "/alice/c1/tree/x", headers={"X-Object-Sharing": "write=bob"})
    r = b.req("MOVE", "/alice/c1/doc", headers={"Destination": "/mine/stolen",
                                                "Destination-Account": "bob"})
    assert r.status_code == 403
    r = b.req("PUT", "/bob/mine/stolen", headers={"X-Move-From": "/c1/doc",
                                                  "X-Source-Account": "alice"})
    assert r.status_code == 403
    r = b.req("MOVE", "/alice/c1/tree?delimiter=/",
              headers={"Destination": "/mine/t", "Destination-Account": "bob"})
    assert r.status_code in (403, 404)
    assert a.req("GET", "/alice/c1/doc").content == b"alice's doc"
    assert a.req("GET", "/alice/c1/tree/x").content == b"x"
    assert b.req("HEAD", "/bob/mine/stolen").status_code == 404
    # Copy is what a sharee may do (the owner keeps the source).
    r = b.req("COPY", "/alice/c1/doc", headers={"Destination": "/mine/copy",
                                                "Destination-Account": "bob"})
    assert r.status_code == 201
    assert a.req("GET", "/alice/c1/doc").content == b"alice's doc"


class FaultyBlocker(MemoryBlocker):
    """A memory blocker whose reads of the blocks named in ``bad`` fail (a dying backend)."""

    def __init__(self) -> None:
        super().__init__()
        self.bad: set[str] = set()

    async def read(self, name: str, offset: int, size: int) -> bytes:
        if name in self.bad:
            raise BackendUnavailable("injected read error")
        return await super().read(name, offset, size)


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[GatewayThread]:
    g = GatewayThread(FaultyBlocker, tmp_path / "meta.db").start()
    try:
        yield g
    finally:
        g.stop()


def raw_get(g: GatewayThread, path: str, token: str, extra: str = "") -> tuple[bytes, bytes]:
    """GET over a raw socket, read until the server closes: (status line + headers, body).

    A server that keeps the connection open after its response makes this time out.
    """
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: gw\r\nX-Auth-Token: {token}\r\n"
                  f"{extra}\r\n".encode())
        data = bytearray()
        while chunk := s.recv(1 << 20):
            data += chunk
    finally:
        s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head, body


def test_p3_read_error_after_headers_aborts_the_connection(faulty: GatewayThread) -> None:
    g = faulty
    a = User(g, "alice")
    a.req("PUT", "/alice/c1")
    first, second = b"a" * BS, b"b" * (2 * MiB)
    assert a.req("PUT", "/alice/c1/six", data=first + second).status_code == 201
    g.blocker.bad.add(hashlib.sha256(second).hexdigest())  # type: ignore[attr-defined]
    head, body = raw_get(g, "/v1/alice/c1/six", a.tok["X-Auth-Token"])
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"Content-Length: 6291456" in head
    # A truncated transfer the client can see, never a second response inside the body.
    assert len(body) < 6 * MiB
    assert b"HTTP/1.1" not in body
    assert body == first[: len(body)]
    # A failure before any byte is sent is an ordinary error reply.
    g.blocker.bad.add(hashlib.sha256(first).hexdigest())  # type: ignore[attr-defined]
    r = a.req("GET", "/alice/c1/six")
    assert r.status_code == 503 and b"HTTP/1.1" not in r.content
    r = a.req("GET", "/alice/c1/six", headers={"Range": "bytes=0-9,4194304-4194309"})
    assert r.status_code == 503


@pytest.mark.timeout(180)
def test_p3_gateway_reconnects_to_a_restarted_daemon(tmp_path: Path) -> None:
    d = Daemon(tmp_path, ["blocker.file.fsync=false"])
    d.start()
    try:
        st = d.archip("--json", "gateway", "start", "--listen", "127.0.0.1:0",
                      check=True).json()
        assert st["blocks"] == "peers"
        key = d.archip("gateway", "user", "add", "alice", check=True).out.strip()
        # The account is the identity user's uuid: take it from the v1 login.
        url = requests.get(f"{st['url']}/auth/v1.0", timeout=30, headers={
            "X-Auth-User": "alice", "X-Auth-Key": key}).headers["X-Storage-Url"]
        h = {"X-Auth-Token": key}
        data = os.urandom(5 * MiB)
        assert requests.put(url + "/c", headers=h, timeout=30).status_code == 201
        assert requests.put(url + "/c/before", data=data, headers=h,
                            timeout=30).status_code == 201
        d.archip("daemon", "stop", check=True)
        # No daemon: a prompt 503 (the request timeout is far below the 60 s hang seen).
        r = requests.get(url + "/c/before", headers=h, timeout=20)
        assert r.status_code == 503, r.text
        r = requests.put(url + "/c/during", data=b"x" * 1000, headers=h, timeout=20)
        assert r.status_code == 503, r.text
        d.start()
        r = requests.get(url + "/c/before", headers=h, timeout=30)
        assert r.status_code == 200 and r.content == data
        assert requests.put(url + "/c/after", data=data[:MiB], headers=h,
                            timeout=30).status_code == 201
        assert requests.get(url + "/c/after", headers=h, timeout=30).content == data[:MiB]
    finally:
        d.archip("gateway", "stop")
        d.stop()


@pytest.mark.parametrize("store", ["memory", "file"])
def test_p6_missing_block_fails_loudly(tmp_path: Path, store: str) -> None:
    make = FaultyBlocker if store == "memory" else file_blocker(tmp_path / "blocks")
    g = GatewayThread(make, tmp_path / "meta.db").start()
    try:
        a = User(g, "alice")
        a.req("PUT", "/alice/c1")
        first, second = os.urandom(BS), os.urandom(2 * MiB)
        assert a.req("PUT", "/alice/c1/six", data=first + second).status_code == 201
        assert a.req("PUT", "/alice/c1/one", data=second).status_code == 201
        g.call(g.blocker.delete(hashlib.sha256(second).hexdigest()))  # lost from the store
        # Headers out before the loss is seen: the transfer is cut short, never padded.
        head, body = raw_get(g, "/v1/alice/c1/six", a.tok["X-Auth-Token"])
        assert head.startswith(b"HTTP/1.1 200") and len(body) < 6 * MiB
        assert body == first[: len(body)]
        # Seen before the headers: an error status, never 200 with zeros.
        for path, hdrs in (("/alice/c1/one", {}),
                           ("/alice/c1/six", {"Range": "bytes=4194304-4194400"})):
            r = a.req("GET", path, headers=hdrs)
            assert r.status_code == 500 and "missing" in r.text, (path, r.status_code)
            assert r.content != bytes(len(r.content))
        # Partial updates and truncations that read the block fail too (no zeros stored).
        r = a.req("POST", "/alice/c1/one", data=b"xy",
                  headers={"Content-Range": "bytes 10-11/*"})
        assert r.status_code == 500
        r = a.req("POST", "/alice/c1/six", headers={"X-Object-Bytes": str(5 * MiB)})
        assert r.status_code == 500
        assert a.req("HEAD", "/alice/c1/six").headers["Content-Length"] == str(6 * MiB)
    finally:
        g.stop()


@pytest.mark.parametrize("level", ["Object", "Container", "Account"])
def test_p11_control_characters_in_metadata(trio: tuple[User, User, User], level: str) -> None:
    a, _, _ = trio
    a.req("PUT", "/alice/c1/o", data=b"x")
    path = {"Object": "/alice/c1/o", "Container": "/alice/c1", "Account": "/alice"}[level]
    method = "POST"
    pre = f"X-{level}-Meta-"
    for name, value in (("A", "foo%0d%0aX-Injected: yes"), ("A", "foo%0aX"), ("A", "a%00b"),
                        ("A", "bell%07"), ("A", "del%7f"), ("A", "c1%C2%85"),
                        ("A%0d%0aX-Injected", "v"), ("B%3aC", "v"), ("B%20C", "v")):
        r = a.req(method, path, headers={pre + name: value})
        assert r.status_code == 400, (name, value, r.status_code)
    assert "X-Injected" not in a.req("HEAD", path).headers
    # Ordinary %-encoded UTF-8 is still fine.
    assert a.req(method, path, headers={pre + "Ok": "caf%C3%A9"}).status_code in (202, 204)
    # Rows stored before the check never break reads: the bad bytes go out %-encoded.
    meta, g = a.g.app[META], a.g
    bad = {pre + "Bad": "foo\r\nX-Injected: yes", pre + "K\r\nX-Injected": "v",
           pre + "Ctl": "a\x01b"}
    if level == "Object":
        g.call(meta.object_set_meta("alice", "c1", "o", bad))
    elif level == "Container":
        g.call(meta.container_update("alice", "c1", bad, {}, replace=False))
    else:
        g.call(meta.account_update("alice", bad, {"team\r\nX-Injected": ["b\x01"]},
                                   replace=False))
    for m in ("HEAD", "GET"):
        r = a.req(m, path)
        assert r.status_code in (200, 204), (m, r.status_code, r.text)
        assert "X-Injected" not in r.headers
        assert r.headers.get(pre + "Bad") == "foo%0D%0AX-Injected: yes"
    for fmt in ("json", "xml", "plain"):
        assert a.req("GET", f"/alice?format={fmt}").status_code == 200
        assert a.req("GET", f"/alice/c1?format={fmt}").status_code == 200


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
    doc = {"bytes": MiB, "hashes": [hashlib.sha256(data).hexdigest()]}
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
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def _fill(path: Path) -> None:
    """Write ``path`` until the filesystem is full."""
    with open(path, "wb", buffering=0) as f:
        chunk = os.urandom(64 * 1024)
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == 28  # ENOSPC


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
        _fill(small_fs / "filler")
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
    iid = _register(a, "pithos://alice/c1/img").json()["image"]["id"]
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
        h = hashlib.sha256(secret).hexdigest()
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
