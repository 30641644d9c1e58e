"""The usage event: what billing is told, deduplicated by id, keyed (user, resource, instance).

``value`` means, by the resource's policy: continuous — a delta of the level (or the
new level when ``absolute``); on/off — the state code (0 off, 1 on, 2 destroyed, as
Aquarium's VM events); discrete — the quantity used; credit — the credits added.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from archipelago.errors import InvalidArgument
from control.billing.periods import from_micros, to_micros, utc
from control.billing.resources import DESTROYED, OFF, ON, Policy, resource

MAX_ID = 200


def _decimal(value: Any) -> Decimal:
    try:
        d = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        d = Decimal("NaN")
    if not d.is_finite() or abs(d) >= Decimal(10) ** 30:
        raise InvalidArgument(f"bad usage value {value!r}: expected a finite number")
    return d


@dataclass(frozen=True)
class UsageEvent:
    """One usage event (validated on construction; times become UTC)."""

    id: str
    user: str
    resource: str
    value: Decimal
    occurred: datetime
    instance: str = ""
    project: str = ""
    absolute: bool = False
    type: str = ""      # the control-plane event that caused it, e.g. identity.commission.accepted
    details: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not 0 < len(self.id) <= MAX_ID:
            raise InvalidArgument(f"bad event id {self.id!r}: expected 1-{MAX_ID} characters")
        if not isinstance(self.user, str) or not self.user:
            raise InvalidArgument(f"event {self.id}: no user")
        res = resource(self.resource)
        object.__setattr__(self, "value", _decimal(self.value))
        if not isinstance(self.occurred, datetime):
            raise InvalidArgument(f"event {self.id}: occurred must be a time")
        object.__setattr__(self, "occurred", utc(self.occurred))
        if res.policy is Policy.ONOFF and self.value not in (OFF, ON, DESTROYED):
            raise InvalidArgument(f"event {self.id}: {self.resource} takes the states 0 off, 1 on, "
                                  f"2 destroyed, not {self.value}")
        if self.absolute and res.policy is not Policy.CONTINUOUS:
            raise InvalidArgument(f"event {self.id}: only continuous resources take an absolute level")

    @property
    def key(self) -> tuple[str, str, str]:
        """(user, resource, instance): events of one key form one usage history."""
        return (self.user, self.resource, self.instance)

    @property
    def order(self) -> tuple[datetime, str]:
        """Sort key: time of occurrence, then id (ties are broken the same way everywhere)."""
        return (self.occurred, self.id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (value as a decimal string, time as microseconds and ISO)."""
        return {"id": self.id, "type": self.type, "user": self.user, "resource": self.resource,
                "instance": self.instance, "project": self.project, "value": str(self.value),
                "absolute": self.absolute, "occurred": self.occurred.isoformat(),
                "occurred_us": to_micros(self.occurred), "details": dict(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UsageEvent:
        """Inverse of :meth:`to_dict` (``occurred_us`` wins over ``occurred``)."""
        occurred = from_micros(int(d["occurred_us"])) if "occurred_us" in d else \
            datetime.fromisoformat(d["occurred"])
        return cls(id=d["id"], user=d["user"], resource=d["resource"], value=Decimal(str(d["value"])),
                   occurred=occurred, instance=d.get("instance", ""), project=d.get("project", ""),
                   absolute=bool(d.get("absolute", False)), type=d.get("type", ""),
                   details=d.get("details") or {})
