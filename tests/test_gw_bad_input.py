"""Bad input to the gateway gets the right 4xx with a short body; aborted uploads leave nothing."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.gw_helpers import GatewayThread, gw_mem  # noqa: F401

MiB = 1024 * 1024
HASH = "a" * 64


@pytest.fixture
def env(gw_mem: GatewayThread) -> tuple[GatewayThread, str, dict[str, str]]:  # noqa: F811
    tok = {"X-Auth-Token": gw_mem.add_user("alice")}
    base = f"{gw_mem.url}/v1/alice"
    assert requests.put(base + "/c", headers=tok).status_code == 201
    return gw_mem, base, tok


def short(r: requests.Response, status: int) -> None:
    """The status is as expected and the body is a short message, not a traceback."""
    assert r.status_code == status, (r.status_code, r.text)
    assert len(r.content) < 400
    assert b"Traceback" not in r.content


@pytest.mark.parametrize("body", [
    b"{not json",
    b"<object><hash>x</hash></object>",
    json.dumps({"bytes": 5}).encode(),
    json.dumps({"bytes": -1, "hashes": [HASH]}).encode(),
    json.dumps({"bytes": 5, "hashes": ["xyz"]}).encode(),
    json.dumps({"bytes": 5, "hashes": [HASH, HASH]}).encode(),
    json.dumps({"bytes": 9 * MiB, "hashes": [HASH, HASH]}).encode(),
    json.dumps({"bytes": 5, "hashes": [HASH], "block_size": 1024}).encode(),
    json.dumps([HASH]).encode(),
])
def test_malformed_hashmaps(env: tuple[GatewayThread, str, dict[str, str]], body: bytes) -> None:
    _, base, tok = env
    r = requests.put(base + "/c/o?hashmap", data=body,
                     headers={**tok, "Content-Type": "application/json"})
    short(r, 400)
    assert requests.head(base + "/c/o", headers=tok).status_code == 404


def test_empty_hashmap_creates_empty_object(
        env: tuple[GatewayThread, str, dict[str, str]]) -> None:
    """kamaki sends {"bytes": 0, "hashes": []} for an empty file: an empty object."""
    _, base, tok = env
    tok = {**tok, "Content-Type": "application/json"}
    r = requests.put(base + "/c/empty?hashmap", headers=tok,
                     data=json.dumps({"bytes": 0, "hashes": []}).encode())
    assert r.status_code == 201, r.text
    got = requests.get(base + "/c/empty", headers=tok)
    assert got.status_code == 200 and got.content == b""
    hm = requests.get(base + "/c/empty?hashmap&format=json", headers=tok).json()
    assert hm["bytes"] == 0
    again = requests.put(base + "/c/empty2?hashmap", headers=tok, data=json.dumps(hm).encode())
    assert again.status_code == 201, again.text


def test_names_encoding_ranges_and_meta(env: tuple[GatewayThread, str, dict[str, str]]) -> None:
    g, base, tok = env
    short(requests.put(base + "/" + "c" * 257, headers=tok), 400)
    short(requests.put(base + "/c/" + "o" * 1025, data=b"x", headers=tok), 400)
    assert requests.put(base + "/c/" + "o" * 1024, data=b"x", headers=tok).status_code == 201
    # Swift's answer to invalid UTF-8 in a name: 412 "Invalid UTF8 or contains NULL".
    short(requests.get(base + "/c/%FF%FE", headers=tok), 412)
    short(requests.put(base + "/c/bad%C3", data=b"x", headers=tok), 412)
    requests.put(base + "/c/small", data=b"12345", headers=tok)
    r = requests.get(base + "/c/small", headers={**tok, "Range": "bytes=5-9"})
    short(r, 416)
    assert r.headers["Content-Range"] == "bytes */5"
    # A malformed Range is ignored, as HTTP says.
    assert requests.get(base + "/c/small", headers={**tok, "Range": "bytes=x-y"}).content == (
        b"12345")
    short(requests.put(base + "/c/m", data=b"x",
                       headers={**tok, "X-Object-Meta-Big": "v" * 257}), 400)
    short(requests.put(base + "/c/m", data=b"x",
                       headers={**tok, "X-Object-Meta-" + "k" * 129: "v"}), 400)
    many = {f"X-Object-Meta-K{i}": "v" for i in range(33)}
    short(requests.put(base + "/c/m", data=b"x", headers={**tok, **many}), 400)
    # A header beyond the HTTP parser's limit is refused before any handler runs.
    r = requests.put(base + "/c/m", data=b"x", headers={**tok, "X-Object-Meta-H": "v" * 20000})
    short(r, 400)
    short(requests.put(base + "/c/m", data=b"hello", headers={**tok, "ETag": "0" * 32}), 422)
    assert requests.head(base + "/c/m", headers=tok).status_code == 404
    # A limit that is not digits is ignored, one above the maximum is 412 (Swift).
    assert requests.get(base + "/c?limit=abc", headers=tok).status_code == 200
    short(requests.get(base + "/c?limit=10001", headers=tok), 412)
    short(requests.get(base + "/c?format=yaml", headers=tok), 400)
    short(requests.put(base + "/c/s", data=b"x", headers={**tok, "X-Object-Sharing": "rd=x"}),
          400)
    short(requests.request("COPY", base + "/c/small", headers=tok), 412)  # no Destination
    short(requests.request("PATCH", base + "/c/small", headers=tok), 405)
    short(requests.get(g.url + "/nowhere"), 404)
    short(requests.post(base + "/c/small", headers={
        **tok, "Content-Type": "application/octet-stream", "Content-Range": "garbage"}), 416)


def _raw(g: GatewayThread, head: str, body: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    s.sendall(head.encode() + b"\r\n" + body)
    return s


def test_put_without_length_is_411(env: tuple[GatewayThread, str, dict[str, str]]) -> None:
    g, _, tok = env
    s = _raw(g, f"PUT /v1/alice/c/nolen HTTP/1.1\r\nHost: x\r\nX-Auth-Token: "
                f"{tok['X-Auth-Token']}\r\nConnection: close\r\n")
    reply = s.recv(4096)
    s.close()
    assert reply.startswith(b"HTTP/1.1 411")


def test_disconnect_mid_upload_leaves_no_object(
        env: tuple[GatewayThread, str, dict[str, str]]) -> None:
    g, base, tok = env
    for name, framing in (("cl", "Content-Length: 10485760\r\n"),
                          ("chunked", "Transfer-Encoding: chunked\r\n")):
        chunk = b"z" * (5 * MiB)
        body = chunk if name == "cl" else b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        s = _raw(g, f"PUT /v1/alice/c/{name} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: "
                    f"{tok['X-Auth-Token']}\r\n{framing}", body)
        time.sleep(0.2)
        s.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            # The server notices the close; the object must never appear.
            assert requests.head(f"{base}/c/{name}", headers=tok).status_code == 404
            if g.count_blocks() >= 1:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        assert requests.head(f"{base}/c/{name}", headers=tok).status_code == 404
    listing = requests.get(base + "/c?format=json", headers=tok).json()
    assert listing == []


def test_malformed_chunked_body_is_400(env: tuple[GatewayThread, str, dict[str, str]]) -> None:
    g, base, tok = env
    s = _raw(g, f"PUT /v1/alice/c/badchunk HTTP/1.1\r\nHost: x\r\nX-Auth-Token: "
                f"{tok['X-Auth-Token']}\r\nTransfer-Encoding: chunked\r\n",
             b"5\r\nhello\r\nzz\r\nnot hex\r\n0\r\n\r\n")
    reply = s.recv(4096)
    s.close()
    assert b" 400 " in reply.split(b"\r\n")[0], reply[:200]
    assert b"Traceback" not in reply
    assert requests.head(base + "/c/badchunk", headers=tok).status_code == 404
