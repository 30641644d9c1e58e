"""Images for servers: Plankton records through the gateway handle, kernel/ramdisk files.

An image whose properties carry ``kernel_id`` and ``ramdisk_id`` (the Glance AKI/ARI
convention) boots with -kernel/-initrd read from those images; others boot from disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archipelago.errors import BackendUnavailable, Forbidden, InvalidArgument, NotFound
from archipelago.hashing import BLOCK_SIZE, ZERO_HASH

#: Largest kernel or ramdisk copied into an instance dir.
MAX_BOOT_FILE = 256 << 20


@dataclass(frozen=True)
class Image:
    """What compute needs of a Plankton image."""

    id: str
    name: str
    owner: str
    size: int
    disk_format: str
    container_format: str
    is_public: bool
    properties: dict[str, str]

    @property
    def kernel_id(self) -> str | None:
        """The AKI image this image boots with (-kernel), if any."""
        return self.properties.get("kernel_id") or None

    @property
    def ramdisk_id(self) -> str | None:
        """The ARI image this image boots with (-initrd), if any."""
        return self.properties.get("ramdisk_id") or None


async def get_image(gateway: Any, image_id: str, user: str, admin: bool) -> Image:
    """The image ``image_id`` if ``user`` may use it (owner, public, member, or admin)."""
    if gateway is None:
        raise BackendUnavailable("the gateway is not running in this process: images unavailable")
    rec = await gateway.image(image_id) if image_id else None
    if rec is None or rec.get("status", "available") != "available":
        raise InvalidArgument(f"image {image_id!r} not found")
    img = Image(id=str(rec["id"]), name=str(rec.get("name", "")), owner=str(rec.get("owner", "")),
                size=int(rec.get("size", 0)), disk_format=str(rec.get("disk_format", "")),
                container_format=str(rec.get("container_format", "")),
                is_public=bool(rec.get("is_public")),
                properties={str(k).lower(): str(v) for k, v in (rec.get("properties") or {}).items()})
    if not (admin or img.is_public or img.owner == user
            or user in (await _members(gateway, image_id))):
        raise InvalidArgument(f"image {image_id!r} not found")
    return img


async def _members(gateway: Any, image_id: str) -> list[str]:
    fn = getattr(gateway, "image_members", None)
    return list(await fn(image_id)) if fn is not None else []


async def check_boot_images(gateway: Any, img: Image, user: str, admin: bool) -> None:
    """The kernel and ramdisk images of ``img`` exist and are usable (before anything is made)."""
    if img.ramdisk_id and not img.kernel_id:
        raise InvalidArgument(f"image {img.id} has ramdisk_id but no kernel_id")
    await check_boot_files(gateway, f"image {img.id}", img.kernel_id, img.ramdisk_id, user, admin)


async def check_boot_files(gateway: Any, what: str, kernel: str | None, ramdisk: str | None,
                           user: str, admin: bool) -> None:
    """The kernel and ramdisk images ``what`` boots with exist and are usable by ``user``."""
    for ref in (kernel, ramdisk):
        if ref:
            try:
                sub = await get_image(gateway, ref, user, admin)
            except (InvalidArgument, Forbidden):
                raise InvalidArgument(f"{what}: its kernel/ramdisk image {ref!r} "
                                      "is not found") from None
            if sub.size > MAX_BOOT_FILE:
                raise InvalidArgument(f"image {ref}: {sub.size} bytes is too big for -kernel/-initrd")


async def fetch_file(gateway: Any, client: Any, image_id: str, dest: Path) -> Path:
    """Write image ``image_id``'s bytes to ``dest`` (0600) from its content blocks."""
    try:
        hashes, nbytes = await gateway.image_hashmap(image_id)
    except NotFound:
        raise InvalidArgument(f"boot image {image_id!r} is gone") from None
    if nbytes > MAX_BOOT_FILE:
        raise InvalidArgument(f"boot image {image_id!r} is too big ({nbytes} bytes)")
    tmp = dest.with_name(dest.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        left = nbytes
        for h in hashes:
            n = min(BLOCK_SIZE, left)
            if h == ZERO_HASH:
                f.write(bytes(n))
            else:
                data = bytes(await client.read_block(h, 0, n))
                f.write(data.ljust(n, b"\0"))
            left -= n
    os.replace(tmp, dest)
    return dest
