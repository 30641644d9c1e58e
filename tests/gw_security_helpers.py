"""Shared pieces of the issue 23 gateway tests: users addressing any account's paths."""

from __future__ import annotations

import socket

import pytest
import requests

from archipelago.blocker.memory import MemoryBlocker
from archipelago.errors import BackendUnavailable
from tests.gw_helpers import GatewayThread, gw_mem  # noqa: F401

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


@pytest.fixture(name="trio")
def _trio(gw_mem: GatewayThread) -> tuple[User, User, User]:  # noqa: F811
    """alice (with container c1), bob (with container mine) and carol."""
    a, b, c = User(gw_mem, "alice"), User(gw_mem, "bob"), User(gw_mem, "carol")
    assert a.req("PUT", "/alice/c1").status_code == 201
    assert b.req("PUT", "/bob/mine").status_code == 201
    return a, b, c


def register(u: User, loc: str, name: str = "img") -> requests.Response:
    """Register ``loc`` (pithos://account/container/object) as a Plankton image."""
    return u.img("POST", headers={"X-Image-Meta-Name": name, "X-Image-Meta-Location": loc})


def raw_get(g: GatewayThread, path: str, token: str | None = None,
            extra: str = "") -> tuple[bytes, bytes]:
    """GET over a raw socket, read until the server closes: (status line + headers, body).

    A server that keeps the connection open after its response makes this time out.
    """
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    try:
        auth = f"X-Auth-Token: {token}\r\n" if token is not None else ""
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: gw\r\n{auth}{extra}\r\n".encode())
        data = bytearray()
        while chunk := s.recv(1 << 20):
            data += chunk
    finally:
        s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head, body


class FaultyBlocker(MemoryBlocker):
    """A memory blocker whose reads of the blocks named in ``bad`` fail (a dying backend)."""

    def __init__(self) -> None:
        super().__init__()
        self.bad: set[str] = set()

    async def read(self, name: str, offset: int, size: int) -> bytes:
        if name in self.bad:
            raise BackendUnavailable("injected read error")
        return await super().read(name, offset, size)
