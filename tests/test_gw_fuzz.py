"""Issue 23 acceptance: hypothesis fuzzes the gateway's request parsing.

Paths (odd %-encodings, dots, long and non-UTF-8 names), query parameters, headers,
metadata and hashmap JSON go over a raw socket to a real gateway (aiohttp on a
loopback port). Whatever comes in, the reply must be one well-framed HTTP response
(never a second reply or a stray byte after the body), never a 500, and it must come
before the client's timeout; a request pipelined behind it on the same connection is
then served correctly. ARCHIPELAGO_FUZZ_EXAMPLES=N runs longer hunts.
"""

from __future__ import annotations

import json
import os
import socket
import string
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gw_helpers import GatewayThread, memory_blocker

pytestmark = pytest.mark.timeout(240)
TIMEOUT = 20.0  # seconds a reply may take; the gateway answers these in milliseconds
ZERO = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayThread, dict[str, str]]]:
    """A gateway with users alice and bob, a container, an object and a folder."""
    g = GatewayThread(memory_blocker, tmp_path_factory.mktemp("fuzz") / "meta.db").start()
    try:
        tokens = {"alice": g.add_user("alice"), "bob": g.add_user("bob")}
        h = {"X-Auth-Token": tokens["alice"]}
        base = f"{g.url}/v1/alice"
        assert requests.put(f"{base}/c", headers=h, timeout=30).status_code == 201
        assert requests.put(f"{base}/c/o", data=b"0123456789" * 1000, headers=h,
                            timeout=30).status_code == 201
        assert requests.put(f"{base}/c/d", headers={**h, "Content-Type": "application/directory"},
                            timeout=30).status_code == 201
        yield g, tokens
    finally:
        g.stop()


# -- strategies -------------------------------------------------------------------------

_odd = st.sampled_from(["%", "%G1", "%FF", "%C3", "%00", "%0d%0a", "%2F", "%2e%2e", "..", ".",
                        "%ef%bf%bf", "%F0%9F%92%A9", "~", ";", ",", "=", "+", "*", ":", "@"])
_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_segment = st.one_of(
    st.sampled_from(["c", "o", "d", "c2", "x"]),
    _text.map(lambda t: quote(t, safe="")),
    st.lists(st.one_of(_odd, st.sampled_from(["a", "b", "/"])), max_size=6).map("".join),
    st.integers(250, 1100).map(lambda n: "n" * n),
)
#: Mostly paths that reach a handler (alice's container c, its objects), else anything.
_plain = st.builds(lambda segs: "/v1/alice/" + "/".join(segs), st.one_of(
    st.just([]), st.just(["c"]), st.tuples(st.just("c"), _segment).map(list),
    st.tuples(st.just("c"), st.sampled_from(["o", "d", "new", "d/sub"])).map(list),
    st.lists(_segment, min_size=1, max_size=3)))
_any = st.builds(
    lambda pre, acct, segs: pre + "/" + "/".join([acct, *segs]),
    st.sampled_from(["/v1", "/object-store/v1", "/image/v1.0/images", "", "/auth/v1.0",
                     "/public", "/info"]),
    st.sampled_from(["alice", "bob", "nobody", "", "%FF", "..", "*"]),
    st.lists(_segment, max_size=4),
)
_path = st.one_of(_plain, _plain, _plain, _any)
_number = st.one_of(
    st.integers(-2 ** 70, 2 ** 70).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "", "0x10", "1_000", "٣", "00", " 1", "1.5"]),
)
_qvalue = st.one_of(_number, _text, _odd, st.sampled_from(["json", "xml", "plain", "yaml"]))
_query = st.lists(st.tuples(
    st.sampled_from(["format", "limit", "marker", "end_marker", "prefix", "delimiter", "path",
                     "version", "until", "hashmap", "update", "shared", "public", "list",
                     "ignore_content_type", "meta", "multipart-manifest", "x"]),
    st.one_of(st.none(), _qvalue),
), max_size=4).map(lambda kv: "&".join(
    quote(k) if v is None else f"{quote(k)}={quote(v, safe='%')}" for k, v in kv))

#: Header values: printable text (no CR/LF: they would end the header, not fuzz it).
_hvalue = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=40),
    _number, _odd, st.sampled_from([
        "bytes=0-", "bytes=0-9,5-20,-3", "bytes=-0", "bytes=99999999999999999999-", "bytes=1-0",
        "bytes=" + ",".join(["0-"] * 60), "bytes 0-9/10", "bytes */*", "*", '"x"', "W/\"x\"",
        "application/directory", "application/folder", "text/plain; charset=utf-8",
        "read=*;write=bob", "read=alice:x", "write=*,carol", "true", "false", "/c/o", "c/o",
        "/c/d/../o", "Mon, 01 Jan 1900 00:00:00 GMT", "Tue, 32 Foo 2999 99:99:99 GMT",
        "foo%0d%0aX-Injected: yes", "chunked", "17179869184", "1099511627776"]))
