"""Control-plane events → usage events: payload shapes, what is charged and what is not."""

from __future__ import annotations

from decimal import Decimal

import pytest
from billing_helpers import T

from archipelago.errors import InvalidArgument
from control.billing import intake
from control.billing.periods import to_micros

AT = to_micros(T("2026-03-01 12:00")) / 1e6


def test_commission_charges_the_user_side_of_each_provision() -> None:
    payload = {"serial": 57, "name": "upload", "provisions": [
        {"holder": "user:u1", "source": "project:p1", "resource": "pithos.diskspace", "quantity": 1024},
        {"holder": "project:p1", "source": None, "resource": "pithos.diskspace", "quantity": 1024},
        {"holder": "user:u1", "source": "project:p1", "resource": "astakos.pending_app", "quantity": 1},
    ]}
    (ev,) = intake.commission(payload, "c1", AT)
    assert (ev.id, ev.user, ev.resource, ev.value, ev.instance, ev.project) == \
        ("c1.0", "u1", "pithos.diskspace", Decimal(1024), "p1", "p1")
    assert ev.occurred == T("2026-03-01 12:00") and ev.details == {"serial": 57, "name": "upload"}


def test_flat_commission_payload_and_its_own_time() -> None:
    (ev,) = intake.commission({"holder": "u2", "resource": "cyclades.ram", "delta": -512,
                               "time": "2026-03-02T00:00:00Z"}, "c2", AT)
    assert (ev.id, ev.user, ev.instance, ev.value, ev.occurred) == \
        ("c2", "u2", "u2", Decimal(-512), T("2026-03-02 00:00"))   # system project = the user


def test_server_states_map_to_on_off_destroyed() -> None:
    codes = [intake.server_state({"server": "s1", "user": "u", "state": s}, f"e{s}", AT)[0].value
             for s in ("BUILD", "ACTIVE", "STOPPED", "REBOOT", "ERROR", "DELETED")]
    assert codes == [0, 1, 0, 1, 0, 2]
    with pytest.raises(InvalidArgument, match="unknown server state"):
        intake.server_state({"server": "s1", "user": "u", "state": "DANCING"}, "x", AT)


def test_volume_events_set_the_level() -> None:
    (c,) = intake.TRANSLATORS["storage.volume.created"]({"volume": "v", "user": "u", "size": 4096}, "a", AT)
    (r,) = intake.TRANSLATORS["storage.volume.removed"]({"volume": "v", "user": "u"}, "b", AT)
    assert (c.value, c.absolute, r.value, r.absolute) == (4096, True, 0, True)
    assert intake.TRANSLATORS["storage.volume.created"]({"volume": "v", "size": 1}, "c", AT) == []


def test_credit_and_generic_usage() -> None:
    (c,) = intake.credit({"user": "u", "amount": "12.5", "by": "admin"}, "k", AT)
    assert (c.resource, c.value, c.details) == ("billing.credit", Decimal("12.5"), {"by": "admin"})
    (u,) = intake.usage({"user": "u", "resource": "billing.oneoff", "value": 2}, "o", AT)
    assert (u.resource, u.value) == ("billing.oneoff", 2)


@pytest.mark.parametrize("kind,payload,why", [
    ("identity.commission.accepted", {"provisions": "x"}, "list"),
    ("identity.commission.accepted", {"holder": "user:u", "resource": "pithos.diskspace"}, "quantity"),
    ("identity.commission.accepted", {"resource": "pithos.diskspace", "quantity": 1}, "holder"),
    ("compute.server.state", {"server": "s", "state": "ACTIVE"}, "user"),
    ("storage.volume.created", {"volume": "v", "user": "u", "size": -1}, "size"),
    ("billing.credit", {"user": "u", "amount": "-5"}, "negative"),
    ("billing.credit", {"user": "u", "amount": "0"}, "> 0"),
    ("billing.usage", {"user": "u", "resource": "nope", "value": 1}, "unknown resource"),
    ("billing.usage", {"user": "u", "resource": "billing.oneoff", "value": 1, "time": "soon"}, "bad time"),
])
def test_malformed_payloads_are_refused(kind, payload, why) -> None:
    with pytest.raises(InvalidArgument, match=why):
        intake.TRANSLATORS[kind](payload, "id", AT)
