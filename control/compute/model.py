"""Records of the compute plugin (flavors, servers, disks) and their API shapes."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from archipelago.errors import InvalidArgument

BUILD, ACTIVE, STOPPED, REBOOT, ERROR, DELETED = (
    "BUILD", "ACTIVE", "STOPPED", "REBOOT", "ERROR", "DELETED")
STATES = (BUILD, ACTIVE, STOPPED, REBOOT, ERROR, DELETED)
GiB = 1 << 30
_NAME = re.compile(r"^[^/\x00-\x1f\x7f]{1,128}$")


def check_name(kind: str, name: Any) -> str:
    """A display name: 1-128 printable characters, no slash."""
    if not isinstance(name, str) or not _NAME.match(name) or name.strip() != name:
        raise InvalidArgument(f"{kind} name {name!r} is invalid: 1-128 printable characters, "
                              "no slash, no leading/trailing blanks")
    return name


@dataclass
class Flavor:
    """vcpus, ram (MiB), disk (GiB)."""

    id: int
    name: str
    vcpus: int
    ram: int
    disk: int

    def to_api(self) -> dict[str, Any]:
        """OpenStack flavor shape."""
        return {"id": str(self.id), "name": self.name, "vcpus": self.vcpus, "ram": self.ram,
                "disk": self.disk, "links": []}


@dataclass
class Disk:
    """A volume of a server."""

    volume: str
    node: str
    boot_index: int | None
    size: int
    source_type: str
    delete_on_termination: bool
    charged: bool
    #: the -kernel/-initrd images the volume's content boots with (from the image it was
    #: cloned from, kept by its snapshots and clones: a server booted from one needs them)
    kernel_image: str | None = None
    ramdisk_image: str | None = None

    def to_api(self, server_id: str) -> dict[str, Any]:
        """os-volume_attachments shape."""
        return {"id": self.volume, "volumeId": self.volume, "serverId": server_id,
                "device": f"/dev/vd{chr(ord('a') + int(self.node[1:]))}"
                if self.node[1:].isdigit() and int(self.node[1:]) < 26 else self.node,
                "size": self.size, "delete_on_termination": self.delete_on_termination}


@dataclass
class Server:
    """A server row with its flavor and disks."""

    id: str
    name: str
    user_id: str
    flavor: Flavor
    image_id: str | None
    status: str
    kernel_image: str | None
    ramdisk_image: str | None
    kernel_args: str
    fault: str
    created_at: float
    updated_at: float
    disks: list[Disk] = field(default_factory=list)

    @property
    def boot(self) -> Disk | None:
        """The boot disk."""
        return next((d for d in self.disks if d.boot_index == 0), None)

    def charged_disk(self) -> int:
        """Bytes of cyclades.disk this server's volumes hold."""
        return sum(d.size for d in self.disks if d.charged)

    def to_api(self, detail: bool = True) -> dict[str, Any]:
        """OpenStack server shape (plus the archipelago volumes)."""
        out: dict[str, Any] = {"id": self.id, "name": self.name, "links": []}
        if not detail:
            return out
        iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
        out.update({
            "status": self.status, "user_id": self.user_id, "tenant_id": self.user_id,
            "flavor": {"id": str(self.flavor.id), "links": []},
            "image": {"id": self.image_id, "links": []} if self.image_id else "",
            "created": iso(self.created_at), "updated": iso(self.updated_at),
            "metadata": {}, "addresses": {}, "progress": 100 if self.status == ACTIVE else 0,
            "os-extended-volumes:volumes_attached": [{"id": d.volume} for d in self.disks],
            "kernel_args": self.kernel_args,
        })
        if self.fault:
            out["fault"] = {"code": 500, "message": self.fault}
        return out