_hname = st.one_of(
    st.sampled_from([
        "Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since",
        "If-Range", "Content-Type", "ETag", "Destination", "Destination-Account",
        "X-Copy-From", "X-Move-From", "X-Source-Account", "X-Source-Version",
        "X-Object-Sharing", "X-Object-Public", "X-Object-Manifest", "X-Object-Bytes",
        "X-Object-Content-Type", "Content-Range", "X-Fresh-Metadata", "X-Container-Policy-Quota",
        "X-Container-Policy-Versioning", "X-Container-Policy-Project", "X-Image-Meta-Name",
        "X-Image-Meta-Location", "X-Image-Meta-Property-Foo", "X-Image-Meta-Is-Public",
        "X-Image-Meta-Size", "X-Image-Meta-Disk-Format", "X-Remove-Object-Meta-A",
        "Accept", "X-Auth-User", "X-Auth-Key", "X-Storage-User", "X-Storage-Pass"]),
    st.builds(lambda p, n: p + n,
              st.sampled_from(["X-Object-Meta-", "X-Container-Meta-", "X-Account-Meta-",
                               "X-Remove-Container-Meta-"]),
              st.text(string.ascii_letters + string.digits + "-_.~!#$%&'*+^`|", min_size=0,
                      max_size=140)),
)
_hashes = st.lists(st.one_of(st.just(ZERO), st.text("0123456789abcdef", min_size=64,
                                                   max_size=64), _text), max_size=6)
_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                               st.floats(), _text),
                     lambda kids: st.one_of(st.lists(kids, max_size=4),
                                            st.dictionaries(_text, kids, max_size=4)),
                     max_leaves=12)
_hashmap = st.fixed_dictionaries(
    {"bytes": st.one_of(st.integers(-1, 2 ** 45), _json)},
    optional={"hashes": st.one_of(_hashes, _json), "block_size": st.one_of(
        st.integers(-1, 2 ** 40), _json), "block_hash": st.one_of(st.just("sha256"), _text)})
_body = st.one_of(
    st.just(b""), st.binary(max_size=300),
    _hashmap.map(lambda d: json.dumps(d).encode()),
    _json.map(lambda d: json.dumps(d).encode()),
    st.integers(50, 2000).map(lambda n: b"[" * n + b"]" * n),
)
_headers = st.lists(st.tuples(_hname, _hvalue), max_size=6)
_meta = st.lists(st.tuples(st.builds(lambda p, n: p + n, st.sampled_from(
    ["X-Object-Meta-", "X-Container-Meta-", "X-Account-Meta-"]), st.sampled_from(
    ["A", "b-c", "Ünï", "x" * 129, "", "k%0a"])), _hvalue), max_size=3)
_obj = st.one_of(st.sampled_from(["/v1/alice/c/o", "/v1/alice/c/d", "/v1/alice/c/new",
                                  "/v1/alice/c/d/sub"]),
                 _segment.map(lambda n: "/v1/alice/c/" + n))
_gw_query = st.sampled_from(["", "hashmap", "hashmap&format=json", "format=json",
                             "update", "version=list", "format=xml"])


def _family(methods: list[str], paths: st.SearchStrategy[str], queries: st.SearchStrategy[str],
            bodies: st.SearchStrategy[bytes], fixed: list[str]) -> st.SearchStrategy[dict]:
    """Requests that reach one handler: its method and path, fuzzed extras."""
    return st.fixed_dictionaries({
        "method": st.sampled_from(methods), "path": paths,
        "query": st.one_of(queries, st.builds(lambda a, b: "&".join(x for x in (a, b) if x),
                                              queries, _query)),
        "body": bodies,
        "headers": st.builds(lambda f, m, h: f + m + h, st.lists(st.tuples(
            st.sampled_from(fixed), _hvalue), max_size=3) if fixed else st.just([]), _meta,
            _headers),
        "token": st.one_of(st.just("alice"), st.just("alice"), st.sampled_from(["bob", "bad"])),
    })


