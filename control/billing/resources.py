"""The billable resources: each has a cost policy and a base unit (bytes or a count).

A resource not listed here cannot be priced or billed (`resource()` raises).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from archipelago.errors import InvalidArgument


class Policy(StrEnum):
    """How a resource's events turn into charges (control-plane-reference.md §2)."""

    CONTINUOUS = "continuous"  # level × time: events carry a delta (or an absolute level)
    ONOFF = "onoff"            # time in each state × that state's price
    DISCRETE = "discrete"      # value × price, once, at the event's time
    CREDIT = "credit"          # credits added to the wallet (Aquarium's addcredits, price −1)


#: On/off state codes, as Aquarium's VM events carried them in ``value``.
OFF, ON, DESTROYED = 0, 1, 2
STATE_NAMES = {OFF: "off", ON: "on"}


@dataclass(frozen=True)
class Resource:
    """One billable resource."""

    name: str
    policy: Policy
    base: str            # "B" for byte-sized resources, else the name of one unit ("cpu", "vm")
    doc: str

    @property
    def sized(self) -> bool:
        """True when quantities are bytes (units take KiB..TiB prefixes)."""
        return self.base == "B"

    @property
    def states(self) -> tuple[str, ...]:
        """Price keys: ("on", "off") for on/off resources, ("",) otherwise."""
        return ("on", "off") if self.policy is Policy.ONOFF else ("",)


_C, _O, _D = Policy.CONTINUOUS, Policy.ONOFF, Policy.DISCRETE

RESOURCES: dict[str, Resource] = {r.name: r for r in (
    Resource("pithos.diskspace", _C, "B", "bytes stored in the object store"),
    Resource("cyclades.disk", _C, "B", "bytes of VM volumes (quota view)"),
    Resource("cyclades.ram", _C, "B", "RAM of running VMs"),
    Resource("cyclades.cpu", _C, "cpu", "vCPUs of running VMs"),
    Resource("cyclades.total_ram", _C, "B", "RAM of all VMs, running or not"),
    Resource("cyclades.total_cpu", _C, "cpu", "vCPUs of all VMs, running or not"),
    Resource("cyclades.vm", _C, "vm", "VMs that exist"),
    Resource("cyclades.floating_ip", _C, "ip", "floating IPs held"),
    Resource("cyclades.network.private", _C, "network", "private networks held"),
    Resource("cyclades.vmtime", _O, "vm", "time a VM spends on and off (compute state events)"),
    Resource("storage.volume", _C, "B", "bytes of archipelago volumes (storage view)"),
    Resource("billing.oneoff", _D, "unit", "one-off charges (value × price)"),
    Resource("billing.credit", Policy.CREDIT, "credit", "credits added by an admin"),
)}


def resource(name: str) -> Resource:
    """The resource called ``name``; InvalidArgument naming the known ones otherwise."""
    try:
        return RESOURCES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(RESOURCES))
        raise InvalidArgument(f"unknown resource {name!r} (known: {known})") from None
