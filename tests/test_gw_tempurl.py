"""TempURL confinement through real HTTP: a signed URL does what Swift lets it do --
its method on its object (or prefix) -- and nothing an owner's token could do besides
(the rule is written once, in pithos_gw/tempurl.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
import requests

from tests.gw_helpers import GatewayThread, gw_mem  # noqa: F401
from tests.gw_security_helpers import BS, FaultyBlocker, MiB, raw_get

T = 30
SECRET = b"the owner's secret in another container"


def _q(method: str, path: str, key: str = "k1", prefix: str | None = None) -> str:
    exp = int(time.time()) + 600
    signed = f"prefix:{path}/{prefix}" if prefix is not None else path
    sig = hmac.new(key.encode(), f"{method}\n{exp}\n{signed}".encode(),
                   hashlib.sha256).hexdigest()
    q = f"temp_url_sig={sig}&temp_url_expires={exp}"
    return q + (f"&temp_url_prefix={prefix}" if prefix is not None else "")


@pytest.fixture
def alice(gw_mem: GatewayThread) -> tuple[str, dict[str, str]]:  # noqa: F811
    """Account alice with an account TempURL key k1, containers c and private, and
    private/secret holding SECRET."""
    tok = {"X-Auth-Token": gw_mem.add_user("alice")}
    url = f"{gw_mem.url}/v1/alice"
    requests.post(url, headers={**tok, "X-Account-Meta-Temp-URL-Key": "k1"}, timeout=T)
    for c in ("c", "private"):
        assert requests.put(f"{url}/{c}", headers=tok, timeout=T).status_code == 201
    assert requests.put(f"{url}/private/secret", data=SECRET, headers=tok,
                        timeout=T).status_code == 201
    return url, tok


def _owner_view(url: str, tok: dict[str, str], name: str) -> requests.Response:
    return requests.get(f"{url}/{name}", headers=tok, timeout=T)


def test_put_cannot_share_or_publish(alice: tuple[str, dict[str, str]]) -> None:
    url, tok = alice
    q = _q("PUT", "/v1/alice/c/o")
    for hdr in ({"X-Object-Sharing": "read=*"}, {"X-Object-Public": "true"}):
        r = requests.put(f"{url}/c/o?{q}", data=b"x", headers=hdr, timeout=T)
        assert r.status_code == 403, (hdr, r.status_code)
    assert _owner_view(url, tok, "c/o").status_code == 404  # refused before any data moved
    assert requests.put(f"{url}/c/o?{q}", data=b"x", timeout=T).status_code == 201
    h = requests.head(f"{url}/c/o", headers=tok, timeout=T).headers
    assert "X-Object-Sharing" not in h and "X-Object-Public" not in h


def test_post_cannot_share_or_publish_but_sets_meta(alice: tuple[str, dict[str, str]]) -> None:
    url, tok = alice
    requests.put(f"{url}/c/o", data=b"x", headers=tok, timeout=T)
    q = _q("POST", "/v1/alice/c/o")
    for hdr in ({"X-Object-Sharing": "read=bob"}, {"X-Object-Public": "yes"}):
        assert requests.post(f"{url}/c/o?{q}", headers=hdr, timeout=T).status_code == 403
    h = requests.head(f"{url}/c/o", headers=tok, timeout=T).headers
    assert "X-Object-Sharing" not in h and "X-Object-Public" not in h
    assert requests.post(f"{url}/c/o?{q}", headers={"X-Object-Meta-Color": "blue"},
                         timeout=T).status_code == 202
    assert requests.head(f"{url}/c/o", headers=tok,
                         timeout=T).headers["X-Object-Meta-Color"] == "blue"
    # Swift's HEAD accepts a POST signature too.
    assert requests.head(f"{url}/c/o?{q}", timeout=T).status_code == 200


@pytest.mark.parametrize("method,headers", [
    ("PUT", {"X-Copy-From": "private/secret"}),
    ("PUT", {"X-Copy-From": "private/secret", "X-Copy-From-Account": "alice"}),
    ("PUT", {"X-Move-From": "private/secret"}),
    ("PUT", {"X-Object-Manifest": "private/sec"}),
    ("PUT", {"X-Object-Manifest": "c/seg"}),  # Swift 2.38 refuses its own container too
    ("PUT", {"X-Symlink-Target": "private/secret"}),
    ("POST", {"X-Object-Manifest": "private/sec"}),
    ("POST", {"X-Source-Object": "/private/secret", "Content-Range": "bytes */*"}),
    ("POST", {"Content-Range": "bytes 0-0/*"}),
    ("POST", {"X-Object-Bytes": "1"}),
    ("POST", {"Content-Type": "multipart/form-data; boundary=b"}),
])
def test_no_pointer_to_other_data(alice: tuple[str, dict[str, str]], method: str,
                                  headers: dict[str, str]) -> None:
    url, tok = alice
    requests.put(f"{url}/c/o", data=b"mine", headers=tok, timeout=T)
    q = _q(method, "/v1/alice/c/o")
    r = requests.request(method, f"{url}/c/o?{q}", data=b"z", headers=headers, timeout=T)
    assert r.status_code == 400, r.status_code
    got = _owner_view(url, tok, "c/o")
    assert got.content == b"mine" and "X-Object-Manifest" not in got.headers


def test_query_beyond_the_signature_is_dropped(alice: tuple[str, dict[str, str]]) -> None:
    """?multipart-manifest=put and ?hashmap would make the PUT a pointer to the owner's
    other data; Swift drops every parameter but its own, so the body is stored as is."""
    url, tok = alice
    q = _q("PUT", "/v1/alice/c/o")
    manifest = json.dumps([{"path": "/private/secret", "etag": None, "size_bytes": None}])
    r = requests.put(f"{url}/c/o?{q}&multipart-manifest=put", data=manifest, timeout=T)
    assert r.status_code == 201
    assert _owner_view(url, tok, "c/o").content == manifest.encode()
    hm = requests.get(f"{url}/private/secret?hashmap&format=json", headers=tok,
                      timeout=T).json()
    body = json.dumps({"bytes": hm["bytes"], "hashes": hm["hashes"]})
    r = requests.put(f"{url}/c/o?{q}&hashmap&format=json", data=body,
                     headers={"Content-Type": "application/octet-stream"}, timeout=T)
    assert r.status_code == 201
    assert _owner_view(url, tok, "c/o").content == body.encode()
    # Swift's incoming_remove_headers are dropped (the clone without them keeps the body).
    r = requests.put(f"{url}/c/o?{q}", data=b"t" * 70000, timeout=T,
                     headers={"X-Timestamp": "1", "X-Open-Expired": "true"})
    assert r.status_code == 201 and _owner_view(url, tok, "c/o").content == b"t" * 70000
    # A DELETE with ?delimiter would delete everything under the object's name.
    for n in ("d", "d/kept"):
        requests.put(f"{url}/c/{n}", data=b"x", headers=tok, timeout=T)
    qd = _q("DELETE", "/v1/alice/c/d")
    assert requests.delete(f"{url}/c/d?{qd}&delimiter=/", timeout=T).status_code == 204
    assert _owner_view(url, tok, "c/d").status_code == 404
    assert _owner_view(url, tok, "c/d/kept").status_code == 200


def test_no_account_or_container_operation(alice: tuple[str, dict[str, str]]) -> None:
    url, tok = alice
    for method, path, extra, hdr in [
            ("GET", "/v1/alice/c", "", {}),
            ("PUT", "/v1/alice/new", "", {}),
            ("POST", "/v1/alice/c", "", {"X-Container-Read": ".r:*"}),
            ("DELETE", "/v1/alice/c", "", {}),
            ("POST", "/v1/alice", "", {"X-Account-Meta-Temp-URL-Key": "mine"}),
            ("GET", "/v1/alice", "", {}),
            ("POST", "/v1/alice", "&bulk-delete", {})]:
        q = _q(method, path)
        r = requests.request(method, f"{url.rsplit('/v1/', 1)[0]}{path}?{q}{extra}",
                             headers=hdr, data=b"/private/secret\n", timeout=T)
        assert r.status_code == 401, (method, path, r.status_code)
    # A prefix reaches the objects under it only.
    qp = _q("GET", "/v1/alice/private", prefix="sec")
    assert requests.get(f"{url}/private/secret?{qp}", timeout=T).content == SECRET
    qp = _q("GET", "/v1/alice/c", prefix="")
    assert requests.get(f"{url}/private/secret?{qp}", timeout=T).status_code == 401
    assert requests.head(f"{url}/c?{qp}", timeout=T).status_code == 401
    assert _owner_view(url, tok, "private/secret").content == SECRET
    assert requests.head(url, headers=tok, timeout=T).headers[
        "X-Account-Meta-Temp-Url-Key"] == "k1"


def test_info_names_the_header_rules(gw_mem: GatewayThread) -> None:  # noqa: F811
    info = requests.get(f"{gw_mem.url}/info", timeout=T).json()["tempurl"]
    assert info["outgoing_allow_headers"] == ["x-object-meta-public-*"]
    assert {"x-object-meta-*", "x-object-sharing"} <= set(info["outgoing_remove_headers"])
    assert set(info["incoming_remove_headers"]) == {"x-timestamp", "x-open-expired"}


def test_answers_hide_owner_metadata_and_permissions(
        gw_mem: GatewayThread, alice: tuple[str, dict[str, str]]) -> None:  # noqa: F811
    url, tok = alice
    gw_mem.add_user("bob")
    requests.put(f"{url}/c/o", data=b"x", timeout=T, headers={
        **tok, "X-Object-Meta-Secret": "s", "X-Object-Meta-Public-Title": "t",
        "X-Object-Sharing": "read=bob", "X-Object-Public": "true"})
    owner = requests.head(f"{url}/c/o", headers=tok, timeout=T).headers
    assert {"X-Object-Meta-Secret", "X-Object-Sharing", "X-Object-Public"} <= set(owner)
    q = _q("GET", "/v1/alice/c/o")
    for r in (requests.get(f"{url}/c/o?{q}", timeout=T),
              requests.head(f"{url}/c/o?{q}", timeout=T)):
        assert r.status_code == 200
        assert r.headers["X-Object-Meta-Public-Title"] == "t"
        for name in ("X-Object-Meta-Secret", "X-Object-Sharing", "X-Object-Public",
                     "X-Object-Modified-By", "X-Object-Allowed-To"):
            assert name not in r.headers, name


def test_a_read_error_after_headers_aborts_a_tempurl_get(tmp_path: Path) -> None:
    """A TempURL request is served as a confined copy of itself: an error after its
    headers went out must still abort the connection (no error text inside a 200)."""
    g = GatewayThread(FaultyBlocker, tmp_path / "meta.db").start()
    try:
        tok = {"X-Auth-Token": g.add_user("alice")}
        url = f"{g.url}/v1/alice"
        requests.post(url, headers={**tok, "X-Account-Meta-Temp-URL-Key": "k1"}, timeout=T)
        requests.put(f"{url}/c", headers=tok, timeout=T)
        first, second = b"a" * BS, b"b" * (2 * MiB)
        assert requests.put(f"{url}/c/six", data=first + second, headers=tok,
                            timeout=T).status_code == 201
        g.blocker.bad.add(hashlib.sha256(second).hexdigest())  # type: ignore[attr-defined]
        # read until the server closes (a kept-open connection times out: failure)
        head, body = raw_get(g, f"/v1/alice/c/six?{_q('GET', '/v1/alice/c/six')}")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert len(body) < len(first + second) and b"HTTP/1.1" not in body
        assert body == first[: len(body)]
    finally:
        g.stop()
