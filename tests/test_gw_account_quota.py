"""Account quotas through the Swift API (Swift's account_quotas): with the identity plugin
the quota is the owner's pithos.diskspace, only an administrator sets it
(X-Account-Meta-Quota-Bytes), uploads beyond it get 413; the gateway's own v1 users have
no account quota and cannot set one."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from api_helpers import ApiServer

from tests.gw_helpers import GatewayThread, gw_mem  # noqa: F401

R = "pithos.diskspace"
T = 30
QUOTA_HEADERS = [{"X-Account-Meta-Quota-Bytes": str(1 << 40)},
                 {"X-Account-Quota-Bytes": str(1 << 40)},
                 {"X-Account-Quota-Count": "1000000"},
                 {"X-Account-Quota-Bytes-Policy-default": "0"},
                 {"X-Remove-Account-Meta-Quota-Bytes": "t"},
                 {"X-Remove-Account-Quota-Bytes": "t"}]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with ApiServer(tmp_path_factory.mktemp("acctquota")) as srv:
        yield srv


def _user(api: ApiServer, name: str, admin: bool = False,
          limit: int | None = None) -> tuple[str, dict[str, str]]:
    ident: Any = api.host.plugin("identity").service  # type: ignore[attr-defined]
    user, tok = api.call(ident.add_user(name, is_admin=admin))
    if limit is not None:
        api.call(ident.set_quota(name, R, limit))
    return user.uuid, {"X-Auth-Token": tok}


def _quota(api: ApiServer, account: str, tok: dict[str, str]) -> int:
    q = requests.get(api.url + "/account/v1.0/quotas", headers=tok, timeout=T).json()
    return int(q[account][R]["limit"])


def test_a_user_cannot_raise_or_remove_their_own_quota(api: ApiServer) -> None:
    acct, tok = _user(api, "quinn", limit=1000)
    url = f"{api.url}/v1/{acct}"
    for hdr in QUOTA_HEADERS:
        r = requests.post(url, headers={**tok, **hdr, "X-Account-Meta-Color": "red"}, timeout=T)
        assert r.status_code == 403, (hdr, r.status_code)
    h = requests.head(url, headers=tok, timeout=T).headers
    assert "X-Account-Meta-Color" not in h  # refused as a whole
    assert h["X-Account-Meta-Quota-Bytes"] == "1000" == h["X-Account-Quota-Bytes"]
    assert _quota(api, acct, tok) == 1000
    assert requests.put(f"{url}/c", headers=tok, timeout=T).status_code == 201
    assert requests.put(f"{url}/c/big", data=b"x" * 1001, headers=tok,
                        timeout=T).status_code == 413
    # Nor can another (non-admin) user set it for them.
    _, other = _user(api, "rhea")
    assert requests.post(url, headers={**other, "X-Account-Meta-Quota-Bytes": "5"},
                         timeout=T).status_code == 403
    assert _quota(api, acct, tok) == 1000


def _put_headers_only(url: str, tok: dict[str, str], length: int) -> int:
    """Status of a PUT that announces ``length`` bytes and sends none: only an answer
    given before the body is read can come back (else the socket times out)."""
    u = urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=T)
    try:
        c.putrequest("PUT", u.path)
        for k, v in {**tok, "Content-Length": str(length)}.items():
            c.putheader(k, v)
        c.endheaders()
        return c.getresponse().status
    finally:
        c.close()


def test_an_admin_sets_the_quota_and_uploads_beyond_it_get_413(api: ApiServer) -> None:
    acct, tok = _user(api, "sage")
    _, admin = _user(api, "root2", admin=True)
    url = f"{api.url}/v1/{acct}"
    assert "account_quotas" in requests.get(f"{api.url}/info", timeout=T).json()
    r = requests.post(url, headers={**admin, "X-Account-Meta-Quota-Bytes": "2000"}, timeout=T)
    assert r.status_code == 204
    assert requests.head(url, headers=tok, timeout=T).headers[
        "X-Account-Meta-Quota-Bytes"] == "2000"
    assert _quota(api, acct, tok) == 2000
    assert requests.put(f"{url}/c", headers=tok, timeout=T).status_code == 201
    assert requests.put(f"{url}/c/a", data=b"a" * 1500, headers=tok, timeout=T).status_code == 201
    r = requests.put(f"{url}/c/b", data=b"b" * 501, headers=tok, timeout=T)
    assert r.status_code == 413 and "limit 2000" in r.text
    # Refused from its Content-Length, before any byte of the body is read.
    assert _put_headers_only(f"{url}/c/huge", tok, 1 << 30) == 413
    assert requests.head(f"{url}/c/b", headers=tok, timeout=T).status_code == 404
    # The new X-Account-Quota-Bytes works too; bad values and other quotas are refused.
    assert requests.post(url, headers={**admin, "X-Account-Quota-Bytes": "4000"},
                         timeout=T).status_code == 204
    assert requests.put(f"{url}/c/b", data=b"b" * 501, headers=tok, timeout=T).status_code == 201
    for bad, status in (({"X-Account-Meta-Quota-Bytes": "lots"}, 400),
                        ({"X-Account-Quota-Count": "3"}, 400),
                        ({"X-Account-Meta-Quota-Bytes": "9", "X-Account-Meta-Foo": "x"}, 403)):
        assert requests.post(url, headers={**admin, **bad}, timeout=T).status_code == status
    assert _quota(api, acct, tok) == 4000
    # Removing it goes back to the configured default.
    assert requests.post(url, headers={**admin, "X-Remove-Account-Meta-Quota-Bytes": "x"},
                         timeout=T).status_code == 204
    default = api.host.plugin("identity").service.settings.default_diskspace  # type: ignore[attr-defined]
    assert _quota(api, acct, tok) == default


def test_v1_users_have_no_account_quota_to_set(gw_mem: GatewayThread) -> None:  # noqa: F811
    tok = {"X-Auth-Token": gw_mem.add_user("alice")}
    url = f"{gw_mem.url}/v1/alice"
    for hdr in QUOTA_HEADERS:
        assert requests.post(url, headers={**tok, **hdr}, timeout=T).status_code == 403, hdr
    assert "X-Account-Meta-Quota-Bytes" not in requests.head(url, headers=tok, timeout=T).headers
    assert "account_quotas" not in requests.get(f"{gw_mem.url}/info", timeout=T).json()
