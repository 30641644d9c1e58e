"""Pithos+ extensions over real HTTP: hashmaps, block upload, Merkle, partial updates,
versions, sharing and public URLs."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import requests

from pithos_gw.common import GatewayConfig
from tests.gw_helpers import GatewayThread, gw, gw_mem, memory_blocker  # noqa: F401

MiB = 1024 * 1024
BS = 4 * MiB


def ref_block_id(block: bytes) -> str:
    """Independent Pithos block id (spec: sha256 of the block without trailing NULs)."""
    return hashlib.sha256(block.rstrip(b"\0")).hexdigest()


def ref_merkle(ids: list[str]) -> str:
    """Independent Merkle root, written from the rule in pithos-api.md section 5."""
    leaves = [bytes.fromhex(i) for i in ids]
    if len(leaves) == 1:
        return leaves[0].hex()
    s = 2
    while s < len(leaves):
        s *= 2
    leaves += [bytes(32)] * (s - len(leaves))
    while len(leaves) > 1:
        leaves = [hashlib.sha256(leaves[i] + leaves[i + 1]).digest()
                  for i in range(0, len(leaves), 2)]
    return leaves[0].hex()


class Client:
    """A tiny Pithos-style client over requests."""

    def __init__(self, g: GatewayThread, account: str, key: str | None = None) -> None:
        self.base = f"{g.url}/object-store/v1/{account}"
        self.tok = {"X-Auth-Token": key or g.add_user(account)}

    def req(self, method: str, path: str, **kw: object) -> requests.Response:
        headers = {**self.tok, **kw.pop("headers", {})}  # type: ignore[dict-item]
        return requests.request(method, self.base + path, headers=headers, timeout=30,
                                **kw)  # type: ignore[arg-type]


@pytest.fixture
def alice(gw_mem: GatewayThread) -> Client:  # noqa: F811
    c = Client(gw_mem, "alice")
    assert c.req("PUT", "/c").status_code == 201
    return c


def test_vectors_from_the_spec() -> None:
    assert ref_merkle([ref_block_id(b"hello")]) == (
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
    assert ref_merkle([ref_block_id(b"a" * BS), ref_block_id(b"hello")]) == (
        "65bb4655194d34392c4156a68d0bc3ab4cb1f13ec46c18d28cfcdbf997fab183")
    assert ref_merkle([ref_block_id(b"a" * BS), ref_block_id(bytes(BS)),
                       ref_block_id(b"hello")]) == (
        "24c835379be691e55633086af971b7a044d42fcf09399fc3b9c6e55de7d43ee9")


def test_hashmap_upload_loop_9mib(gw: GatewayThread) -> None:  # noqa: F811
    c = Client(gw, "alice")
    c.req("PUT", "/c")
    blocks = [b"A" * BS, b"B" * BS, b"C" * MiB]
    data = b"".join(blocks)
    ids = [ref_block_id(b) for b in blocks]
    # One block is already there (uploaded raw, as kamaki does for a missing block).
    r = c.req("POST", "/c?update&format=json", data=blocks[0],
              headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.json() == [ids[0]]
    assert gw.count_blocks() == 1
    doc = {"bytes": len(data), "hashes": ids}
    r = c.req("PUT", "/c/nine?hashmap&format=json", data=json.dumps(doc),
              headers={"Content-Type": "application/json"})
    assert r.status_code == 409
    assert r.json() == ids[1:]
    assert c.req("HEAD", "/c/nine").status_code == 404
    for b in blocks[1:]:
        r = c.req("POST", "/c?update&format=json", data=b,
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202
    # Pithos clients send the map as octet-stream and the hashmap param with a value.
    r = c.req("PUT", "/c/nine?format=json&hashmap=True", data=json.dumps(doc),
              headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201
    assert r.headers["ETag"] == hashlib.md5(data).hexdigest()
    assert gw.count_blocks() == 3
    r = c.req("GET", "/c/nine")
    assert r.content == data
    assert r.headers["X-Object-Hash"] == ref_merkle(ids)
    assert r.headers["ETag"] == hashlib.md5(data).hexdigest()
    hm = c.req("GET", "/c/nine?hashmap&format=json").json()
    assert hm == {"block_size": BS, "block_hash": "sha256", "bytes": len(data), "hashes": ids}
    # The GET reply can be PUT back unchanged.
    r = c.req("PUT", "/c/again?hashmap", data=json.dumps(hm),
              headers={"Content-Type": "application/json"})
    assert r.status_code == 201
    # Dedup: the same content through a plain PUT stores no new block.
    assert c.req("PUT", "/c/plain", data=data).status_code == 201
    assert gw.count_blocks() == 3
    assert c.req("GET", "/c/plain").headers["X-Object-Hash"] == ref_merkle(ids)


def test_zero_blocks_are_never_stored(alice: Client, gw_mem: GatewayThread) -> None:  # noqa: F811
    data = bytes(BS) + b"x" + bytes(100)
    r = alice.req("PUT", "/c/z", data=data)
    assert r.status_code == 201
    assert gw_mem.count_blocks() == 1
    ids = [ref_block_id(data[:BS]), ref_block_id(data[BS:])]
    assert ids[0] == hashlib.sha256(b"").hexdigest()
    assert r.headers["X-Object-Hash"] == ref_merkle(ids)
    assert alice.req("GET", "/c/z").content == data
    r = alice.req("PUT", "/c/empty", data=b"")
    assert r.headers["X-Object-Hash"] == hashlib.sha256(b"").hexdigest()
    hm = alice.req("GET", "/c/empty?hashmap").json()
    assert hm["hashes"] == [hashlib.sha256(b"").hexdigest()] and hm["bytes"] == 0


def test_merkle_etag_mode(tmp_path: Path) -> None:
    g = GatewayThread(memory_blocker, tmp_path / "m.db", GatewayConfig(etag="merkle")).start()
    try:
        c = Client(g, "alice")
        c.req("PUT", "/c")
        r = c.req("PUT", "/c/o", data=b"hello")
        assert r.headers["ETag"] == r.headers["X-Object-Hash"] == ref_block_id(b"hello")
        h = c.req("HEAD", "/c/o").headers
        assert h["ETag"] == h["X-Object-Hash"]
        assert c.req("GET", "/c/o", headers={"If-Match": h["ETag"]}).status_code == 200
    finally:
        g.stop()


def test_partial_updates(alice: Client) -> None:
    data = bytearray(b"0123456789" * (BS // 10 + 5))
    alice.req("PUT", "/c/o", data=bytes(data))
    oct_ = {"Content-Type": "application/octet-stream"}
    r = alice.req("POST", "/c/o", data=b"abc", headers={**oct_, "Content-Range": "bytes 2-4/*"})
    assert r.status_code == 204
    data[2:5] = b"abc"
    # Across the block boundary.
    r = alice.req("POST", "/c/o", data=b"XYZW",
                  headers={**oct_, "Content-Range": f"bytes {BS - 2}-{BS + 1}/*"})
    assert r.status_code == 204
    data[BS - 2 : BS + 2] = b"XYZW"
    r = alice.req("POST", "/c/o", data=b"++end", headers={**oct_, "Content-Range": "bytes */*"})
    assert r.status_code == 204
    data += b"++end"
    got = alice.req("GET", "/c/o")
    assert got.content == bytes(data)
    assert got.headers["ETag"] == hashlib.md5(data).hexdigest()
    assert r.headers["ETag"] == got.headers["ETag"]
    ids = [ref_block_id(bytes(data[i : i + BS])) for i in range(0, len(data), BS)]
    assert got.headers["X-Object-Hash"] == ref_merkle(ids)
    r = alice.req("POST", "/c/o", headers={"X-Object-Bytes": "7"})
    assert r.status_code == 204
    assert alice.req("GET", "/c/o").content == bytes(data[:7])
    alice.req("PUT", "/c/src", data=b"SOURCE")
    r = alice.req("POST", "/c/o", headers={**oct_, "Content-Range": "bytes 1-3/*",
                                           "X-Source-Object": "/c/src"})
    assert r.status_code == 204
    assert alice.req("GET", "/c/o").content == b"0SOUc56"
    bad = alice.req("POST", "/c/o", data=b"x", headers={**oct_, "Content-Range": "bytes 99-/*"})
    assert bad.status_code == 416
    bad = alice.req("POST", "/c/o", data=b"x", headers={**oct_, "Content-Range": "bytes 0-0/3"})
    assert bad.status_code == 416


def test_versions_and_until(alice: Client) -> None:
    v1 = alice.req("PUT", "/c/o", data=b"one").headers["X-Object-Version"]
    time.sleep(0.01)
    mid = time.time()
    time.sleep(0.01)
    v2 = alice.req("PUT", "/c/o", data=b"two").headers["X-Object-Version"]
    vs = alice.req("GET", "/c/o?version=list&format=json").json()["versions"]
    assert [v[0] for v in vs] == [int(v1), int(v2)]
    xml = alice.req("GET", "/c/o?version=list&format=xml").text
    assert f">{v1}</version>" in xml and f">{v2}</version>" in xml
    assert alice.req("GET", f"/c/o?version={v1}").content == b"one"
    assert alice.req("HEAD", f"/c/o?version={v1}").headers["X-Object-Version"] == v1
    assert alice.req("GET", "/c/o").content == b"two"
    listing = alice.req("GET", f"/c?format=json&until={mid}").json()
    assert [(i["name"], i["x_object_version"]) for i in listing] == [("o", int(v1))]
    h = alice.req("HEAD", f"/c?until={mid}").headers
    assert h["X-Container-Object-Count"] == "1" and "X-Container-Until-Timestamp" in h
    past = alice.req("GET", f"?format=json&until={mid}").json()
    assert [(c["name"], c["bytes"]) for c in past] == [("c", 3)]
    alice.req("DELETE", "/c/o")
    assert alice.req("GET", "/c/o").status_code == 404
    assert alice.req("GET", f"/c/o?version={v2}").content == b"two"
    # Versioning "none" keeps no history.
    alice.req("PUT", "/n", headers={"X-Container-Policy-Versioning": "none"})
    alice.req("PUT", "/n/o", data=b"a")
    alice.req("PUT", "/n/o", data=b"b")
    assert len(alice.req("GET", "/n/o?version=list").json()["versions"]) == 1


def test_sharing_and_public(gw_mem: GatewayThread) -> None:  # noqa: F811
    a = Client(gw_mem, "alice")
    b = Client(gw_mem, "bob")
    carol = Client(gw_mem, "carol")
    a.req("PUT", "/c")
    a.req("PUT", "/c/shared", data=b"for bob")
    a.req("PUT", "/c/private", data=b"not for bob")
    bob_url = b.base.replace("/bob", "/alice")
    r = a.req("POST", "/c/shared", headers={"X-Object-Sharing": "read=bob"})
    assert r.status_code == 202
    assert a.req("HEAD", "/c/shared").headers["X-Object-Sharing"] == "read=bob"
    got = requests.get(bob_url + "/c/shared", headers=b.tok)
    assert got.status_code == 200 and got.content == b"for bob"
    assert got.headers["X-Object-Allowed-To"] == "read"
    assert requests.get(bob_url + "/c/private", headers=b.tok).status_code == 403
    assert requests.put(bob_url + "/c/shared", data=b"x", headers=b.tok).status_code == 403
    assert requests.get(bob_url + "/c/shared", headers=carol.tok).status_code == 403
    listing = requests.get(bob_url + "/c?format=json", headers=b.tok).json()
    assert [i["name"] for i in listing] == ["shared"]
    assert requests.get(bob_url + "?format=json", headers=b.tok).json() == [{"name": "c"}]
    assert requests.get(bob_url, headers=carol.tok).status_code == 403
    assert requests.get(bob_url + "/c?format=json", headers=carol.tok).status_code == 403
    # Write sharing through a group of alice's account.
    a.req("POST", "", headers={"X-Account-Group-Team": "bob,carol"})
    a.req("POST", "/c/shared", headers={"X-Object-Sharing": "read=bob;write=alice:team"})
    r = requests.put(bob_url + "/c/shared", data=b"edited by carol", headers=carol.tok)
    assert r.status_code == 201
    assert a.req("GET", "/c/shared").content == b"edited by carol"
    a.req("POST", "/c/shared", headers={"X-Object-Sharing": ""})
    assert requests.get(bob_url + "/c/shared", headers=b.tok).status_code == 403
    # Public URL: readable with no token, reduced headers; unpublishing removes it.
    a.req("POST", "/c/private", headers={"X-Object-Public": "true"})
    path = a.req("HEAD", "/c/private").headers["X-Object-Public"]
    assert path.startswith("/public/") and len(path) == len("/public/") + 16
    pub = requests.get(gw_mem.url + path)
    assert pub.status_code == 200 and pub.content == b"not for bob"
    assert "X-Object-Hash" not in pub.headers and "X-Object-Meta-A" not in pub.headers
    assert requests.get(gw_mem.url + path, headers={"Range": "bytes=4-6"}).content == b"for"
    assert requests.get(bob_url + "/c/private", headers=b.tok).status_code == 403
    a.req("POST", "/c/private", headers={"X-Object-Public": "false"})
    assert requests.get(gw_mem.url + path).status_code == 404


def test_quota_unicode_meta_and_sharing_accounts(gw_mem: GatewayThread) -> None:  # noqa: F811
    a = Client(gw_mem, "alice")
    b = Client(gw_mem, "bob")
    a.req("PUT", "/q", headers={"X-Container-Policy-Quota": "10"})
    assert a.req("PUT", "/q/o", data=b"12345678").status_code == 201
    assert a.req("PUT", "/q/p", data=b"123").status_code == 413
    assert a.req("PUT", "/q/o", data=b"1234567890").status_code == 201  # replacing fits
    assert a.req("HEAD", "/q/p").status_code == 404
    # Non-ASCII meta sent %-encoded (kamaki) is stored decoded and comes back as UTF-8, as
    # Swift answers unicode metadata; keys are normalised.
    a.req("PUT", "/q/o", data=b"x", headers={"X-Object-Meta-my_key": "caf%C3%A9"})
    h = a.req("HEAD", "/q/o").headers
    assert h["X-Object-Meta-My-Key"].encode("latin-1").decode() == "café"
    # The top level lists the accounts sharing something with the caller.
    top = f"{gw_mem.url}/object-store/v1"
    assert requests.get(top, headers=b.tok).status_code == 204
    a.req("POST", "/q/o", headers={"X-Object-Sharing": "read=bob"})
    assert requests.get(top + "?format=json", headers=b.tok).json() == [{"name": "alice"}]
    assert requests.get(top, headers=b.tok).text == "alice\n"


def test_purge_filters_and_container_delimiter(alice: Client) -> None:
    alice.req("PUT", "/c/a", data=b"1")
    alice.req("PUT", "/c/a", data=b"2")
    alice.req("PUT", "/c/b", data=b"3")
    alice.req("POST", "/c/b", headers={"X-Object-Sharing": "read=*"})
    alice.req("PUT", "/c/p", data=b"4", headers={"X-Object-Public": "true"})
    assert [i["name"] for i in alice.req("GET", "/c?format=json&shared").json()] == ["b"]
    assert [i["name"] for i in alice.req("GET", "/c?format=json&public").json()] == ["p"]
    assert len(alice.req("GET", "/c/a?version=list").json()["versions"]) == 2
    assert alice.req("DELETE", f"/c/a?until={time.time() + 1}").status_code == 204
    assert len(alice.req("GET", "/c/a?version=list").json()["versions"]) == 1
    assert alice.req("GET", "/c/a").content == b"2"
    assert alice.req("DELETE", "/c").status_code == 409
    assert alice.req("DELETE", "/c?delimiter=/").status_code == 204
    assert alice.req("HEAD", "/c").status_code == 404


def test_form_upload_creates_object(alice: Client) -> None:
    data = b"form data " * 1000
    r = alice.req("POST", "/c/form.txt",
                  files={"X-Object-Data": ("form.txt", data, "text/plain")})
    assert r.status_code == 201
    got = alice.req("GET", "/c/form.txt")
    assert got.content == data and got.headers["Content-Type"] == "text/plain"
    assert got.headers["ETag"] == hashlib.md5(data).hexdigest()
    bad = alice.req("POST", "/c/form2", files={"other": ("x", b"x")})
    assert bad.status_code == 400


def test_sharing_inherited_from_folder(gw_mem: GatewayThread) -> None:  # noqa: F811
    a = Client(gw_mem, "alice")
    b = Client(gw_mem, "bob")
    a.req("PUT", "/c")
    a.req("PUT", "/c/dir", data=b"", headers={"Content-Type": "application/directory"})
    a.req("PUT", "/c/dir/sub/file", data=b"inside")
    a.req("PUT", "/c/plain", data=b"p")
    a.req("PUT", "/c/plain/x", data=b"not inherited")
    a.req("POST", "/c/dir", headers={"X-Object-Sharing": "read=bob"})
    a.req("POST", "/c/plain", headers={"X-Object-Sharing": "read=bob"})
    url = b.base.replace("/bob", "/alice")
    r = requests.get(url + "/c/dir/sub/file", headers=b.tok)
    assert r.status_code == 200 and r.content == b"inside"
    assert r.headers["X-Object-Shared-By"] == "c/dir"
    assert requests.get(url + "/c/plain/x", headers=b.tok).status_code == 403
    names = [i["name"] for i in requests.get(url + "/c?format=json", headers=b.tok).json()]
    assert names == ["dir", "dir/sub/file", "plain"]


def test_listing_meta_filter(alice: Client) -> None:
    alice.req("PUT", "/c/a", data=b"1", headers={"X-Object-Meta-Color": "red",
                                                 "X-Object-Meta-Size": "3"})
    alice.req("PUT", "/c/b", data=b"2", headers={"X-Object-Meta-Color": "blue"})
    alice.req("PUT", "/c/c", data=b"3")

    def names(spec: str) -> list[str]:
        r = alice.req("GET", "/c?format=json", params={"meta": spec})
        return [i["name"] for i in r.json()]

    assert names("color") == ["a", "b"]
    assert names("!color") == ["c"]
    assert names("color=red") == ["a"]
    assert names("color!=red") == ["b"]
    assert names("color,size>=2") == ["a"]
    assert names("Color<c") == ["b"]


def test_concurrent_appends_are_not_lost(alice: Client, gw_mem: GatewayThread) -> None:  # noqa: F811
    import concurrent.futures

    alice.req("PUT", "/c/log", data=b"")

    def append(i: int) -> int:
        return alice.req("POST", "/c/log", data=b"%02d" % i, headers={
            "Content-Type": "application/octet-stream", "Content-Range": "bytes */*"}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(append, range(20))) == {204}
    body = alice.req("GET", "/c/log").content
    assert sorted(body[i : i + 2] for i in range(0, len(body), 2)) == [
        b"%02d" % i for i in range(20)]
    r = alice.req("GET", "/c/log", headers={"Range": "bytes=" + ",".join(["0-0"] * 60)})
    assert r.status_code == 200 and r.content == body  # too many ranges: whole object
    big = alice.req("POST", "/c/log", headers={"X-Object-Bytes": str(1 << 60)})
    assert big.status_code == 400


def test_hashmap_body_in_small_chunks(alice: Client, gw_mem: GatewayThread) -> None:  # noqa: F811
    block = b"q" * BS
    alice.req("POST", "/c", data=block, headers={"Content-Type": "application/octet-stream"})
    doc = json.dumps({"bytes": 8 * BS, "hashes": [ref_block_id(block)] * 8}).encode()
    chunks = (doc[i : i + 7] for i in range(0, len(doc), 7))  # chunked transfer encoding
    r = alice.req("PUT", "/c/gig?hashmap", data=chunks,
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    h = alice.req("HEAD", "/c/gig").headers
    assert h["Content-Length"] == str(8 * BS)
    assert h["ETag"] == hashlib.md5(block * 8).hexdigest()
    assert gw_mem.count_blocks() == 1
    tail = alice.req("GET", "/c/gig", headers={"Range": "bytes=-3"})
    assert tail.status_code == 206 and tail.content == b"qqq"


def test_blocks_are_durable_before_the_map_row(tmp_path: Path) -> None:
    """At the flush barrier the blocks exist and the object row does not yet."""
    import sqlite3

    from archipelago.blocker.memory import MemoryBlocker

    db = tmp_path / "meta.db"
    seen: list[tuple[int, int]] = []

    class Recording(MemoryBlocker):
        async def flush(self) -> None:
            con = sqlite3.connect(db)
            rows = con.execute("SELECT count(*) FROM versions WHERE name='o' AND cluster=0")
            seen.append((len(await self.list()), rows.fetchone()[0]))
            con.close()

    g = GatewayThread(Recording, db).start()
    try:
        c = Client(g, "alice")
        c.req("PUT", "/c")
        assert c.req("PUT", "/c/o", data=b"x" * (BS + 10)).status_code == 201
        assert seen and seen[-1] == (2, 0)
        assert c.req("HEAD", "/c/o").status_code == 200
    finally:
        g.stop()


def test_copy_and_move_trees(alice: Client, gw_mem: GatewayThread) -> None:  # noqa: F811
    alice.req("PUT", "/c/dir", data=b"", headers={"Content-Type": "application/directory"})
    alice.req("PUT", "/c/dir/a", data=b"A")
    alice.req("PUT", "/c/dir/sub/b", data=b"B")
    blocks = gw_mem.count_blocks()
    r = alice.req("COPY", "/c/dir?delimiter=/", headers={"Destination": "/c/copy"})
    assert r.status_code == 201
    assert alice.req("GET", "/c/copy/sub/b").content == b"B"
    r = alice.req("MOVE", "/c/copy?delimiter=/", headers={"Destination": "/c/moved"})
    assert r.status_code == 201
    names = alice.req("GET", "/c").text.split()
    assert names == ["dir", "dir/a", "dir/sub/b", "moved", "moved/a", "moved/sub/b"]
    assert gw_mem.count_blocks() == blocks
