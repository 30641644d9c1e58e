"""What a server create asks for (image, snapshot, volume, block_device_mapping_v2) and the
plan of its disks, checked completely before anything is made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archipelago.errors import InvalidArgument, NotFound
from control.compute.images import check_boot_files, check_boot_images, get_image
from control.compute.model import Disk, Flavor, GiB

SOURCES = ("image", "snapshot", "volume", "blank")
SECTOR = 512


@dataclass
class CreateRequest:
    """A server create, from the API body or the CLI."""

    name: str
    flavor: Any
    image: str | None = None
    snapshot: str | None = None
    volume: str | None = None
    bdm: list[dict[str, Any]] = field(default_factory=list)
    volume_size: int | None = None  # bytes, boot disk
    kernel_args: str = ""
    user: str | None = None
    #: network ids: one NIC (port) on each, in order (eth0 first)
    networks: list[Any] = field(default_factory=list)


@dataclass
class PlannedDisk:
    """One disk to make (or to take, for an existing volume)."""

    source_type: str
    source: str | None
    size: int
    boot_index: int | None
    delete_on_termination: bool
    node: str = ""
    volume: str = ""
    hashes: list[str] = field(default_factory=list)
    nbytes: int = 0
    #: boot files of the content (its image's kernel_id/ramdisk_id, or its source's)
    kernel: str | None = None
    ramdisk: str | None = None

    @property
    def charged(self) -> bool:
        """Volumes compute makes count against cyclades.disk; existing ones do not."""
        return self.source_type != "volume"

    async def make(self, svc: Any) -> None:
        """Create the volume: a thin clone of an image's map or a snapshot, or a blank one."""
        if self.source_type == "image":
            await svc.vol("clone_hashmap", self.volume, self.hashes, self.nbytes, size=self.size)
        elif self.source_type == "snapshot":
            await svc.vol("clone", self.source, self.volume, self.size)
        elif self.source_type == "blank":
            await svc.vol("create", self.volume, self.size)

    def record(self) -> Disk:
        """The disk row."""
        return Disk(volume=self.volume, node=self.node, boot_index=self.boot_index,
                    size=self.size, source_type=self.source_type,
                    delete_on_termination=self.delete_on_termination, charged=self.charged,
                    kernel_image=self.kernel, ramdisk_image=self.ramdisk)


@dataclass
class DiskPlan:
    """Every disk of a new server, boot disk first."""

    disks: list[PlannedDisk]
    image_id: str | None = None
    kernel: str | None = None
    ramdisk: str | None = None

    def charged_bytes(self) -> int:
        """cyclades.disk the new volumes take."""
        return sum(d.size for d in self.disks if d.charged)


def _gib(v: Any, what: str) -> int | None:
    if v is None or v == "":
        return None
    if isinstance(v, bool) or not isinstance(v, int | str) or not str(v).isdigit() or int(v) <= 0:
        raise InvalidArgument(f"{what} {v!r} must be a positive number of GiB")
    return int(v) * GiB


def _bdm_entries(req: CreateRequest) -> list[dict[str, Any]]:
    """The request as block_device_mapping_v2 entries (imageRef etc. become boot entries)."""
    if not isinstance(req.bdm, list):
        raise InvalidArgument("block_device_mapping_v2 must be a list")
    entries = [dict(e) if isinstance(e, dict) else {"bad": e} for e in req.bdm]
    given = [(k, v) for k, v in (("image", req.image), ("snapshot", req.snapshot),
                                 ("volume", req.volume)) if v]
    if len(given) > 1:
        raise InvalidArgument("give one of image, snapshot or volume")
    if given:
        if any(str(e.get("boot_index")) == "0" for e in entries):
            raise InvalidArgument(f"both {given[0][0]} and a boot_index 0 block device given")
        entries.insert(0, {"source_type": given[0][0], "uuid": given[0][1], "boot_index": 0,
                           "_size": req.volume_size})
    boots = [e for e in entries if str(e.get("boot_index")) == "0"]
    if len(boots) != 1:
        raise InvalidArgument("a server needs exactly one boot source (image, snapshot, volume "
                              "or a block device with boot_index 0)")
    return sorted(entries, key=lambda e: str(e.get("boot_index")) != "0")


