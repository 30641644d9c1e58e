"""Shared pieces of the issue 23 gateway tests: users addressing any account's paths."""

from __future__ import annotations

import pytest
import requests

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
