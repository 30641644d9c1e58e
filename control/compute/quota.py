"""Quota charges of compute through identity commissions (resources in Astakos' names).

A server charges ``cyclades.vm`` 1, ``cyclades.total_cpu``/``total_ram`` while it exists,
``cyclades.cpu``/``cyclades.ram`` while it runs, and ``cyclades.disk`` for the volumes
compute made for it. Sizes are bytes (ram = MiB << 20). A commission is issued before
anything is created (QuotaExceeded -> 413 and nothing made), accepted after the change
commits, rejected when the change fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

VM, CPU, RAM = "cyclades.vm", "cyclades.cpu", "cyclades.ram"
TOTAL_CPU, TOTAL_RAM, DISK = "cyclades.total_cpu", "cyclades.total_ram", "cyclades.disk"


def running(vcpus: int, ram_mib: int, sign: int = 1) -> dict[str, int]:
    """The charges of a running server."""
    return {CPU: sign * vcpus, RAM: sign * (ram_mib << 20)}


def existing(vcpus: int, ram_mib: int, disk: int, sign: int = 1) -> dict[str, int]:
    """The charges of an existing server (running or not) and ``disk`` bytes of volumes."""
    return {VM: sign, TOTAL_CPU: sign * vcpus, TOTAL_RAM: sign * (ram_mib << 20),
            DISK: sign * disk}


class Quotas:
    """Commissions through the identity plugin's service."""

    def __init__(self, identity: Any) -> None:
        self.identity = identity

    @contextlib.asynccontextmanager
    async def charge(self, user: str, deltas: dict[str, int], name: str) -> AsyncIterator[None]:
        """Issue a commission (QuotaExceeded leaves), accept on success, reject on error."""
        deltas = {k: v for k, v in deltas.items() if v}
        if not deltas:
            yield
            return
        serial = await self.identity.issue_commission(
            [{"holder": user, "resource": k, "quantity": v} for k, v in deltas.items()], name)
        try:
            yield
        except BaseException:
            await self.identity.reject(serial)
            raise
        await self.identity.accept(serial)

    async def release(self, user: str, deltas: dict[str, int], name: str) -> None:
        """Give back charges (negative deltas) at once; never over quota."""
        async with self.charge(user, deltas, name):
            pass