async def plan_disks(svc: Any, caller: Any, user: str, flavor: Flavor,
                     req: CreateRequest) -> DiskPlan:
    """Check every source (exists, visible to ``user``, sizes fit) and plan the disks."""
    plan = DiskPlan([])
    seen: set[str] = set()
    for i, e in enumerate(_bdm_entries(req)):
        st = e.get("source_type")
        if st not in SOURCES:
            raise InvalidArgument(f"block device source_type {st!r} is not one of {', '.join(SOURCES)}")
        boot = i == 0
        src = e.get("uuid")
        if st != "blank" and (not isinstance(src, str) or not src):
            raise InvalidArgument(f"block device of source_type {st} needs a uuid")
        size = e.get("_size") or _gib(e.get("volume_size"), "volume_size")
        dot = e.get("delete_on_termination", st != "volume")
        if not isinstance(dot, bool):
            dot = str(dot).lower() in ("true", "1", "yes")
        d = PlannedDisk(st, src, 0, 0 if boot else None, dot, node=f"d{i}")
        row: Any = None  # compute's record of a snapshot or volume source
        if st == "image":
            await _plan_image(svc, caller, user, flavor, d, size, boot, plan)
        elif st == "snapshot":
            info, row = await _volume_info(svc, caller, user, src, "snapshot")
            if not info.readonly:
                raise InvalidArgument(f"{src!r} is a writable volume, not a snapshot")
            d.size = max(info.size, flavor.disk * GiB if boot else 0) if size is None else size
            if d.size < info.size:
                raise InvalidArgument(f"disk size {d.size} is smaller than snapshot {src!r} "
                                      f"({info.size} bytes)")
        elif st == "volume":
            info, row = await _volume_info(svc, caller, user, src, "volume")
            if info.readonly:
                raise InvalidArgument(f"{src!r} is a snapshot: boot from it with source "
                                      "snapshot (a clone is made)")
            if row is not None and row.server_id is not None:
                raise InvalidArgument(f"volume {src!r} is attached to server {row.server_id}")
            d.volume, d.size, d.delete_on_termination = src, info.size, False
        else:
            if size is None:
                raise InvalidArgument("a blank block device needs volume_size (GiB)")
            d.size = size
        if row is not None:
            # content cloned from an AKI/ARI image boots with that image's kernel/ramdisk
            # (without them it has no boot sector: the guest would hang in the BIOS)
            d.kernel, d.ramdisk = row.kernel_image, row.ramdisk_image
            if boot and d.kernel:
                await check_boot_files(svc.ctx.gateway, f"{st} {src}", d.kernel, d.ramdisk,
                                       user, caller.is_admin)
                plan.kernel, plan.ramdisk = d.kernel, d.ramdisk
        if d.volume:
            if d.volume in seen:
                raise InvalidArgument(f"volume {d.volume!r} given twice")
            seen.add(d.volume)
        plan.disks.append(d)
    return plan


async def _plan_image(svc: Any, caller: Any, user: str, flavor: Flavor, d: PlannedDisk,
                      size: int | None, boot: bool, plan: DiskPlan) -> None:
    gw = svc.ctx.gateway
    img = await get_image(gw, d.source or "", user, caller.is_admin)
    if img.container_format in ("aki", "ari") or img.disk_format in ("aki", "ari"):
        raise InvalidArgument(f"image {img.id} is a kernel/ramdisk ({img.disk_format}), not a disk")
    try:
        d.hashes, d.nbytes = await gw.image_hashmap(img.id)
    except NotFound:
        raise InvalidArgument(f"image {img.id}: its object is gone") from None
    if size is None:
        size = flavor.disk * GiB if boot and flavor.disk else -(-d.nbytes // SECTOR) * SECTOR
    if size < d.nbytes:
        raise InvalidArgument(f"disk size {size} bytes is smaller than image {img.id} "
                              f"({d.nbytes} bytes)")
    d.size = size
    d.kernel, d.ramdisk = img.kernel_id, img.ramdisk_id
    if boot:
        await check_boot_images(gw, img, user, caller.is_admin)
        plan.image_id, plan.kernel, plan.ramdisk = img.id, img.kernel_id, img.ramdisk_id


async def _volume_info(svc: Any, caller: Any, user: str, name: str,
                       kind: str) -> tuple[Any, Any]:
    """The volume ``name`` and compute's record of it (None: unknown to compute) if ``user``
    may use it (recorded as theirs, or the caller is admin)."""
    from control.compute import store

    try:
        info = await svc.vol("info", name)
    except (NotFound, InvalidArgument):
        raise InvalidArgument(f"{kind} {name!r} not found") from None
    async with svc.ctx.db.read() as conn:
        row = await store.disk_row(conn, name)
    if not caller.is_admin and (row is None or row.user_id != user):
        raise InvalidArgument(f"{kind} {name!r} not found")
    return info, row
