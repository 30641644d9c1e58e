"""The qemu side of servers: instance dirs, boot specs, detached processes and their exits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from archipelago.instance import Instance
from control.compute import accel
from control.compute.config import ComputeConfig
from control.compute.images import fetch_file
from control.compute.model import Server
from control.compute.vm import VM, DiskSpec, NicSpec, VMSpec

log = logging.getLogger("control.compute")
ExitHandler = Callable[[str], Awaitable[None]]


class Runtime:
    """One VM object per server, a watcher task per running qemu."""

    def __init__(self, inst: Instance, cfg: ComputeConfig, nbd_socket: str,
                 on_exit: ExitHandler) -> None:
        self.inst = inst
        self.cfg = cfg
        self.nbd_socket = nbd_socket
        self.on_exit = on_exit
        self._vms: dict[str, VM] = {}
        self._watchers: dict[str, tuple[int, asyncio.Task[None]]] = {}
        #: taps for a server's NICs at boot (the network service sets it)
        self.nics: Callable[[Server], Awaitable[list[NicSpec]]] | None = None
        #: servers whose next exit was asked for (stop, reboot, delete): not a guest shutdown
        self.expected: set[str] = set()

    @property
    def root(self) -> Path:
        """DATA_DIR/vm: one instance dir per server."""
        return self.inst.data_dir / "vm"

    def vm(self, sid: str) -> VM:
        """The VM object of a server."""
        if sid not in self._vms:
            self.root.mkdir(mode=0o700, exist_ok=True)
            self._vms[sid] = VM(self.root / sid, sid)
        return self._vms[sid]

    def accel(self) -> str:
        """kvm or tcg, per [compute] accel (auto probed once per process)."""
        return accel.detect(self.cfg.accel, self.cfg.accel_probe_timeout, self.cfg.qemu)

    async def spec(self, s: Server, gateway: Any, client: Any) -> VMSpec:
        """The qemu spec of server ``s`` (kernel/initrd copied from their images once)."""
        vm = self.vm(s.id)
        vm.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        spec = VMSpec(id=s.id, name=s.name.replace(",", "_"), vcpus=s.flavor.vcpus,
                      ram_mib=s.flavor.ram, nbd_socket=self.nbd_socket,
                      disks=[DiskSpec(d.node, d.volume, boot=d.boot_index == 0) for d in s.disks],
                      accel=await asyncio.to_thread(self.accel),
                      reconnect_delay=self.cfg.reconnect_delay, qemu=self.cfg.qemu)
        if s.kernel_image:
            kernel = vm.dir / "kernel"
            if not kernel.exists():
                await fetch_file(gateway, client, s.kernel_image, kernel)
            spec.kernel = str(kernel)
            if s.ramdisk_image:
                initrd = vm.dir / "initrd"
                if not initrd.exists():
                    await fetch_file(gateway, client, s.ramdisk_image, initrd)
                spec.initrd = str(initrd)
            spec.append = " ".join(x for x in (self.cfg.kernel_args, s.kernel_args) if x)
        return spec

    async def boot(self, s: Server, gateway: Any, client: Any) -> int:
        """Start qemu for ``s`` and watch it; its pid."""
        vm = self.vm(s.id)
        spec = await self.spec(s, gateway, client)
        spec.nics = await self.nics(s) if self.nics is not None else []
        try:
            pid = await vm.start(spec)
        finally:
            for n in spec.nics:  # qemu holds the taps now (or failed: they vanish)
                n.close()
        self.watch(s.id)
        return pid

    def watch(self, sid: str) -> None:
        """Call on_exit(sid) when the server's current qemu process exits."""
        pid = self.vm(sid).pid()
        if pid is None:
            return
        old = self._watchers.get(sid)
        if old is not None and old[0] == pid and not old[1].done():
            return
        # a watcher of an older process (soft reboot) finishes on its own
        self._watchers[sid] = (pid, asyncio.create_task(self._watch(sid, pid)))

    async def _watch(self, sid: str, pid: int) -> None:
        vm = self.vm(sid)
        await vm.wait_exit(None, pid)
        if self._watchers.get(sid, (None,))[0] == pid:
            self._watchers.pop(sid, None)
            await vm.close()
        try:
            await self.on_exit(sid)
        except Exception:  # noqa: BLE001 -- a failed bookkeeping must not kill the loop
            log.exception("handling the exit of server %s failed", sid)

    def running(self, sid: str) -> bool:
        """True while the server's qemu runs."""
        return self.vm(sid).running()

    def forget(self, sid: str) -> None:
        """Drop a deleted server's instance dir."""
        self._vms.pop(sid, None)
        shutil.rmtree(self.root / sid, ignore_errors=True)

    async def close(self) -> None:
        """Stop watching (qemu processes keep running: they are re-adopted at next start)."""
        tasks = [t for _, t in self._watchers.values()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._watchers.clear()
        for vm in self._vms.values():
            await vm.close()
