"""Control-plane events → usage events (the payloads are documented in docs/control-api.md).

Each function takes an event's type, payload, id and time and returns the usage events
it means (none for what billing does not charge: project-side provisions, resources
billing does not know). A usage event's id derives from the control event's id, so a
redelivered event is a duplicate and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from archipelago.errors import InvalidArgument
from control.billing.events import UsageEvent
from control.billing.periods import from_micros, parse_time
from control.billing.prices import parse_amount
from control.billing.resources import DESTROYED, OFF, ON, RESOURCES, Policy

COMMISSION = "identity.commission.accepted"
SERVER_STATE = "compute.server.state"
VOLUME_CREATED = "storage.volume.created"
VOLUME_RESIZED = "storage.volume.resized"
VOLUME_REMOVED = "storage.volume.removed"
CREDIT = "billing.credit"
USAGE = "billing.usage"

#: Compute (Cyclades/OpenStack) server states → on/off codes; unknown states are refused.
SERVER_STATES = {"ACTIVE": ON, "REBOOT": ON, "HARD_REBOOT": ON, "RESIZE": OFF, "BUILD": OFF,
                 "STOPPED": OFF, "SHUTOFF": OFF, "ERROR": OFF, "DELETED": DESTROYED}


def when(payload: Mapping[str, Any], occurred_at: float) -> datetime:
    """The payload's ``time`` (epoch seconds or ISO 8601), else the event's own time."""
    value = payload.get("time", occurred_at)
    if isinstance(value, str):
        return parse_time(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return from_micros(round(value * 1_000_000))
    raise InvalidArgument(f"bad time {value!r}")


def _str(payload: Mapping[str, Any], *names: str) -> str:
    for name in names:
        value = payload.get(name)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    raise InvalidArgument(f"payload has no {' or '.join(names)}")


def _holder(text: str) -> tuple[str, str]:
    kind, sep, name = text.partition(":")
    return (kind, name) if sep else ("user", text)


def commission(payload: Mapping[str, Any], event_id: str, occurred_at: float) -> list[UsageEvent]:
    """An accepted commission: one continuous delta per user-side provision of a known resource.

    Identity sends one event per user-side provision (holder, project, resource, delta);
    a ``provisions`` list is taken too. Project-side copies (holder ``project:<p>``) are
    not charged; the instance (and price list) is the project, the user's system project
    (= the user's uuid) when none is named.
    """
    provisions = payload.get("provisions")
    if provisions is None:
        provisions = [payload]
    if not isinstance(provisions, list):
        raise InvalidArgument("provisions must be a list")
    t = when(payload, occurred_at)
    out = []
    for i, prov in enumerate(provisions):
        if not isinstance(prov, Mapping):
            raise InvalidArgument("a provision must be an object")
        kind, user = _holder(_str(prov, "holder"))
        name = _str(prov, "resource")
        res = RESOURCES.get(name)
        if kind != "user" or res is None or res.policy is not Policy.CONTINUOUS:
            continue
        source = prov.get("project") or prov.get("source")
        project = _holder(source)[1] if isinstance(source, str) and source else user
        delta = prov.get("quantity", prov.get("delta"))
        if isinstance(delta, bool) or not isinstance(delta, int | float | str):
            raise InvalidArgument("a provision needs a numeric quantity")
        out.append(UsageEvent(
            id=event_id if len(provisions) == 1 else f"{event_id}.{i}", user=user, resource=name,
            value=Decimal(str(delta)), occurred=t, instance=project, project=project, type=COMMISSION,
            details={k: payload[k] for k in ("serial", "name") if k in payload}))
    return out


def server_state(payload: Mapping[str, Any], event_id: str, occurred_at: float) -> list[UsageEvent]:
    """A compute server changed state: VM time on/off (DELETED ends it)."""
    state = _str(payload, "state").upper()
    if state not in SERVER_STATES:
        raise InvalidArgument(f"unknown server state {state!r}")
    flavor = payload.get("flavor")
    return [UsageEvent(id=event_id, user=_str(payload, "user"), resource="cyclades.vmtime",
                       value=Decimal(SERVER_STATES[state]), occurred=when(payload, occurred_at),
                       instance=_str(payload, "server", "server_id", "id"),
                       project=str(payload.get("project") or ""), type=SERVER_STATE,
                       details={"state": state, **({"flavor": flavor} if flavor else {})})]


def _volume(kind: str) -> Callable[[Mapping[str, Any], str, float], list[UsageEvent]]:
    def handle(payload: Mapping[str, Any], event_id: str, occurred_at: float) -> list[UsageEvent]:
        user = payload.get("user")
        if not user:      # a volume nobody owns (made by an admin with the CLI) is not billed
            return []
        size = 0 if kind == VOLUME_REMOVED else payload.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidArgument("a volume event needs its size in bytes")
        return [UsageEvent(id=event_id, user=str(user), resource="storage.volume", value=Decimal(size),
                           occurred=when(payload, occurred_at), instance=_str(payload, "volume"),
                           project=str(payload.get("project") or ""), absolute=True, type=kind)]
    handle.__doc__ = f"{kind}: the volume's size becomes its level (0 when removed)."
    return handle


def credit(payload: Mapping[str, Any], event_id: str, occurred_at: float) -> list[UsageEvent]:
    """Credits added to a user's wallet."""
    return [UsageEvent(id=event_id, user=_str(payload, "user"), resource="billing.credit",
                       value=parse_amount(payload.get("amount", "")), occurred=when(payload, occurred_at),
                       type=CREDIT, details={"by": str(payload.get("by", ""))})]


def usage(payload: Mapping[str, Any], event_id: str, occurred_at: float) -> list[UsageEvent]:
    """A usage event given whole by another plugin (e.g. a one-off billing.oneoff)."""
    value = payload.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidArgument("a usage event needs a numeric value")
    details = payload.get("details") or {}
    return [UsageEvent(id=event_id, user=_str(payload, "user"), resource=_str(payload, "resource"),
                       value=Decimal(str(value)), occurred=when(payload, occurred_at),
                       instance=str(payload.get("instance") or ""), project=str(payload.get("project") or ""),
                       absolute=bool(payload.get("absolute", False)), type=USAGE,
                       details=details if isinstance(details, Mapping) else {})]


#: Event type → translation.
TRANSLATORS: dict[str, Callable[[Mapping[str, Any], str, float], list[UsageEvent]]] = {
    COMMISSION: commission, SERVER_STATE: server_state, VOLUME_CREATED: _volume(VOLUME_CREATED),
    VOLUME_RESIZED: _volume(VOLUME_RESIZED), VOLUME_REMOVED: _volume(VOLUME_REMOVED),
    CREDIT: credit, USAGE: usage,
}
