"""Issue 23, gateway half: the reproducers of a hostile user and an unlucky operator.

One test per numbered point of the issue (test_p1_..., test_p2_...), each written from
the issue's reproducer over real HTTP against a real gateway; points 7, 8, 9, 12 and 13
(bounds, timeouts, a full disk) are in test_gw_limits.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pithos_gw.common import META
from tests.daemon_helpers import Daemon
from tests.gw_helpers import GatewayThread, file_blocker, gw_mem  # noqa: F401
from tests.gw_security_helpers import BS, FaultyBlocker, MiB, User, _trio, raw_get, register  # noqa: F401


def test_p1_image_takeover(trio: tuple[User, User, User]) -> None:
    a, b, carol = trio
    a.req("PUT", "/alice/c1/disk", data=b"alice's disk")
    a.req("POST", "/alice/c1/disk", headers={"X-Object-Sharing": "read=bob"})
    loc = "pithos://alice/c1/disk"
    # A read-sharee cannot register someone else's object (Pithos: only the owner may
    # change an object's permissions, and registering sets them).
    r = register(b, loc)
    assert r.status_code == 403, r.text
    iid = register(a, loc, "alice's").json()["image"]["id"]
    # Nor re-register it once registered: the row stays alice's.
    assert register(b, loc, "bob's").status_code == 403
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
    iid = register(a, "pithos://alice/c1/disk").json()["image"]["id"]
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


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[GatewayThread]:
    g = GatewayThread(FaultyBlocker, tmp_path / "meta.db").start()
    try:
        yield g
    finally:
        g.stop()


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
