"""The compute service: servers and flavors over the control database, volumes through the
daemon's mapper (thin clones: no data block moves) and qemu through the runtime.

Used by the HTTP API (api.py) and, for flavors, in-process by the CLI. ``caller`` is
identity's Principal (``uuid``, ``is_admin``); users see only their own servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from archipelago.errors import (
    ArchipelagoError,
    Busy,
    Forbidden,
    InvalidArgument,
    NotFound,
    NotRunning,
    PeerDied,
)
from control.compute import quota, store
from control.compute.config import ComputeConfig
from control.compute.disks import CreateRequest, DiskPlan, plan_disks
from control.compute.model import (
    ACTIVE,
    BUILD,
    DELETED,
    ERROR,
    REBOOT,
    STOPPED,
    Flavor,
    Server,
    check_name,
)
from control.compute.runtime import Runtime

log = logging.getLogger("control.compute")
#: Statuses during which a server holds its running charges (cyclades.cpu / ram).
HOLDS_RUNNING = (BUILD, ACTIVE, REBOOT)
STATE_EVENT = "compute.server.state"
#: Volume events the billing plugin charges storage from (payload: volume, user, size, time).
VOLUME_CREATED, VOLUME_RESIZED, VOLUME_REMOVED = (
    "storage.volume.created", "storage.volume.resized", "storage.volume.removed")


async def volume_event(ctx: Any, conn: Any, kind: str, user: str, volume: str, size: int) -> None:
    """Emit a storage.volume.* event for a volume compute made, resized or removed."""
    from control.host.plugin import Event

    now = time.time()
    await ctx.events.emit(conn, Event(kind, {"volume": volume, "user": user, "project": user,
                                             "size": size, "time": now}, occurred_at=now))


class ComputeService:
    """Flavors, servers and their actions."""

    def __init__(self, ctx: Any, cfg: ComputeConfig) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.runtime = Runtime(ctx.instance, cfg, ctx.config.nbd.socket, self._exited)
        from control.compute.network.service import NetworkService

        self.net = NetworkService(self)
        self.runtime.nics = self.net.nics
        self._client: Any = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- plumbing -------------------------------------------------------------------------
    @property
    def quotas(self) -> quota.Quotas:
        """Commissions through identity."""
        return quota.Quotas(self.ctx.service("identity"))

    async def volumes(self) -> Any:
        """The daemon's mapper (AsyncClient), connected lazily, reconnected after a restart."""
        from archipelago.client import AsyncClient

        if self._client is None:
            self._client = await AsyncClient.connect(self.ctx.instance)
        return self._client

    async def vol(self, op: str, *args: Any, **kw: Any) -> Any:
        """One volume operation; one retry on a fresh connection if the daemon restarted."""
        try:
            return await getattr(await self.volumes(), op)(*args, **kw)
        except (NotRunning, PeerDied):
            self._drop_client()
            return await getattr(await self.volumes(), op)(*args, **kw)

    def _drop_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def lock(self, sid: str) -> asyncio.Lock:
        """The per-server lock serialising its actions."""
        return self._locks.setdefault(sid, asyncio.Lock())

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _set(self, s: Server, status: str, **values: Any) -> None:
        """Change a server's status and emit compute.server.state in the same transaction."""
        from control.host.plugin import Event

        now = time.time()
        async with self.ctx.db.begin() as conn:
            await store.server_set(conn, s.id, status=status, **values)
            await self.ctx.events.emit(conn, Event(STATE_EVENT, {
                "server": s.id, "user": s.user_id, "state": status, "time": now,
                "flavor": {"id": s.flavor.id, "vcpus": s.flavor.vcpus, "ram": s.flavor.ram,
                           "disk": s.flavor.disk}}, occurred_at=now))
        s.status = status

    async def get(self, caller: Any, sid: str) -> Server:
        """A server the caller may see (NotFound otherwise, also for DELETED ones)."""
        async with self.ctx.db.read() as conn:
            try:
                s = await store.server_get(conn, sid)
            except NotFound:
                raise NotFound(f"server {sid!r} not found") from None
        if s.status == DELETED or not (caller.is_admin or s.user_id == caller.uuid):
            raise NotFound(f"server {sid!r} not found")
        return s

    async def list(self, caller: Any, all_users: bool = False) -> list[Server]:
        """The caller's servers (every user's for an admin asking for all)."""
        async with self.ctx.db.read() as conn:
            ids = await store.server_ids(conn, None if all_users and caller.is_admin
                                         else caller.uuid)
            return [await store.server_get(conn, i) for i in ids]

    # -- flavors --------------------------------------------------------------------------
    async def flavor_create(self, name: str, vcpus: int, ram: int, disk: int) -> Flavor:
        """A new flavor (vcpus >= 1, ram MiB >= 16, disk GiB >= 0)."""
        check_name("flavor", name)
        if not (isinstance(vcpus, int) and 1 <= vcpus <= 64):
            raise InvalidArgument(f"vcpus {vcpus!r} must be 1..64")
        if not (isinstance(ram, int) and 16 <= ram <= 1 << 20):
            raise InvalidArgument(f"ram {ram!r} must be 16..1048576 MiB")
        if not (isinstance(disk, int) and 0 <= disk <= 1 << 16):
            raise InvalidArgument(f"disk {disk!r} must be 0..65536 GiB")
        async with self.ctx.db.begin() as conn:
            return await store.flavor_create(conn, name, vcpus, ram, disk)

    async def flavors(self) -> list[Flavor]:
        """Every flavor."""
        async with self.ctx.db.read() as conn:
            return await store.flavor_list(conn)

    async def flavor(self, ref: Any) -> Flavor:
        """A flavor by id or name."""
        async with self.ctx.db.read() as conn:
            return await store.flavor_get(conn, ref)

    # -- create / delete ------------------------------------------------------------------
    async def owner_of(self, caller: Any, user: str | None) -> str:
        """The user a new server belongs to: the caller, or (admins only) ``user``."""
        if not user or user == caller.uuid:
            return str(caller.uuid)
        if not caller.is_admin:
            raise Forbidden("only an administrator creates servers for another user")
        try:
            found = await self.ctx.service("identity").user(user)
        except NotFound:
            raise InvalidArgument(f"user {user!r} not found") from None
        return str(found.uuid)

    async def create(self, caller: Any, req: CreateRequest) -> Server:
        """Validate everything, charge quota (413 first), make volumes, record BUILD, boot."""
        check_name("server", req.name)
        user = await self.owner_of(caller, req.user)
        flavor = await self.flavor(req.flavor)
        plan: DiskPlan = await plan_disks(self, caller, user, flavor, req)
        nets = await self.net.plan(caller, user, req.networks)
        sid = str(uuid.uuid4())
        for i, d in enumerate(plan.disks):
            d.volume = d.volume or f"{sid}.ext.disk{i}"
        charge = {**quota.existing(flavor.vcpus, flavor.ram, plan.charged_bytes()),
                  **quota.running(flavor.vcpus, flavor.ram)}
        now = time.time()
        s = Server(id=sid, name=req.name, user_id=user, flavor=flavor, image_id=plan.image_id,
                   status=BUILD, kernel_image=plan.kernel, ramdisk_image=plan.ramdisk,
                   kernel_args=req.kernel_args, fault="", created_at=now, updated_at=now)
        made: list[str] = []
        async with self.quotas.charge(user, charge, f"compute create {sid}"):
            try:
                for d in plan.disks:
                    await d.make(self)
                    if d.source_type != "volume":
                        made.append(d.volume)
                s.disks = [d.record() for d in plan.disks]
                from control.host.plugin import Event

                async with self.ctx.db.begin() as conn:
                    await store.server_insert(conn, s)
                    await self.net.insert_ports(conn, sid, user, nets)
                    for d in plan.disks:
                        if d.charged:
                            await volume_event(self.ctx, conn, VOLUME_CREATED, user, d.volume,
                                               d.size)
                    await self.ctx.events.emit(conn, Event(STATE_EVENT, {
                        "server": sid, "user": user, "state": BUILD, "time": now,
                        "flavor": {"id": flavor.id, "vcpus": flavor.vcpus, "ram": flavor.ram,
                                   "disk": flavor.disk}}, occurred_at=now))
            except BaseException:
                for v in made:
                    with contextlib.suppress(ArchipelagoError):
                        await self.vol("remove", v)
                raise
        if nets:
            try:
                await self.net.changed([n.id for n, _ in nets])
            except ArchipelagoError as e:  # the boot then fails too and says why (ERROR)
                log.warning("networks of server %s: %s", sid, e.message)
        self._spawn(self._boot(sid, first=True))
        return s

    async def _boot(self, sid: str, first: bool = False) -> None:
        async with self.lock(sid):
            async with self.ctx.db.read() as conn:
                s = await store.server_get(conn, sid)
            try:
                await self.runtime.boot(s, self.ctx.gateway, await self.volumes())
            except ArchipelagoError as e:
                log.warning("server %s failed to boot: %s", sid, e.message)
                await self._set(s, ERROR, fault=e.message)
                await self.quotas.release(s.user_id, quota.running(s.flavor.vcpus, s.flavor.ram, -1),
                                          f"compute stopped {sid}")
                return
            await self._set(s, ACTIVE, fault="")

    async def delete(self, caller: Any, sid: str) -> None:
        """Hard stop, remove delete_on_termination volumes, detach the rest, DELETED."""
        s = await self.get(caller, sid)
        async with self.lock(sid):
            s = await self.get(caller, sid)
            self.runtime.expected.add(sid)
            try:
                await self.runtime.vm(sid).kill()
            finally:
                self.runtime.expected.discard(sid)
            async with self.ctx.db.begin() as conn:
                for d in s.disks:
                    await store.disk_detach(conn, d.volume)
            for d in s.disks:
                if d.delete_on_termination:
                    with contextlib.suppress(NotFound):
                        await self.vol("remove", d.volume)
                    async with self.ctx.db.begin() as conn:
                        await store.disk_forget(conn, d.volume)
                        await volume_event(self.ctx, conn, VOLUME_REMOVED, s.user_id, d.volume, 0)
            release = quota.existing(s.flavor.vcpus, s.flavor.ram, sum(
                d.size for d in s.disks if d.charged and d.delete_on_termination), -1)
            if s.status in HOLDS_RUNNING:
                release.update(quota.running(s.flavor.vcpus, s.flavor.ram, -1))
            await self._set(s, DELETED)
            await self.net.server_gone(sid)
            await self.quotas.release(s.user_id, release, f"compute delete {sid}")
            self.runtime.forget(sid)

    # -- lifecycle --------------------------------------------------------------------------
    async def _exited(self, sid: str) -> None:
        """qemu of ``sid`` exited: a guest shutdown (or crash) makes the server STOPPED."""
        if sid in self.runtime.expected:
            return
        async with self.lock(sid):
            if sid in self.runtime.expected or self.runtime.running(sid):
                return
            async with self.ctx.db.read() as conn:
                s = await store.server_get(conn, sid)
            if s.status in HOLDS_RUNNING:
                await self._set(s, STOPPED)
                await self.quotas.release(s.user_id, quota.running(s.flavor.vcpus, s.flavor.ram, -1),
                                          f"compute stopped {sid}")

    async def _happened(self, name: str) -> bool:
        """Did the change of a pending commission named ``compute <action> <sid> [arg]`` happen?"""
        parts = name.split()
        if len(parts) < 3:
            return False
        action, sid = parts[1], parts[2]
        if action.startswith("volume-"):
            from control.compute.volumes import happened

            return await happened(self, action, parts[2:])
        if action.startswith("network-"):
            return await self.net.happened(action, parts[2:])
        async with self.ctx.db.read() as conn:
            try:
                s = await store.server_get(conn, sid)
            except NotFound:
                return False
        if action == "create":
            return True
        if action == "delete":
            return s.status == DELETED
        if action == "stopped":
            return s.status not in HOLDS_RUNNING
        if action == "start":
            return s.status in HOLDS_RUNNING
        if action == "resize":
            return len(parts) > 3 and str(s.flavor.id) == parts[3]
        return False

    async def restore(self) -> None:
        """API server start: settle pending commissions, re-adopt running qemu processes,
        mark the dead ones."""
        await self.quotas.settle(self._happened)
        await self.net.restore()
        async with self.ctx.db.read() as conn:
            ids = await store.server_ids(conn, None, HOLDS_RUNNING)
        for sid in ids:
            vm = self.runtime.vm(sid)
            if await vm.adopt():
                self.runtime.watch(sid)
                async with self.ctx.db.read() as conn:
                    s = await store.server_get(conn, sid)
                if s.status != ACTIVE:
                    await self._set(s, ACTIVE)
                log.info("re-adopted server %s (pid %s)", sid, vm.pid())
            else:
                await self._exited(sid)

    async def close(self) -> None:
        """Stop background work (qemu processes keep running)."""
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runtime.close()
        await self.net.close()
        self._drop_client()

    def require(self, s: Server, *statuses: str) -> None:
        """Busy (409) unless the server is in one of ``statuses``."""
        if s.status not in statuses:
            raise Busy(f"server {s.id} is {s.status} (needs {' or '.join(statuses)})")

    async def stop(self, caller: Any, sid: str) -> Server:
        """ACPI power button, hard stop after [compute] stop_timeout; STOPPED."""
        async with self.lock((await self.get(caller, sid)).id):
            s = await self.get(caller, sid)
            self.require(s, ACTIVE)
            self.runtime.expected.add(sid)
            try:
                await self.runtime.vm(sid).powerdown(self.cfg.stop_timeout)
            finally:
                self.runtime.expected.discard(sid)
            await self._set(s, STOPPED)
            await self.quotas.release(s.user_id, quota.running(s.flavor.vcpus, s.flavor.ram, -1),
                                      f"compute stopped {sid}")
            return s

    async def start(self, caller: Any, sid: str) -> Server:
        """Boot a STOPPED (or ERROR) server again; charges cyclades.cpu/ram (413 first)."""
        async with self.lock((await self.get(caller, sid)).id):
            s = await self.get(caller, sid)
            self.require(s, STOPPED, ERROR)
            async with self.quotas.charge(s.user_id, quota.running(s.flavor.vcpus, s.flavor.ram),
                                          f"compute start {sid}"):
                await self.runtime.boot(s, self.ctx.gateway, await self.volumes())
            await self._set(s, ACTIVE, fault="")
            return s

    async def reboot(self, caller: Any, sid: str, hard: bool) -> Server:
        """SOFT: power button, wait, boot again; HARD: reset the machine."""
        async with self.lock((await self.get(caller, sid)).id):
            s = await self.get(caller, sid)
            self.require(s, ACTIVE)
            await self._set(s, REBOOT)
            if hard:
                await self.runtime.vm(sid).execute("system_reset")
            else:
                self.runtime.expected.add(sid)
                try:
                    await self.runtime.vm(sid).powerdown(self.cfg.stop_timeout)
                    await self.runtime.boot(s, self.ctx.gateway, await self.volumes())
                finally:
                    self.runtime.expected.discard(sid)
            await self._set(s, ACTIVE)
            return s
