"""The identity plugin over real HTTP: Keystone v2 clients (keystoneauth1) and
python-swiftclient on the catalog's object-store endpoint, authorization on every API,
the Astakos account API (catalogs, quotas, resources, commissions) and bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import swiftclient
from api_helpers import ApiServer
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session
from keystoneauth1.identity import v2

R = "pithos.diskspace"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with ApiServer(tmp_path_factory.mktemp("idapi")) as srv:
        yield srv


def svc(api: ApiServer) -> Any:
    return api.host.plugin("identity").service  # type: ignore[attr-defined]


def add_user(api: ApiServer, name: str, password: str | None = None,
             admin: bool = False) -> tuple[str, str]:
    """(uuid, token) of a new user."""
    user, tok = api.call(svc(api).add_user(name, password=password, is_admin=admin))
    return user.uuid, tok


def post_tokens(api: ApiServer, body: Any, **kw: Any) -> requests.Response:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return requests.post(api.url + "/identity/v2.0/tokens", data=data, timeout=30,
                         headers={"Content-Type": "application/json", **kw.pop("headers", {})})


def test_keystoneauth_password_then_swiftclient(api: ApiServer) -> None:
    uuid, _ = add_user(api, "kara", password="kara-secret")
    auth = v2.Password(auth_url=api.url + "/identity/v2.0", username="kara",
                       password="kara-secret")
    sess = session.Session(auth=auth)
    token = sess.get_token()
    assert sess.get_user_id() == uuid and sess.get_project_id() == uuid
    endpoint = sess.get_endpoint(service_type="object-store", interface="public")
    assert endpoint == f"{api.url}/object-store/v1/{uuid}"
    types = {e["type"] for e in auth.get_access(sess).service_catalog.catalog}
    assert {"object-store", "image", "identity", "account"} <= types
    sw = swiftclient.Connection(preauthurl=endpoint, preauthtoken=token, retries=0)
    sw.put_container("docs")
    sw.put_object("docs", "a.txt", b"hello keystone")
    assert sw.get_object("docs", "a.txt")[1] == b"hello keystone"
    # swiftclient can also take the keystoneauth session and find the endpoint itself.
    sw2 = swiftclient.Connection(session=sess, retries=0)
    assert [c["name"] for c in sw2.get_account()[1]] == ["docs"]
    # The Token plugin re-scopes an existing token.
    tsess = session.Session(auth=v2.Token(auth_url=api.url + "/identity/v2.0", token=token,
                                          tenant_name=uuid))
    assert tsess.get_token() == token and tsess.get_user_id() == uuid
    bad = session.Session(auth=v2.Password(auth_url=api.url + "/identity/v2.0",
                                           username="kara", password="wrong"))
    with pytest.raises(ks_exc.Unauthorized):
        bad.get_token()


def test_tokens_forms_and_errors(api: ApiServer) -> None:
    uuid, tok = add_user(api, "lena", password="lena-pw")
    r = post_tokens(api, b"")
    assert r.status_code == 200 and "token" not in r.json()["access"]
    assert {e["type"] for e in r.json()["access"]["serviceCatalog"]} >= {"identity",
                                                                         "object-store"}
    # Astakos' own form: username = uuid, password = token (the same token comes back).
    r = post_tokens(api, {"auth": {"passwordCredentials": {"username": uuid, "password": tok},
                                   "tenantName": uuid}})
    assert r.status_code == 200 and r.json()["access"]["token"]["id"] == tok
    access = r.json()["access"]
    assert access["user"]["id"] == uuid and access["token"]["tenant"]["id"] == uuid
    assert access["token"]["expires"].endswith("+00:00")
    r = post_tokens(api, {"auth": {"token": {"id": tok}}})
    assert r.status_code == 200 and r.json()["access"]["token"]["id"] == tok
    cases = [(b"{not json", 400), ({"auth": 5}, 400), ({"nothing": 1}, 400),
             ({"auth": {"token": {"id": 5}}}, 400), ({"auth": {"tenantName": uuid}}, 400),
             ({"auth": {"token": {"id": tok}, "tenantName": "someone-else"}}, 400),
             ({"auth": {"token": {"id": "no-such-token"}}}, 401),
             ({"auth": {"passwordCredentials": {"username": "lena", "password": "x"}}}, 401),
             ({"auth": {"passwordCredentials": {"username": "lena"}}}, 401),
             (b"[" * 100000, 400), (b"x" * (2 << 20), 413)]
    for body, status in cases:
        r = post_tokens(api, body)
        assert r.status_code == status, (body[:40] if isinstance(body, bytes) else body, r.text)
        assert len(r.json()) == 1 and next(iter(r.json().values()))["code"] == status
        assert "Traceback" not in r.text
    assert requests.get(f"{api.url}/identity/v2.0/tokens/{tok}").status_code == 404


def test_x_auth_token_on_every_api(api: ApiServer) -> None:
    uuid, tok = add_user(api, "mia")
    h = {"X-Auth-Token": tok}
    for path in ("/account/v1.0/quotas", f"/v1/{uuid}", f"/object-store/v1/{uuid}",
                 "/image/v1.0/images"):
        assert requests.get(api.url + path, timeout=30).status_code == 401, path
        assert requests.get(api.url + path, headers={"X-Auth-Token": "bogus"},
                            timeout=30).status_code == 401, path
        assert requests.get(api.url + path, headers=h, timeout=30).status_code in (200, 204), path
        assert requests.get(f"{api.url}{path}?X-Auth-Token={tok}",
                            timeout=30).status_code in (200, 204), path
    assert requests.get(api.url + "/account/v1.0/resources").status_code == 200  # public


def test_authorization_nothing_read_or_changed(api: ApiServer) -> None:
    owner, otok = add_user(api, "nina")
    other, xtok = add_user(api, "omar")
    base = f"{api.url}/v1/{owner}"
    oh, xh = {"X-Auth-Token": otok}, {"X-Auth-Token": xtok}
    assert requests.put(base + "/box", headers=oh).status_code == 201
    assert requests.put(base + "/box/secret", data=b"s3cret", headers=oh).status_code == 201
    assert requests.put(base + "/box/shared", data=b"for omar", headers={
        **oh, "X-Object-Sharing": f"read={other}"}).status_code == 201
    expired = api.call(svc(api).mint_token(owner, lifetime=0))
    disabled_uuid, dtok = add_user(api, "pete")
    api.call(svc(api).set_active("pete", False))
    for headers, status in ((xh, 403), ({}, 401), ({"X-Auth-Token": expired}, 401),
                            ({"X-Auth-Token": dtok}, 401)):
        assert requests.get(base + "/box/secret", headers=headers).status_code == status
        assert requests.put(base + "/box/secret", data=b"evil",
                            headers=headers).status_code == status
        assert requests.delete(base + "/box/secret", headers=headers).status_code == status
        assert requests.post(base + "/box/secret", headers={
            **headers, "X-Object-Meta-X": "1"}).status_code == status
        assert requests.put(base + "/other", headers=headers).status_code == status
        assert requests.head(base, headers=headers).status_code == status
    assert requests.get(base + "/box/secret", headers=oh).content == b"s3cret"
    assert requests.get(base + "/box", headers=oh).text.split() == ["secret", "shared"]
    assert "X-Object-Meta-X" not in requests.head(base + "/box/secret", headers=oh).headers
    # Sharing grants exactly what it says: omar reads "shared", nothing else, writes nothing.
    assert requests.get(base + "/box/shared", headers=xh).content == b"for omar"
    assert requests.put(base + "/box/shared", data=b"x", headers=xh).status_code == 403
    assert [o["name"] for o in requests.get(base + "/box?format=json",
                                            headers=xh).json()] == ["shared"]
    # A non-admin reaches neither the service calls nor commissions.
    for method, path in (("GET", "/account/v1.0/service_quotas"),
                         ("POST", "/account/v1.0/commissions"),
                         ("GET", "/account/v1.0/commissions"),
                         ("POST", "/account/v1.0/service/user_catalogs")):
        r = requests.request(method, api.url + path, headers=xh, json={})
        assert r.status_code == 403 and "forbidden" in r.json(), path
        assert requests.request(method, api.url + path, json={}).status_code == 401


def test_user_catalogs(api: ApiServer) -> None:
    uuid, tok = add_user(api, "quinn")
    h = {"X-Auth-Token": tok}
    r = requests.post(api.url + "/account/v1.0/user_catalogs", headers=h,
                      json={"uuids": [uuid, "nope"], "displaynames": ["quinn"]})
    assert r.json() == {"uuid_catalog": {uuid: "quinn"}, "displayname_catalog": {"quinn": uuid}}
    admin_uuid, atok = add_user(api, "root2", admin=True)
    r = requests.post(api.url + "/account/v1.0/service/user_catalogs",
                      headers={"X-Auth-Token": atok}, json={"uuids": None, "displaynames": []})
    assert r.json()["uuid_catalog"][uuid] == "quinn" and r.json()["displayname_catalog"] == {}
    r = requests.post(api.url + "/account/v1.0/user_catalogs", headers=h,
                      json={"uuids": "notalist"})
    assert r.status_code == 400 and "badRequest" in r.json()


def _admin(api: ApiServer) -> dict[str, str]:
    _, tok = add_user(api, "component-" + str(id(api) % 1000) + str(len(api.call(
        svc(api).users()))), admin=True)
    return {"X-Auth-Token": tok}


def test_commissions_over_http(api: ApiServer) -> None:
    ah = _admin(api)
    u, utok = add_user(api, "rita")
    api.call(svc(api).set_quota("rita", R, 100))
    url = api.url + "/account/v1.0/commissions"

    def body(q: int, **kw: Any) -> dict[str, Any]:
        return {"force": False, "auto_accept": False, "name": "test", **kw, "provisions": [
            {"holder": f"user:{u}", "source": f"project:{u}", "resource": R, "quantity": q},
            {"holder": f"project:{u}", "source": None, "resource": R, "quantity": q}]}

    r = requests.post(url, headers=ah, json=body(60))
    assert r.status_code == 201 and set(r.json()) == {"serial"}
    s1 = r.json()["serial"]
    assert s1 in requests.get(url, headers=ah).json()
    got = requests.get(f"{url}/{s1}", headers=ah).json()
    assert got["serial"] == s1 and got["provisions"] == body(60)["provisions"]
    r = requests.post(url, headers=ah, json=body(50))
    assert r.status_code == 413
    over = r.json()["overLimit"]
    assert over["code"] == 413 and over["data"]["name"] == "NoCapacityError"
    assert (over["data"]["limit"], over["data"]["usage"]) == (100, 60)
    assert over["data"]["provision"] == body(50)["provisions"][0]
    assert requests.post(f"{url}/{s1}/action", headers=ah,
                         json={"accept": ""}).status_code == 200
    assert requests.post(f"{url}/{s1}/action", headers=ah,
                         json={"accept": ""}).status_code == 404
    s2 = requests.post(url, headers=ah, json=body(10)).json()["serial"]
    s3 = requests.post(url, headers=ah, json=body(-60)).json()["serial"]
    r = requests.post(f"{url}/action", headers=ah, json={"accept": [s3], "reject": [s2, 424242]})
    assert r.status_code == 200
    out = r.json()
    assert out["accepted"] == [s3] and out["rejected"] == [s2]
    assert out["failed"][0][0] == 424242 and out["failed"][0][1]["itemNotFound"]["code"] == 404
    q = requests.get(api.url + "/account/v1.0/quotas", headers={"X-Auth-Token": utok}).json()
    assert q[u][R] == {"limit": 100, "usage": 0, "pending": 0, "project_limit": 100,
                       "project_usage": 0, "project_pending": 0}
    sq = requests.get(api.url + f"/account/v1.0/service_quotas?user={u}", headers=ah).json()
    assert sq == {u: q}
    r = requests.post(url, headers=ah, json={"provisions": [
        {"holder": "user:ghost", "source": "project:ghost", "resource": R, "quantity": 1}]})
    assert r.status_code == 404 and "itemNotFound" in r.json()
    r = requests.post(url, headers=ah, json=body(1) | {"provisions": [
        {"holder": f"user:{u}", "source": f"project:{u}", "resource": "no.such", "quantity": 1}]})
    assert r.status_code == 404
    for bad in (b"{", {"provisions": "x"}, {"provisions": [{"holder": 1}]},
                {"provisions": [{"holder": "a", "resource": R, "quantity": 1.5}]},
                body(1) | {"force": "yes"}, {"provisions": []}):
        r = requests.post(url, headers={**ah, "Content-Type": "application/json"},
                          data=bad if isinstance(bad, bytes) else json.dumps(bad))
        assert r.status_code == 400 and "badRequest" in r.json(), bad
    for bad in ({"accept": "", "reject": ""}, {"approve": ""}, []):
        assert requests.post(f"{url}/{s1}/action", headers=ah,
                             json=bad).status_code == 400
    assert requests.get(f"{url}/notanumber", headers=ah).status_code == 400
    assert requests.get(url, headers=ah).json() == []  # nothing left pending by the errors


def test_front_proxy_login_is_off_by_default(api: ApiServer) -> None:
    add_user(api, "sam")
    r = post_tokens(api, {"auth": {}}, headers={"X-Remote-User": "sam"})
    assert r.status_code == 400


@pytest.mark.parametrize("trusted", [True, False])
def test_front_proxy_login_only_from_proxies(tmp_path: Path, trusted: bool) -> None:
    nets = '["127.0.0.1/32"]' if trusted else '["10.9.0.0/16"]'
    with ApiServer(tmp_path, overrides=['identity.proxy_header="X-Remote-User"',
                                        f"identity.proxy_addresses={nets}"]) as srv:
        uuid, _ = add_user(srv, "tess")
        r = post_tokens(srv, {"auth": {}}, headers={"X-Remote-User": "tess"})
        if not trusted:
            assert r.status_code == 400
            return
        assert r.status_code == 200 and r.json()["access"]["user"]["id"] == uuid
        r = post_tokens(srv, {"auth": {}}, headers={"X-Remote-User": "stranger"})
        assert r.status_code == 401  # proxy_create_users is off
