"""Swift features clients rely on, through real HTTP: bulk delete, expiring objects,
TempURL and container quotas (Swift's own functional tests cover more; these pin the
gateway's own choices: the sweeper, the JSON summary, key scopes)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import requests

from pithos_gw import expiry
from pithos_gw.common import META
from tests.gw_helpers import GatewayThread, gw_mem  # noqa: F401


def _setup(g: GatewayThread) -> tuple[str, dict[str, str]]:
    tok = {"X-Auth-Token": g.add_user("alice")}
    url = f"{g.url}/v1/alice"
    assert requests.put(f"{url}/c", headers=tok, timeout=30).status_code == 201
    return url, tok


def test_bulk_delete_summary(gw_mem: GatewayThread) -> None:  # noqa: F811
    url, tok = _setup(gw_mem)
    for n in ("a", "b b"):
        requests.put(f"{url}/c/{n}", data=b"x", headers=tok, timeout=30)
    requests.put(f"{url}/empty", headers=tok, timeout=30)
    body = "/c/a\n/c/b%20b\n/c/missing\n/empty\n"
    r = requests.post(f"{url}?bulk-delete", data=body, timeout=30,
                      headers={**tok, "Accept": "application/json"})
    doc = r.json()
    assert r.status_code == 200 and doc["Number Deleted"] == 3, doc
    assert doc["Number Not Found"] == 1 and doc["Errors"] == []
    assert requests.head(f"{url}/empty", headers=tok, timeout=30).status_code == 404
    other = {"X-Auth-Token": gw_mem.add_user("bob")}
    requests.put(f"{url}/c/kept", data=b"x", headers=tok, timeout=30)
    r = requests.post(f"{url}?bulk-delete", data="/c/kept\n", timeout=30,
                      headers={**other, "Accept": "application/json"})
    assert r.json()["Errors"] == [["/c/kept", "403 Forbidden"]]
    assert requests.head(f"{url}/c/kept", headers=tok, timeout=30).status_code == 200


def test_expiring_objects(gw_mem: GatewayThread) -> None:  # noqa: F811
    url, tok = _setup(gw_mem)
    r = requests.put(f"{url}/c/soon", data=b"x", timeout=30,
                     headers={**tok, "X-Delete-After": "1000"})
    assert r.status_code == 201
    at = int(requests.head(f"{url}/c/soon", headers=tok, timeout=30).headers["X-Delete-At"])
    assert abs(at - (time.time() + 1000)) < 60
    # A POST keeps the expiry (it replaces user metadata only).
    requests.post(f"{url}/c/soon", headers={**tok, "X-Object-Meta-K": "v"}, timeout=30)
    assert requests.head(f"{url}/c/soon", headers=tok, timeout=30).headers["X-Delete-At"] == str(at)
    assert requests.put(f"{url}/c/bad", data=b"x", timeout=30,
                        headers={**tok, "X-Delete-At": "12"}).content == b"X-Delete-At in past"
    # Expire it by moving its instant into the past, then let the sweeper run once.
    meta = gw_mem.app[META]
    v = gw_mem.call(meta.object_get("alice", "c", "soon"))
    assert v is not None
    gw_mem.call(meta.object_set_meta("alice", "c", "soon", {**v.meta, "X-Delete-At": "1"}))
    assert [i["name"] for i in requests.get(f"{url}/c?format=json", headers=tok,
                                           timeout=30).json()] == ["soon"]
    assert gw_mem.call(expiry.sweep(gw_mem.app)) == 1
    assert requests.get(f"{url}/c/soon", headers=tok, timeout=30).status_code == 404
    assert requests.get(f"{url}/c", headers=tok, timeout=30).status_code == 204


def _sig(key: str, method: str, expires: int, path: str) -> str:
    return hmac.new(key.encode(), f"{method}\n{expires}\n{path}".encode(),
                    hashlib.sha256).hexdigest()


def test_tempurl_account_and_container_keys(gw_mem: GatewayThread) -> None:  # noqa: F811
    url, tok = _setup(gw_mem)
    requests.post(url, headers={**tok, "X-Account-Meta-Temp-URL-Key": "k1"}, timeout=30)
    requests.put(f"{url}/c/o", data=b"secret", headers=tok, timeout=30)
    exp = int(time.time()) + 600
    q = f"temp_url_sig={_sig('k1', 'GET', exp, '/v1/alice/c/o')}&temp_url_expires={exp}"
    r = requests.get(f"{url}/c/o?{q}", timeout=30)
    assert r.content == b"secret" and r.headers["Content-Disposition"].startswith("attachment")
    assert requests.head(f"{url}/c/o?{q}", timeout=30).status_code == 200
    assert requests.put(f"{url}/c/o?{q}", data=b"no", timeout=30).status_code == 401
    assert requests.get(f"{url}/c/other?{q}", timeout=30).status_code == 401
    old = exp - 700
    stale = f"temp_url_sig={_sig('k1', 'GET', old, '/v1/alice/c/o')}&temp_url_expires={old}"
    assert requests.get(f"{url}/c/o?{stale}", timeout=30).status_code == 401
    requests.post(f"{url}/c", headers={**tok, "X-Container-Meta-Temp-URL-Key": "k2"},
                  timeout=30)
    q2 = f"temp_url_sig={_sig('k2', 'PUT', exp, '/v1/alice/c/new')}&temp_url_expires={exp}"
    assert requests.put(f"{url}/c/new?{q2}", data=b"up", timeout=30).status_code == 201
    assert requests.get(f"{url}/c/new", headers=tok, timeout=30).content == b"up"


def test_container_quota_meta(gw_mem: GatewayThread) -> None:  # noqa: F811
    url, tok = _setup(gw_mem)
    requests.post(f"{url}/c", headers={**tok, "X-Container-Meta-Quota-Bytes": "10",
                                       "X-Container-Meta-Quota-Count": "2"}, timeout=30)
    assert requests.put(f"{url}/c/a", data=b"12345", headers=tok, timeout=30).status_code == 201
    r = requests.put(f"{url}/c/b", data=b"123456", headers=tok, timeout=30)
    assert r.status_code == 413 and r.content == b"Upload exceeds quota."
    assert requests.put(f"{url}/c/b", data=b"1", headers=tok, timeout=30).status_code == 201
    assert requests.put(f"{url}/c/c", data=b"", headers=tok, timeout=30).status_code == 413
    assert requests.put(f"{url}/c/a", data=b"123", headers=tok, timeout=30).status_code == 201


def test_sweeper_is_cancelled_with_the_app() -> None:
    """The sweeper task ends with the app (no task left running)."""
    from aiohttp import web

    async def run() -> None:
        app = web.Application()
        gen = expiry.sweeper(app)
        await gen.__anext__()
        tasks = len(asyncio.all_tasks())
        await gen.aclose()
        assert len(asyncio.all_tasks()) == tasks - 1

    asyncio.run(run())
