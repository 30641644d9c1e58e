"""Compute's os-volumes bookkeeping without a daemon: owners only (404 for others, before
the mapper is asked), and pending volume commissions a crash left are settled at start by
what the disk records show."""

from __future__ import annotations

import requests
from api_helpers import ApiServer

from control.compute import store
from control.compute.model import Disk
from control.identity.quotas import provisions


def _token(api: ApiServer, name: str) -> tuple[str, str]:
    ident = api.host.plugin("identity").service
    user, token = api.call(ident.add_user(name, password=f"{name}-pw-1"))
    return user.uuid, token


def test_volume_commissions_settle_by_the_records(tmp_path) -> None:  # noqa: ANN001
    with ApiServer(tmp_path, plugins=["identity", "compute"]) as api:
        svc = api.host.plugin("compute").service
        ident = api.host.plugin("identity").service
        alice, _ = _token(api, "alice")
        _, bob_tok = _token(api, "bob")

        async def record(volume: str, size: int) -> None:
            async with svc.ctx.db.begin() as conn:
                await store.disk_insert(conn, None, alice, Disk(volume, "-", None, size, "blank",
                                                                False, True))

        api.call(record("made", 1 << 30))
        api.call(record("grown", 2 << 30))
        api.call(record("kept", 1 << 30))
        # the usage the records stand for (deletes give some back)
        api.call(ident.accept(api.call(ident.issue_commission(
            provisions(alice, alice, "cyclades.disk", 4 << 30), name="compute volume-create x"))))
        for name, delta in (("volume-create made", 1 << 30), ("volume-create lost", 1 << 30),
                            ("volume-resize grown 2147483648", 1 << 30),
                            ("volume-resize kept 3221225472", 2 << 30),
                            ("volume-delete gone", -(1 << 30)), ("volume-delete kept", -(1 << 30))):
            api.call(ident.issue_commission(
                provisions(alice, alice, "cyclades.disk", delta), name=f"compute {name}"))
        accepted, rejected = api.call(svc.quotas.settle(svc._happened))
        assert (accepted, rejected) == (3, 3)
        assert api.call(ident.pending("compute ")) == []
        # bob cannot touch alice's volume by name: 404 before the (absent) mapper is asked
        url = api.url + "/compute/v2.0/os-volumes/made"
        r = requests.delete(url, headers={"X-Auth-Token": bob_tok}, timeout=30)
        assert r.status_code == 404 and "itemNotFound" in r.json()
        r = requests.post(url + "/action", json={"snapshot": {"name": "s"}},
                          headers={"X-Auth-Token": bob_tok}, timeout=30)
        assert r.status_code == 404
        listed = requests.get(api.url + "/compute/v2.0/os-volumes",
                              headers={"X-Auth-Token": bob_tok}, timeout=30).json()
        assert listed == {"volumes": []}
        assert requests.get(api.url + "/compute/v2.0/os-volumes", timeout=30).status_code == 401
