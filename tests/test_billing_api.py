"""/billing/v1 over real HTTP with identity: who sees what, prices and credits by admins,
bills of gateway uploads (the integration acceptance: 1 GiB for 2 h at 1 credit/GiB·h),
faults for bad input, and `archip billing` against the same instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
import requests
from api_helpers import ApiServer

from control.billing.bill import rounded
from control.billing.periods import from_micros

PLUGINS = ["identity", "billing"]
GiB = 1 << 30
ARCHIP = [sys.executable, "-m", "control"]


def ident(api: ApiServer) -> Any:
    return api.host.ctx.service("identity")


class Who:
    """A user (or admin) with a token."""

    def __init__(self, api: ApiServer, name: str, admin: bool = False) -> None:
        user, tok = api.call(ident(api).add_user(name, is_admin=admin))
        self.api, self.uuid, self.name, self.h = api, user.uuid, name, {"X-Auth-Token": tok}

    def get(self, path: str, **params: str) -> requests.Response:
        return requests.get(f"{self.api.url}/billing/v1{path}", headers=self.h, params=params, timeout=60)

    def post(self, path: str, body: Any) -> requests.Response:
        return requests.post(f"{self.api.url}/billing/v1{path}", headers=self.h, json=body, timeout=60)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with ApiServer(tmp_path_factory.mktemp("billing"), plugins=PLUGINS) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin(api: ApiServer) -> Who:
    return Who(api, "billadmin", admin=True)


def test_users_see_their_own_billing_and_admins_anyones(api: ApiServer, admin: Who) -> None:
    ann, bob = Who(api, "ann"), Who(api, "bob")
    r = ann.get("/balance")
    assert r.status_code == 200 and r.json()["user"] == ann.uuid and r.json()["balance"] == "0.000000"
    assert ann.get(f"/user/{ann.uuid}/balance").json() == {"userId": ann.uuid, "balance": "0.000000"}
    for path, params in (("/balance", {"user": bob.uuid}), ("/bills", {"user": "bob"}),
                         (f"/user/{bob.uuid}/balance", {}), ("/events", {"user": bob.uuid})):
        r = ann.get(path, **params)
        assert r.status_code == 403 and "forbidden" in r.json(), (path, r.text)
    assert admin.get("/balance", user="bob").json()["user"] == bob.uuid
    assert admin.get(f"/user/{bob.uuid}/balance").status_code == 200
    assert requests.get(f"{api.url}/billing/v1/balance", timeout=30).status_code == 401
    r = requests.get(f"{api.url}/billing/v1/balance", headers={"X-Auth-Token": "nope"}, timeout=30)
    assert r.status_code == 401 and "unauthorized" in r.json()
    assert admin.get("/balance", user="nobody-here").status_code == 404


def test_only_admins_set_prices_and_add_credits(api: ApiServer, admin: Who) -> None:
    cid = Who(api, "cid")
    r = cid.post("/prices", {"resource": "cyclades.vmtime", "price": "1", "state": "on"})
    assert r.status_code == 403
    assert cid.post("/credits", {"user": cid.uuid, "amount": "100"}).status_code == 403
    r = admin.post("/credits", {"user": "cid", "amount": "12.5"})
    assert r.status_code == 201 and r.json()["balance"] == "12.500000"
    assert cid.get("/balance").json()["balance"] == "12.500000"
    (ev,) = cid.get("/events").json()["events"]
    assert ev["resource"] == "billing.credit" and ev["value"] == "12.5"


@pytest.mark.parametrize("body,status,words", [
    ({"resource": "pithos.diskspace", "price": "-1"}, 400, "cannot be negative"),
    ({"resource": "pithos.nothing", "price": "1"}, 400, "unknown resource"),
    ({"resource": "cyclades.vmtime", "price": "1"}, 400, "priced per state"),
    ({"resource": "pithos.diskspace", "price": "1", "unit": "GB*h"}, 400, "bad unit"),
    ({"resource": "pithos.diskspace", "price": "1", "from": "2001-01-01T00:00:00Z"}, 400, "retroactive"),
    ({"resource": "pithos.diskspace", "price": "1", "from": "2026-13-01"}, 400, "bad time"),
    ({"price": "1"}, 400, "expected"),
])
def test_bad_prices_are_clear_400s(admin: Who, body: dict[str, str], status: int, words: str) -> None:
    r = admin.post("/prices", body)
    assert r.status_code == status and words in r.json()["badRequest"]["message"], r.text


@pytest.mark.parametrize("path,params,words", [
    ("/bills/2026-13", {}, "bad month"), ("/usage", {"month": "2026-00"}, "bad month"),
    ("/bills", {"until": "tomorrow"}, "bad time"), ("/events", {"limit": "0"}, "limit"),
    ("/chart", {"format": "gif"}, "chart format"), ("/credits-or-not", {}, "Not Found"),
])
def test_bad_queries_are_clear_errors(admin: Who, path: str, params: dict[str, str], words: str) -> None:
    r = admin.get(path, **params)
    assert r.status_code in (400, 404) and words in r.text, r.text


def _bill_cli(api: ApiServer, who: str, *extra: str) -> dict[str, Any]:
    out = subprocess.run([*ARCHIP, "--data-dir", str(api.instance.data_dir), "-o",
                          'control.plugins=["identity","billing"]', "--json", "billing", "bill", who,
                          *extra], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "ARCHIPELAGO_CONFIG": ""})
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_one_gib_uploaded_for_two_hours_at_one_credit_per_gib_hour(api: ApiServer, admin: Who) -> None:
    dee = Who(api, "dee")
    assert admin.post("/prices", {"resource": "pithos.diskspace", "price": "1", "unit": "GiB*h"}
                      ).status_code == 201
    base = f"{api.url}/v1/{dee.uuid}"
    assert requests.put(base + "/photos", headers=dee.h, timeout=30).status_code == 201
    block = os.urandom(1 << 20)
    r = requests.put(base + "/photos/big", headers=dee.h, data=(block for _ in range(1024)), timeout=600)
    assert r.status_code == 201, r.text
    (ev,) = dee.get("/events").json()["events"]
    assert (ev["resource"], ev["value"], ev["type"]) == ("pithos.diskspace", str(GiB),
                                                         "identity.commission.accepted")
    uploaded = from_micros(ev["occurred_us"])
    until = datetime.now(UTC) + timedelta(hours=2)
    bill = _bill_cli(api, "dee", "--until", until.isoformat())
    # The exact figure: 1 GiB × (until − upload time) in hours × 1 credit per GiB·h.
    expected = Fraction((until - uploaded) // timedelta(microseconds=1), 3600 * 10**6)
    (line,) = bill["lines"]
    assert line == {"resource": "pithos.diskspace", "quantity": str(rounded(expected)), "unit": "GiB·h",
                    "credits": str(rounded(expected))}
    assert bill["total"] == str(rounded(expected)) and 2 <= expected < Fraction(21, 10)
    # The API gives the same bill (the month of --until, up to it).
    same = dee.get("/bills", until=until.isoformat()).json()
    assert same["lines"] == bill["lines"] and same["total"] == bill["total"]
    # Deleting the object stops the charge: a bill up to any later time stays the same.
    assert requests.delete(base + "/photos/big", headers=dee.h, timeout=60).status_code == 204
    events = dee.get("/events").json()["events"]
    assert [e["value"] for e in events] == [str(GiB), str(-GiB)]
    gone = from_micros(events[1]["occurred_us"])
    later = _bill_cli(api, dee.uuid, "--until", (until + timedelta(hours=5)).isoformat())
    held = Fraction((gone - uploaded) // timedelta(microseconds=1), 3600 * 10**6)
    assert later["total"] == str(rounded(held))
    r = dee.get("/chart", until=until.isoformat())
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/svg+xml"
    assert r.content.startswith(b"<?xml")


def test_deny_when_negative_refuses_new_usage_with_a_clear_413(tmp_path_factory: pytest.TempPathFactory
                                                                ) -> None:
    with ApiServer(tmp_path_factory.mktemp("deny"), plugins=PLUGINS,
                   overrides=["billing.deny_when_negative=true"]) as srv:
        boss, eve = Who(srv, "boss", admin=True), Who(srv, "eve")
        # 1 credit per byte·second: any stored byte makes the balance negative at once.
        assert boss.post("/prices", {"resource": "pithos.diskspace", "price": "1", "unit": "B*s"}
                         ).status_code == 201
        base = f"{srv.url}/v1/{eve.uuid}"
        assert requests.put(base + "/c", headers=eve.h, timeout=30).status_code == 201
        assert requests.put(base + "/c/a", headers=eve.h, data=b"a" * 1000, timeout=30).status_code == 201
        r = requests.put(base + "/c/b", headers=eve.h, data=b"b" * 10, timeout=30)
        assert r.status_code == 413 and "below zero" in r.text and "credits are added" in r.text, r.text
        assert requests.head(base + "/c/b", headers=eve.h, timeout=30).status_code == 404
        # The same refusal through Astakos' commission API, in its 413 overLimit shape.
        r = requests.post(f"{srv.url}/account/v1.0/commissions", headers=boss.h, timeout=30, json={
            "provisions": [{"holder": f"user:{eve.uuid}", "source": f"project:{eve.uuid}",
                            "resource": "pithos.diskspace", "quantity": 1}]})
        assert r.status_code == 413 and "below zero" in r.json()["overLimit"]["message"], r.text
        # Releasing usage stays possible; credits lift the refusal.
        assert requests.delete(base + "/c/a", headers=eve.h, timeout=30).status_code == 204
        assert boss.post("/credits", {"user": "eve", "amount": "1000000000"}).status_code == 201
        assert requests.put(base + "/c/b", headers=eve.h, data=b"b" * 10, timeout=30).status_code == 201
        assert boss.get("/status").json()["refused_commissions"] == 2
