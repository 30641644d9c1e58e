"""Quota charges of compute through identity commissions (resources in Astakos' names).

A server charges ``cyclades.vm`` 1, ``cyclades.total_cpu``/``total_ram`` while it exists,
``cyclades.cpu``/``cyclades.ram`` while it runs, and ``cyclades.disk`` for the volumes
compute made for it. Sizes are bytes (ram = MiB << 20). A commission is issued before
anything is created (QuotaExceeded -> 413 and nothing made), accepted after the change
commits, rejected when the change fails. Commission names are ``compute <action> <server>
[<arg>]`` so that a restart can settle the ones a crash left pending (:func:`settle`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

VM, CPU, RAM = "cyclades.vm", "cyclades.cpu", "cyclades.ram"
TOTAL_CPU, TOTAL_RAM, DISK = "cyclades.total_cpu", "cyclades.total_ram", "cyclades.disk"
NETWORK = "cyclades.network.private"
#: (resource, unit, description, default limit for a new user)
RESOURCES = (
    (VM, "", "Virtual machines", 2),
    (CPU, "", "Virtual CPUs of running VMs", 8),
    (RAM, "bytes", "RAM of running VMs", 8 << 30),
    (TOTAL_CPU, "", "Virtual CPUs of all VMs", 16),
    (TOTAL_RAM, "bytes", "RAM of all VMs", 16 << 30),
    (DISK, "bytes", "Volumes made for VMs", 100 << 30),
    (NETWORK, "", "Private networks", 2),
)


def running(vcpus: int, ram_mib: int, sign: int = 1) -> dict[str, int]:
    """The charges of a running server."""
    return {CPU: sign * vcpus, RAM: sign * (ram_mib << 20)}


def existing(vcpus: int, ram_mib: int, disk: int, sign: int = 1) -> dict[str, int]:
    """The charges of an existing server (running or not) and ``disk`` bytes of volumes."""
    return {VM: sign, TOTAL_CPU: sign * vcpus, TOTAL_RAM: sign * (ram_mib << 20),
            DISK: sign * disk}


async def register(identity: Any) -> None:
    """Declare the cyclades.* resources (idempotent)."""
    from control.identity.quotas import Resource

    for name, unit, desc, limit in RESOURCES:
        await identity.register_resource(Resource(name, unit=unit, description=desc,
                                                  default_limit=limit, service="compute"))


class Quotas:
    """Commissions through the identity plugin's service."""

    def __init__(self, identity: Any) -> None:
        self.identity = identity

    @contextlib.asynccontextmanager
    async def charge(self, user: str, deltas: dict[str, int], name: str) -> AsyncIterator[None]:
        """Issue a commission (QuotaExceeded leaves), accept on success, reject on error."""
        from control.identity.quotas import provisions

        deltas = {k: v for k, v in deltas.items() if v}
        if not deltas:
            yield
            return
        provs: list[Any] = []
        for k, v in deltas.items():
            provs.extend(provisions(user, user, k, v))  # the system project = the user
        serial = await self.identity.issue_commission(provs, name=name)
        try:
            yield
        except BaseException:
            await self.identity.reject(serial)
            raise
        await self.identity.accept(serial)

    async def release(self, user: str, deltas: dict[str, int], name: str) -> None:
        """Give back charges (negative deltas) at once."""
        async with self.charge(user, deltas, name):
            pass

    async def settle(self, happened: Callable[[str], Awaitable[bool]]) -> tuple[int, int]:
        """Accept pending compute commissions whose change happened, reject the others."""
        accepted = rejected = 0
        for serial, name in await self._pending():
            if await happened(name):
                await self.identity.accept(serial)
                accepted += 1
            else:
                await self.identity.reject(serial)
                rejected += 1
        return accepted, rejected

    async def _pending(self) -> list[tuple[int, str]]:
        out = []
        for serial in await self.identity.pending("compute "):
            out.append((serial, str((await self.identity.commission(serial))["name"])))
        return out
