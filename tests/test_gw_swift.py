"""Swift API of the gateway over real HTTP, driven by python-swiftclient and requests."""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import requests
from swiftclient.client import ClientException, Connection

from tests.gw_helpers import GatewayThread, gw, gw_mem  # noqa: F401

MiB = 1024 * 1024


def conn(g: GatewayThread, user: str, key: str) -> Connection:
    """A swiftclient connection authenticated through /auth/v1.0."""
    return Connection(authurl=f"{g.url}/auth/v1.0", user=user, key=key, retries=0,
                      timeout=30)


@pytest.fixture
def alice(gw: GatewayThread) -> Connection:  # noqa: F811
    return conn(gw, "alice", gw.add_user("alice"))


def test_auth_v1_and_info(gw: GatewayThread) -> None:  # noqa: F811
    key = gw.add_user("alice")
    r = requests.get(f"{gw.url}/auth/v1.0", headers={"X-Auth-User": "alice", "X-Auth-Key": key})
    assert r.status_code in (200, 204)
    assert r.headers["X-Storage-Url"] == f"{gw.url}/v1/alice"
    assert r.headers["X-Auth-Token"] and r.headers["X-Trans-Id"].startswith("tx")
    bad = requests.get(f"{gw.url}/auth/v1.0",
                       headers={"X-Auth-User": "alice", "X-Auth-Key": "wrong"})
    assert bad.status_code == 401
    with pytest.raises(ClientException) as e:
        conn(gw, "alice", "wrong").get_account()
    assert e.value.http_status == 401
    info = requests.get(f"{gw.url}/info").json()
    assert info["swift"]["max_object_name_length"] == 1024
    assert info["pithos"]["block_size"] == 4 * MiB
    # The /object-store/v1 alias answers like /v1.
    r = requests.head(f"{gw.url}/object-store/v1/alice", headers={"X-Auth-Token": key})
    assert r.status_code == 204


def test_account_and_containers(alice: Connection) -> None:
    alice.put_container("photos", headers={"X-Container-Meta-Color": "blue"})
    alice.put_container("docs")
    h = alice.head_container("photos")
    assert h["x-container-meta-color"] == "blue"
    assert h["x-container-block-size"] == str(4 * MiB)
    assert h["x-container-block-hash"] == "sha256"
    alice.post_container("photos", {"X-Container-Meta-Color": "red",
                                    "X-Container-Meta-Size": "L"})
    assert alice.head_container("photos")["x-container-meta-color"] == "red"
    # Container POST merges (Swift); an empty value removes a key.
    alice.post_container("photos", {"X-Container-Meta-Size": ""})
    h = alice.head_container("photos")
    assert h["x-container-meta-color"] == "red" and "x-container-meta-size" not in h
    alice.post_account({"X-Account-Meta-Owner": "Alice"})
    alice.put_object("photos", "a.jpg", b"x" * 10)
    hdrs, listing = alice.get_account()
    assert hdrs["x-account-meta-owner"] == "Alice"
    assert hdrs["x-account-container-count"] == "2"
    assert hdrs["x-account-bytes-used"] == "10"
    assert [(c["name"], c["count"], c["bytes"]) for c in listing] == [
        ("docs", 0, 0), ("photos", 1, 10)]
    _, listing = alice.get_account(marker="docs")
    assert [c["name"] for c in listing] == ["photos"]
    with pytest.raises(ClientException) as e:
        alice.delete_container("photos")
    assert e.value.http_status == 409
    alice.delete_object("photos", "a.jpg")
    alice.delete_container("photos")
    with pytest.raises(ClientException) as e:
        alice.head_container("photos")
    assert e.value.http_status == 404


def test_object_roundtrip_meta_and_etag(alice: Connection) -> None:
    alice.put_container("c")
    data = bytes(range(256)) * 4096 + b"tail"
    etag = alice.put_object("c", "dir/obj.bin", data, content_type="application/x-test",
                            headers={"X-Object-Meta-Kind": "sample",
                                     "Content-Disposition": "attachment; filename=o.bin",
                                     "Content-Encoding": "identity"})
    assert etag == hashlib.md5(data).hexdigest()
    hdrs, body = alice.get_object("c", "dir/obj.bin")
    assert body == data
    assert hdrs["etag"] == hashlib.md5(data).hexdigest()
    assert hdrs["content-type"] == "application/x-test"
    assert hdrs["x-object-meta-kind"] == "sample"
    assert hdrs["content-disposition"] == "attachment; filename=o.bin"
    assert hdrs["content-encoding"] == "identity"
    assert int(hdrs["content-length"]) == len(data)
    alice.post_object("c", "dir/obj.bin", {"X-Object-Meta-Other": "1"})
    h = alice.head_object("c", "dir/obj.bin")
    assert h["x-object-meta-other"] == "1" and "x-object-meta-kind" not in h
    alice.delete_object("c", "dir/obj.bin")
    with pytest.raises(ClientException) as e:
        alice.head_object("c", "dir/obj.bin")
    assert e.value.http_status == 404


