"""The gateway charges pithos.diskspace through identity commissions: usage always equals
the bytes of current object versions, over quota is 413 with nothing stored, a crash
between the metadata commit and the accept is reconciled at the next start."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from api_helpers import ApiServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pithos_gw.meta import MetaStore

R = "pithos.diskspace"


def svc(api: ApiServer) -> Any:
    return api.host.plugin("identity").service  # type: ignore[attr-defined]


class Account:
    """A user with a container on the API server."""

    def __init__(self, api: ApiServer, name: str, limit: int | None = None) -> None:
        self.api = api
        user, tok = api.call(svc(api).add_user(name))
        self.uuid, self.h = user.uuid, {"X-Auth-Token": tok}
        self.base = f"{api.url}/v1/{self.uuid}"
        if limit is not None:
            api.call(svc(api).set_quota(name, R, limit))
        assert requests.put(self.base + "/c", headers=self.h).status_code == 201

    def put(self, name: str, data: bytes, **headers: str) -> requests.Response:
        return requests.put(f"{self.base}/c/{name}", data=data, headers={**self.h, **headers},
                            timeout=60)

    def stored(self) -> int:
        r = requests.head(self.base, headers=self.h, timeout=30)
        return int(r.headers["X-Account-Bytes-Used"])

    def quota(self) -> dict[str, int]:
        q = requests.get(self.api.url + "/account/v1.0/quotas", headers=self.h, timeout=30)
        return dict(q.json()[self.uuid][R])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with ApiServer(tmp_path_factory.mktemp("quota")) as srv:
        yield srv


def test_usage_follows_uploads_overwrites_copies_and_deletes(api: ApiServer) -> None:
    a = Account(api, "uma")
    assert a.put("x", b"1" * 1000).status_code == 201
    assert a.put("x", b"2" * 300).status_code == 201  # overwrite: 300, not 1300
    assert a.put("y", b"3" * 5000).status_code == 201
    assert requests.put(f"{a.base}/c/z", headers={**a.h, "X-Copy-From": "/c/y"}).status_code == 201
    assert requests.put(f"{a.base}/c/w", headers={**a.h, "X-Move-From": "/c/x"}).status_code == 201
    assert requests.delete(f"{a.base}/c/y", headers=a.h).status_code == 204
    assert a.put("e", b"").status_code == 201
    q = a.quota()
    assert a.stored() == 5300 and q["usage"] == 5300 and q["pending"] == 0
    assert requests.delete(f"{a.base}/c?delimiter=/", headers=a.h).status_code in (204, 409)
    for name in ("z", "w", "e"):
        requests.delete(f"{a.base}/c/{name}", headers=a.h)
    assert a.stored() == 0 and a.quota()["usage"] == 0


def test_over_quota_is_413_with_a_clear_body_and_nothing_stored(api: ApiServer) -> None:
    a = Account(api, "vic", limit=1000)
    assert a.put("fits", b"a" * 600).status_code == 201
    r = a.put("toobig", b"b" * 500)
    assert r.status_code == 413
    assert "pithos.diskspace" in r.text and "limit 1000" in r.text and "usage 600" in r.text
    assert requests.head(f"{a.base}/c/toobig", headers=a.h).status_code == 404
    r = a.put("fits", b"c" * 1001)  # an overwrite over the limit keeps the old version
    assert r.status_code == 413
    assert requests.get(f"{a.base}/c/fits", headers=a.h).content == b"a" * 600
    assert a.put("fits", b"d" * 1000).status_code == 201  # replacing 600 by 1000 fits
    assert a.stored() == 1000 and a.quota() == {
        "limit": 1000, "usage": 1000, "pending": 0, "project_limit": 1000,
        "project_usage": 1000, "project_pending": 0}


def test_long_object_names_are_charged(api: ApiServer) -> None:
    a = Account(api, "lou")
    name = "n" * 1000  # the commission's name is cut to its 256 characters
    assert a.put(name, b"l" * 123).status_code == 201
    assert requests.delete(f"{a.base}/c/{name}", headers=a.h).status_code == 204
    assert a.put(name + "x", b"l" * 77).status_code == 201
    assert a.stored() == a.quota()["usage"] == 77


def test_concurrent_overwrites_never_drift(api: ApiServer) -> None:
    a = Account(api, "wes")
    sizes = [(i * 7919) % 20000 for i in range(24)]

    def worker(chunk: list[int]) -> None:
        for n in chunk:
            assert a.put("same", b"z" * n).status_code == 201

    threads = [threading.Thread(target=worker, args=(sizes[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    q = a.quota()
    assert a.stored() == q["usage"] and q["pending"] == 0


class _FailCommit:
    """Make the gateway's metadata commit fail (the commission must be rejected)."""

    def __init__(self) -> None:
        self.on = False
        self._orig = MetaStore.object_put

    def __enter__(self) -> _FailCommit:
        me = self

        async def object_put(self: MetaStore, *a: Any, **kw: Any) -> Any:
            if me.on:
                raise OSError("injected: metadata commit failed")
            return await me._orig(self, *a, **kw)

        MetaStore.object_put = object_put  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        MetaStore.object_put = self._orig  # type: ignore[method-assign]