_request = st.one_of(
    # uploads: plain bytes or hashmaps, with metadata, sharing, copies and moves
    _family(["PUT"], _obj, _gw_query, _body, ["Content-Type", "ETag", "X-Object-Sharing",
            "X-Object-Public", "X-Copy-From", "X-Move-From", "X-Object-Manifest",
            "X-Source-Account", "X-Source-Version", "X-Object-Bytes"]),
    # metadata and partial updates of objects
    _family(["POST"], _obj, _gw_query, st.one_of(st.just(b""), st.binary(max_size=64)),
            ["Content-Range", "X-Object-Bytes", "X-Object-Sharing", "X-Object-Public",
             "Content-Type", "X-Source-Object", "X-Source-Version", "X-Fresh-Metadata"]),
    # reads: ranges, preconditions, versions, hashmaps
    _family(["GET", "HEAD"], _obj, _gw_query, st.just(b""),
            ["Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Range",
             "If-Unmodified-Since", "Accept"]),
    _family(["COPY", "MOVE", "DELETE"], _obj, _gw_query, st.just(b""),
            ["Destination", "Destination-Account", "X-Fresh-Metadata", "Content-Type"]),
    # containers, the account and their listings
    _family(["GET", "HEAD", "PUT", "POST", "DELETE"],
            st.sampled_from(["/v1/alice", "/v1/alice/c", "/v1/alice/c2", "/v1/bob"]),
            _query, st.just(b""), ["X-Container-Policy-Quota", "X-Container-Policy-Versioning",
                                   "X-Container-Policy-Project", "Accept"]),
    # images
    _family(["GET", "HEAD", "POST", "PUT", "DELETE"], st.sampled_from(
        ["/image/v1.0/images", "/image/v1.0/images/", "/image/v1.0/images/detail"]) | st.builds(
        lambda s: "/image/v1.0/images/" + s, _segment), _query, _body,
        ["X-Image-Meta-Name", "X-Image-Meta-Location", "X-Image-Meta-Property-Foo",
         "X-Image-Meta-Is-Public", "X-Image-Meta-Size", "X-Image-Meta-Disk-Format"]),
    # anything at all
    st.fixed_dictionaries({
        "method": st.one_of(st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "COPY"]),
                            st.sampled_from(["MOVE", "OPTIONS", "PATCH", "TRACE", "FOO"])),
        "path": _path, "query": _query, "body": _body, "headers": _headers,
        "token": st.sampled_from(["alice", "bob", "bad", "none"]),
    }),
)


# -- the client side ----------------------------------------------------------------------

def _send(port: int, raw: bytes) -> bytes:
    """Send one request (Connection: close) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(raw)
        out = bytearray()
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass  # an abort; the framing check below reports what arrived
        return bytes(out)


def _framed(method: str, reply: bytes) -> tuple[int, dict[str, str], bytes, bytes]:
    """(status, headers, body, what follows) of the first response in ``reply``."""
    head, sep, rest = reply.partition(b"\r\n\r\n")
    assert sep, f"no complete response head: {reply[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    proto, status, _ = (lines[0] + " ").split(" ", 2)
    # (aiohttp answers requests its parser refused as HTTP/1.0)
    assert proto in ("HTTP/1.1", "HTTP/1.0") and status.isdigit(), lines[0]
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    code = int(status)
    if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
        return code, headers, b"", rest
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size_line, crlf, rest = rest.partition(b"\r\n")
            assert crlf, "truncated chunked body"
            n = int(size_line.split(b";")[0], 16)
            if n == 0:
                assert rest.startswith(b"\r\n"), f"no end of the chunked body: {rest[:80]!r}"
                return code, headers, bytes(body), rest[2:]
            body += rest[:n]
            assert rest[n:n + 2] == b"\r\n", "truncated chunk"
            rest = rest[n + 2:]
    assert "content-length" in headers, f"{code} without a length: {headers}"
    length = int(headers["content-length"])
    assert len(rest) >= length, f"{code}: body {len(rest)} bytes, Content-Length {length}"
    return code, headers, rest[:length], rest[length:]


def _build(r: dict, tokens: dict[str, str], port: int) -> bytes:
    """The fuzzed request (keep-alive), then a plain ``GET /info`` that closes."""
    target = r["path"] + ("?" + r["query"] if r["query"] else "")
    lines = [f"{r['method']} {target or '/'} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             f"Content-Length: {len(r['body'])}"]
    if r["token"] != "none":
        lines.append(f"X-Auth-Token: {tokens.get(r['token'], 'AUTH_bad')}")
    lines += [f"{k}: {v}" for k, v in r["headers"]]
    return (("\r\n".join(lines) + "\r\n\r\n").encode() + r["body"]
            + b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


@settings(max_examples=int(os.environ.get("ARCHIPELAGO_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(r=_request)
def test_gateway_never_fails_on_bad_requests(gw: tuple[GatewayThread, dict[str, str]],
                                            r: dict) -> None:
    """One well-framed reply, not a 500; the connection then serves the next request
    (pipelined behind it) or is closed: never stray bytes between the two."""
    g, tokens = gw
    raw = _build(r, tokens, g.port)
    try:
        reply = _send(g.port, raw)
    except TimeoutError:
        pytest.fail(f"no reply within {TIMEOUT}s to {raw[:300]!r}")
    code, headers, body, rest = _framed(r["method"], reply)
    assert code < 500 or code in (501, 507), (code, body[:300], raw[:400])
    if code >= 400:
        assert len(body) < 400 and b"Traceback" not in body, (code, body[:300])
    if rest:
        code2, _, body2, after = _framed("GET", rest)
        assert code2 == 200 and json.loads(body2)["swift"], (code2, body2[:200], raw[:400])
        assert after == b"", f"bytes after the last reply: {after[:80]!r}"
    else:  # closed after the first reply: it must have said so (or be HTTP/1.0)
        assert headers.get("connection", "").lower() == "close" or reply.startswith(
            b"HTTP/1.0"), (code, headers, raw[:400])