def test_chunked_streaming_upload(alice: Connection, gw: GatewayThread) -> None:  # noqa: F811
    alice.put_container("c")
    parts = [bytes([i]) * (3 * MiB + 17) for i in range(1, 4)]
    data = b"".join(parts)
    # A generator body makes swiftclient use chunked transfer encoding.
    etag = alice.put_object("c", "big", (p for p in parts))
    assert etag == hashlib.md5(data).hexdigest()
    hdrs, body = alice.get_object("c", "big")
    assert body == data
    assert gw.count_blocks() == 3


def test_listing_parameters(alice: Connection, gw: GatewayThread) -> None:  # noqa: F811
    alice.put_container("c")
    names = ["a/1", "a/2", "a/b/3", "b", "c%d", "d_e"]
    for n in names:
        alice.put_object("c", n, n.encode())
    _, items = alice.get_container("c")
    assert [i["name"] for i in items] == names
    assert items[0]["hash"] == hashlib.md5(b"a/1").hexdigest()
    assert items[0]["x_object_hash"] == hashlib.sha256(b"a/1").hexdigest()
    _, items = alice.get_container("c", delimiter="/")
    assert [i.get("name") or i.get("subdir") for i in items] == ["a/", "b", "c%d", "d_e"]
    _, items = alice.get_container("c", prefix="a/", delimiter="/")
    assert [i.get("name") or i.get("subdir") for i in items] == ["a/1", "a/2", "a/b/"]
    # path= lists the objects directly under it, never subdir entries (Swift's
    # functional tests: TestContainerPaths).
    _, items = alice.get_container("c", path="a")
    assert [i.get("name") or i.get("subdir") for i in items] == ["a/1", "a/2"]
    _, items = alice.get_container("c", marker="a/2", end_marker="c%d")
    assert [i["name"] for i in items] == ["a/b/3", "b"]
    _, items = alice.get_container("c", limit=2)
    assert [i["name"] for i in items] == ["a/1", "a/2"]
    _, items = alice.get_container("c", prefix="c%")
    assert [i["name"] for i in items] == ["c%d"]
    tok = {"X-Auth-Token": alice.get_auth()[1]}
    plain = requests.get(f"{gw.url}/v1/alice/c?prefix=a/", headers=tok)
    assert plain.status_code == 200 and plain.text.splitlines() == ["a/1", "a/2", "a/b/3"]
    xml = requests.get(f"{gw.url}/v1/alice/c?format=xml&limit=1", headers=tok)
    assert xml.status_code == 200 and "<name>a/1</name>" in xml.text
    empty = requests.get(f"{gw.url}/v1/alice/c?prefix=zzz", headers=tok)
    assert empty.status_code == 204
    empty_json = requests.get(f"{gw.url}/v1/alice/c?prefix=zzz&format=json", headers=tok)
    assert empty_json.status_code == 200 and empty_json.json() == []