_ops = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from("abc"), st.integers(0, 3000)),
    st.tuples(st.just("fail"), st.sampled_from("abc"), st.integers(0, 3000)),
    st.tuples(st.just("delete"), st.sampled_from("abc"), st.just(0)),
), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(ops=_ops, limit=st.integers(0, 6000))
def test_property_usage_equals_stored_and_stays_under_the_limit(api: ApiServer, ops: list[
        tuple[str, str, int]], limit: int) -> None:
    a = Account(api, f"p{len(api.call(svc(api).users()))}", limit=limit)
    model: dict[str, int] = {}
    with _FailCommit() as fault:
        for op, name, size in ops:
            if op == "delete":
                r = requests.delete(f"{a.base}/c/{name}", headers=a.h, timeout=30)
                assert r.status_code == (204 if name in model else 404)
                model.pop(name, None)
                continue
            fault.on = op == "fail"
            r = a.put(name, b"q" * size)
            fault.on = False
            fits = sum(model.values()) - model.get(name, 0) + size <= limit
            if op == "fail":
                assert r.status_code in (413, 500)
            elif fits:
                assert r.status_code == 201, r.text
                model[name] = size
            else:
                assert r.status_code == 413, r.text
            q = a.quota()
            assert q["usage"] == a.stored() == sum(model.values()) <= limit
            assert q["pending"] == 0 and q["project_usage"] == q["usage"]


def test_a_crash_between_commit_and_accept_is_reconciled_at_start(tmp_path: Path) -> None:
    with ApiServer(tmp_path) as srv:
        a = Account(srv, "xena")
        assert a.put("kept", b"k" * 700).status_code == 201
        assert a.put("gone", b"g" * 300).status_code == 201
        ident = svc(srv)
        real = ident.accept

        async def crash(serial: int) -> None:
            raise RuntimeError("injected: the process died before the accept")

        ident.accept = crash
        try:  # a free stays pending until the commit: deleted, never accepted
            assert requests.delete(f"{a.base}/c/gone", headers=a.h).status_code == 500
        finally:
            ident.accept = real
        assert srv.call(ident.pending("pithos:")) != []
        assert a.quota()["usage"] == 1000  # the freed bytes are not reusable yet
        uuid, tok = a.uuid, a.h
    with ApiServer(tmp_path) as srv:  # the next start reconciles
        assert srv.call(svc(srv).pending("pithos:")) == []
        a2 = Account.__new__(Account)
        a2.api, a2.uuid, a2.h, a2.base = srv, uuid, tok, f"{srv.url}/v1/{uuid}"
        q = a2.quota()
        assert a2.stored() == 700 and q["usage"] == 700 and q["pending"] == 0


def test_a_crash_before_a_growth_is_given_back_is_reconciled_at_start(tmp_path: Path) -> None:
    from control.identity.service import GatewayQuota

    real = GatewayQuota.reject

    async def crash(self: GatewayQuota, serial: Any) -> None:
        raise RuntimeError("injected: the process died before giving the charge back")

    with ApiServer(tmp_path) as srv:
        a = Account(srv, "yuri", limit=1000)
        assert a.put("kept", b"k" * 700).status_code == 201
        with _FailCommit() as fault:
            fault.on = True
            assert a.put("lost", b"l" * 200).status_code == 500  # given back: undone
            assert a.quota()["usage"] == 700 and a.quota()["pending"] == 0
            GatewayQuota.reject = crash  # type: ignore[method-assign]
            try:
                assert a.put("lost", b"l" * 300).status_code == 500  # charged, not stored
            finally:
                GatewayQuota.reject = real  # type: ignore[method-assign]
        assert a.quota()["usage"] == 1000 and a.put("x", b"x").status_code == 413
        uuid, tok = a.uuid, a.h
    with ApiServer(tmp_path) as srv:
        a2 = Account.__new__(Account)
        a2.api, a2.uuid, a2.h, a2.base = srv, uuid, tok, f"{srv.url}/v1/{uuid}"
        q = a2.quota()
        assert a2.stored() == 700 and q["usage"] == 700 and q["pending"] == 0
        assert a2.put("x", b"x" * 300).status_code == 201


def test_v1_users_of_an_older_instance_are_adopted_with_their_data(tmp_path: Path) -> None:
    from gw_helpers import GatewayThread

    from archipelago.blocker.file import FileBlocker

    # An instance from before the control plane: the gateway's own v1 user and some data.
    old = GatewayThread(lambda: FileBlocker(str(tmp_path / "blocks"), fsync=False),
                        tmp_path / "gateway.db").start()
    try:
        key = old.add_user("olduser")
        h = {"X-Auth-Token": key}
        assert requests.put(f"{old.url}/v1/olduser/c", headers=h).status_code == 201
        assert requests.put(f"{old.url}/v1/olduser/c/o", data=b"legacy" * 100,
                            headers=h).status_code == 201
    finally:
        old.stop()
    with ApiServer(tmp_path) as srv:
        r = requests.get(srv.url + "/auth/v1.0", headers={"X-Auth-User": "olduser",
                                                          "X-Auth-Key": key})
        assert r.status_code == 204 and r.headers["X-Storage-Url"].endswith("/v1/olduser")
        assert requests.get(f"{srv.url}/v1/olduser/c/o", headers=h).content == b"legacy" * 100
        q = requests.get(srv.url + "/account/v1.0/quotas", headers=h).json()["olduser"][R]
        assert q["usage"] == 600 and q["pending"] == 0
        assert requests.get(f"{srv.url}/v1/olduser/c/o", headers={
            "X-Auth-Token": "not-" + key}).status_code == 401
