"""NIC hot-plug of a running server through QMP: the tap's descriptor goes to qemu with
``getfd`` (SCM_RIGHTS), then ``netdev_add tap,fd=<name>`` and ``device_add virtio-net-pci``;
unplug is ``device_del`` (the guest lets go: DEVICE_DELETED) and ``netdev_del``."""

from __future__ import annotations

import contextlib
from typing import Any

from archipelago.errors import ArchipelagoError
from control.compute.network.model import Network, Port


async def hotplug(nsvc: Any, sid: str, p: Port, n: Network) -> None:
    """Give the running qemu of ``sid`` a new NIC for port ``p``."""
    from control.compute.vm import NicSpec

    nic = NicSpec(p.id, p.mac, await nsvc.host.open_tap(p, n))
    vm = nsvc.svc.runtime.vm(sid)
    try:
        async with vm._lock:
            q = await vm.qmp()
            await q.execute_fd("getfd", {"fdname": nic.netdev}, nic.fd)
            await q.execute("netdev_add", {"type": "tap", "id": nic.netdev, "fd": nic.netdev})
            try:
                await q.execute("device_add", nic.device())
            except ArchipelagoError:
                with contextlib.suppress(ArchipelagoError):
                    await q.execute("netdev_del", {"id": nic.netdev})
                raise
    finally:
        nic.close()  # qemu has its own copy (or none: then the tap vanishes)


async def unplug(nsvc: Any, sid: str, p: Port, timeout: float) -> None:
    """Take port ``p``'s NIC out of the running qemu of ``sid`` (its tap then vanishes)."""
    vm = nsvc.svc.runtime.vm(sid)
    netdev = f"net{p.id}"
    async with vm._lock:
        q = await vm.qmp()
        await q.execute("device_del", {"id": f"dev-{netdev}"})
        await q.wait_event("DEVICE_DELETED", timeout, {"device": f"dev-{netdev}"})
        await q.execute("netdev_del", {"id": netdev})