def test_ranges(alice: Connection, gw: GatewayThread) -> None:  # noqa: F811
    alice.put_container("c")
    data = bytes(i % 251 for i in range(5 * MiB))
    alice.put_object("c", "o", data)
    _, body = alice.get_object("c", "o", headers={"Range": "bytes=10-19"})
    assert body == data[10:20]
    # A range across the block boundary, and a suffix range.
    a = 4 * MiB - 5
    hdrs, body = alice.get_object("c", "o", headers={"Range": f"bytes={a}-{a + 9}"})
    assert body == data[a : a + 10]
    assert hdrs["content-range"] == f"bytes {a}-{a + 9}/{len(data)}"
    _, body = alice.get_object("c", "o", headers={"Range": "bytes=-7"})
    assert body == data[-7:]
    tok = {"X-Auth-Token": alice.get_auth()[1]}
    r = requests.get(f"{gw.url}/v1/alice/c/o", headers={**tok, "Range": "bytes=0-3,100-103"})
    assert r.status_code == 206
    ctype = r.headers["Content-Type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=")[1].encode()
    parts = [p for p in r.content.split(b"--" + boundary) if p.strip() not in (b"", b"--")]
    assert len(parts) == 2
    assert parts[0].endswith(b"\r\n\r\n" + data[0:4] + b"\r\n")
    assert b"Content-Range: bytes 100-103/" in parts[1]
    assert parts[1].endswith(data[100:104] + b"\r\n")
    etag = hashlib.md5(data).hexdigest()
    r = requests.get(f"{gw.url}/v1/alice/c/o",
                     headers={**tok, "Range": "bytes=0-1", "If-Range": f'"{etag}"'})
    assert r.status_code == 206 and r.content == data[:2]
    r = requests.get(f"{gw.url}/v1/alice/c/o",
                     headers={**tok, "Range": "bytes=0-1", "If-Range": '"other"'})
    assert r.status_code == 200 and len(r.content) == len(data)
    r = requests.head(f"{gw.url}/v1/alice/c/o?disposition-type=attachment", headers=tok)
    assert r.headers["Content-Disposition"] == "attachment; filename=o"
    r = requests.get(f"{gw.url}/v1/alice/c/o", headers={**tok, "Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_conditionals(alice: Connection, gw: GatewayThread) -> None:  # noqa: F811
    alice.put_container("c")
    etag = alice.put_object("c", "o", b"hello")
    tok = {"X-Auth-Token": alice.get_auth()[1]}
    url = f"{gw.url}/v1/alice/c/o"
    assert requests.get(url, headers={**tok, "If-Match": etag}).status_code == 200
    assert requests.get(url, headers={**tok, "If-Match": '"nope"'}).status_code == 412
    assert requests.get(url, headers={**tok, "If-None-Match": etag}).status_code == 304
    assert requests.get(url, headers={**tok, "If-None-Match": "x"}).status_code == 200
    future = email.utils.formatdate(time.time() + 3600, usegmt=True)
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert requests.get(url, headers={**tok, "If-Modified-Since": future}).status_code == 304
    assert requests.get(url, headers={**tok, "If-Modified-Since": past}).status_code == 200
    assert requests.get(url, headers={**tok, "If-Unmodified-Since": past}).status_code == 412
    # If-None-Match: * on PUT refuses to overwrite; If-Match on PUT guards the version.
    r = requests.put(url, data=b"x", headers={**tok, "If-None-Match": "*"})
    assert r.status_code == 412
    r = requests.put(url, data=b"x", headers={**tok, "If-Match": '"old"'})
    assert r.status_code == 412
    r = requests.put(url, data=b"x", headers={**tok, "If-Match": etag})
    assert r.status_code == 201


def test_copy_and_move(alice: Connection, gw: GatewayThread) -> None:  # noqa: F811
    alice.put_container("c")
    alice.put_container("d")
    data = b"payload" * 1000
    alice.put_object("c", "src", data, headers={"X-Object-Meta-A": "1"})
    blocks = gw.count_blocks()
    alice.copy_object("c", "src", "/d/copy", headers={"X-Object-Meta-B": "2"})
    h, body = alice.get_object("d", "copy")
    assert body == data and h["x-object-meta-a"] == "1" and h["x-object-meta-b"] == "2"
    src_uuid = alice.head_object("c", "src")["x-object-uuid"]
    assert h["x-object-uuid"] != src_uuid
    alice.put_object("d", "copy2", b"", headers={"X-Copy-From": "/c/src"})
    assert alice.get_object("d", "copy2")[1] == data
    tok = {"X-Auth-Token": alice.get_auth()[1]}
    r = requests.request("MOVE", f"{gw.url}/v1/alice/c/src",
                         headers={**tok, "Destination": "/d/moved"})
    assert r.status_code == 201
    moved = alice.head_object("d", "moved")
    assert moved["x-object-uuid"] == src_uuid
    with pytest.raises(ClientException):
        alice.head_object("c", "src")
    alice.put_object("c", "back", b"", headers={"X-Move-From": "/d/moved"})
    assert alice.get_object("c", "back")[1] == data
    r = requests.request("COPY", f"{gw.url}/v1/alice/c/missing",
                         headers={**tok, "Destination": "/d/x"})
    assert r.status_code == 404
    assert gw.count_blocks() == blocks  # no data moved


def test_isolation_between_accounts(gw_mem: GatewayThread) -> None:  # noqa: F811
    g = gw_mem
    a = conn(g, "alice", g.add_user("alice"))
    bob_key = g.add_user("bob")
    a.put_container("private")
    a.put_object("private", "secret", b"s3cr3t")
    bob = {"X-Auth-Token": bob_key}
    base = f"{g.url}/v1/alice"
    for method, path in [("HEAD", ""), ("GET", ""), ("POST", ""), ("GET", "/private"),
                         ("HEAD", "/private"), ("PUT", "/private"), ("DELETE", "/private"),
                         ("GET", "/private/secret"), ("HEAD", "/private/secret"),
                         ("PUT", "/private/secret"), ("DELETE", "/private/secret"),
                         ("POST", "/private/secret"), ("GET", "/nosuch"),
                         ("GET", "/nosuch/obj"), ("GET", "/private/nosuch")]:
        r = requests.request(method, base + path, headers=bob, data=b"x" if method == "PUT"
                             else None)
        assert r.status_code == 403, (method, path, r.status_code)
    assert requests.get(base + "/private/secret").status_code == 401
    assert requests.get(base + "/private/secret",
                        headers={"X-Auth-Token": "bogus"}).status_code == 401
    # A COPY from alice's object into bob's own account is refused too.
    requests.put(f"{g.url}/v1/bob/mine", headers=bob)
    r = requests.put(f"{g.url}/v1/bob/mine/x", headers={**bob, "X-Copy-From": "/private/secret",
                                                         "X-Source-Account": "alice"})
    assert r.status_code == 403
    assert a.get_object("private", "secret")[1] == b"s3cr3t"
    listing = requests.get(f"{g.url}/v1/bob?format=json", headers=bob).json()
    assert [(c["name"], c["count"]) for c in listing] == [("mine", 0)]


def test_manifest_post_type_and_counts(alice: Connection, gw: GatewayThread) -> None:  # noqa: F811
    alice.put_container("segs")
    alice.put_container("c")
    parts = [b"a" * 1000, b"b" * 3000, b"c" * 10]
    for i, p in enumerate(parts):
        alice.put_object("segs", f"file/{i:03d}", p)
    alice.put_object("c", "file", b"", headers={"X-Object-Manifest": "segs/file/"})
    hdrs, body = alice.get_object("c", "file")
    assert body == b"".join(parts)
    assert int(hdrs["content-length"]) == 4010
    expected = hashlib.md5("".join(hashlib.md5(p).hexdigest() for p in parts).encode())
    assert hdrs["etag"] == f'"{expected.hexdigest()}"'
    _, body = alice.get_object("c", "file", headers={"Range": "bytes=990-1010"})
    assert body == b"a" * 10 + b"b" * 11
    tok = {"X-Auth-Token": alice.get_auth()[1]}
    raw = requests.get(f"{gw.url}/v1/alice/c/file?multipart-manifest=get", headers=tok)
    assert raw.content == b""
    alice.post_object("c", "file", {"Content-Type": "text/x-changed",
                                    "X-Object-Manifest": "segs/file/"})
    assert alice.head_object("c", "file")["content-type"] == "text/x-changed"
    h = alice.head_account()
    assert h["x-account-object-count"] == "4" and h["x-account-bytes-used"] == "4010"


def test_swift_service_segmented_upload_and_verified_download(
        gw_mem: GatewayThread, tmp_path: Path) -> None:  # noqa: F811
    """swiftclient's own upload (DLO segments) and download (which checks MD5 ETags)."""
    from swiftclient.service import SwiftService, SwiftUploadObject

    key = gw_mem.add_user("alice")
    src = tmp_path / "file.bin"
    data = os.urandom(5 * MiB + 123)
    src.write_bytes(data)
    opts = {"auth": gw_mem.url + "/auth/v1.0", "user": "alice", "key": key,
            "auth_version": "1.0", "retries": 0}
    out = tmp_path / "out"
    with SwiftService(options=opts) as sw:
        up = list(sw.upload("c", [SwiftUploadObject(str(src), object_name="seg")],
                            options={"segment_size": 2 * MiB}))
        up += list(sw.upload("c", [SwiftUploadObject(str(src), object_name="whole")]))
        assert all(r["success"] for r in up), [r.get("error") for r in up]
        assert sum(r["action"] == "upload_segment" for r in up) == 3
        down = list(sw.download("c", ["seg", "whole"], options={"out_directory": str(out)}))
        assert all(r["success"] for r in down), [r.get("error") for r in down]
    assert (out / "seg").read_bytes() == data
    assert (out / "whole").read_bytes() == data


def test_unicode_names(alice: Connection) -> None:
    alice.put_container("καλάθι")
    alice.put_object("καλάθι", "φάκελος/€ and spaces.txt", b"euro",
                     headers={"X-Object-Meta-Note": "ok"})
    _, items = alice.get_container("καλάθι")
    assert [i["name"] for i in items] == ["φάκελος/€ and spaces.txt"]
    alice.copy_object("καλάθι", "φάκελος/€ and spaces.txt", "/καλάθι/αντίγραφο")
    assert alice.get_object("καλάθι", "αντίγραφο")[1] == b"euro"
    _, conts = alice.get_account()
    assert [c["name"] for c in conts] == ["καλάθι"]


def test_static_large_object_manifest(alice: Connection) -> None:
    """An SLO manifest naming a missing segment is refused (400) and stores nothing; one
    over stored segments reads as their concatenation, with Swift's ETag."""
    alice.put_container("c")
    manifest = b'[{"path": "/c/part", "etag": null, "size_bytes": null}]'
    with pytest.raises(ClientException) as ei:
        alice.put_object("c", "slo", manifest, query_string="multipart-manifest=put")
    assert ei.value.http_status == 400
    with pytest.raises(ClientException) as ei:
        alice.head_object("c", "slo")
    assert ei.value.http_status == 404
    e1 = alice.put_object("c", "p1", b"a" * 1000)
    e2 = alice.put_object("c", "p2", b"b" * 10)
    doc = json.dumps([{"path": "/c/p1", "etag": e1, "size_bytes": 1000},
                      {"path": "/c/p2", "etag": None, "size_bytes": None}])
    alice.put_object("c", "slo", doc, query_string="multipart-manifest=put")
    hdrs, body = alice.get_object("c", "slo")
    assert body == b"a" * 1000 + b"b" * 10
    assert hdrs["etag"] == f'"{hashlib.md5((e1 + e2).encode()).hexdigest()}"'
    assert hdrs["x-static-large-object"] == "True"
    _, raw = alice.get_object("c", "slo", query_string="multipart-manifest=get")
    assert [seg["name"] for seg in json.loads(raw)] == ["/c/p1", "/c/p2"]


@pytest.mark.timeout(30)
def test_delimiter_listing_pages_past_a_subdir_marker(alice: Connection) -> None:
    """swiftclient pages with the last entry as marker; a subdir must not come back
    (`swift list C --prefix P -d /` looped forever printing the same subdir)."""
    alice.put_container("d")
    for name in ("a/1", "a/2", "b", "c/x/1", "c/y"):
        alice.put_object("d", name, b"x")
    _, items = alice.get_container("d", delimiter="/", full_listing=True)
    assert [i.get("subdir") or i["name"] for i in items] == ["a/", "b", "c/"]
    _, items = alice.get_container("d", delimiter="/", marker="a/")
    assert [i.get("subdir") or i["name"] for i in items] == ["b", "c/"]
    _, items = alice.get_container("d", prefix="c/", delimiter="/", full_listing=True)
    assert [i.get("subdir") or i["name"] for i in items] == ["c/x/", "c/y"]


def test_container_acls_and_anonymous_reads(gw_mem: GatewayThread) -> None:  # noqa: F811
    """X-Container-Read/Write grant other accounts (write without read is a drop box);
    ".r:*" lets requests without a token read objects, ".rlistings" list them; Pithos
    sharing with "*" never reaches anonymous requests."""
    a = conn(gw_mem, "alice", gw_mem.add_user("alice"))
    bob = {"X-Auth-Token": gw_mem.add_user("bob")}
    url = f"{gw_mem.url}/v1/alice"
    a.put_container("drop", headers={"X-Container-Write": "bob"})
    assert requests.put(f"{url}/drop/o", data=b"from bob", headers=bob,
                        timeout=30).status_code == 201
    assert requests.get(f"{url}/drop/o", headers=bob, timeout=30).status_code == 403
    assert a.get_object("drop", "o")[1] == b"from bob"
    a.put_container("pub", headers={"X-Container-Read": ".r:*"})
    a.put_object("pub", "x", b"hello")
    a.put_object("pub", "shared", b"s", headers={"X-Object-Sharing": "read=*"})
    assert requests.get(f"{url}/pub/x", timeout=30).content == b"hello"
    r = requests.get(f"{url}/pub", timeout=30)
    assert r.status_code == 401 and "Swift realm" in r.headers["WWW-Authenticate"]
    a.post_container("pub", headers={"X-Container-Read": ".r:*,.rlistings"})
    assert requests.get(f"{url}/pub", timeout=30).text.split() == ["shared", "x"]
    assert requests.put(f"{url}/pub/y", data=b"no", timeout=30).status_code == 401
    a.put_container("private")
    a.put_object("private", "s", b"s", headers={"X-Object-Sharing": "read=*"})
    assert requests.get(f"{url}/private/s", timeout=30).status_code == 401
    assert requests.get(url, timeout=30).status_code == 401
    # "*" is every user, not anyone.
    assert requests.get(f"{url}/private/s", headers=bob, timeout=30).content == b"s"
