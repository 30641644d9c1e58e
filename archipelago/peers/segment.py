"""The shared-memory segment: create/join a file under /dev/shm, layout, descriptors, buffers.

Layout (all offsets from the base, see native/archip.h): header (magic, format
version, sizes), ports (state, pid, generation, sleeping flag, request ring, reply
ring), the descriptor pool (512-byte descriptors + a free-index ring) and the data
arena (size classes, each a last-freed-first stack of free buffers plus an owner word
per buffer: a load with k buffers in flight keeps reusing k buffers, so the pages of the
rest are never touched and tmpfs never commits them; nothing prefaults the segment).
Rings are bounded lock-free MPMC rings (Vyukov); no lock is ever left held. A
producer killed between claiming a slot and publishing it stalls that ring: the
registry's stall watch tombstones such a slot after ~0.25 s (Registry.watch_stalls).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from typing import Any

from archipelago.errors import AlreadyExists, ConfigError, Corrupt, InvalidArgument, NotRunning
from archipelago.native import require

MiB = 1024 * 1024
NONE = 0xFFFFFFFF
FORMAT_VERSION = 2


@dataclass(frozen=True)
class SegmentConfig:
    """Sizes of a segment: ports, descriptors and the arena's size classes (size, count)."""

    nr_ports: int = 64
    nr_static: int = 16
    nr_desc: int = 2048
    classes: tuple[tuple[int, int], ...] = field(
        default=((4096, 1024), (64 * 1024, 256), (MiB, 64), (4 * MiB, 48))
    )

    @property
    def max_buffer(self) -> int:
        """Largest single buffer the arena hands out."""
        return max(size for size, _ in self.classes)


def _segment_path(name: str) -> str:
    if "/" in name:
        return name
    if not name or name.startswith("."):
        raise InvalidArgument(f"bad segment name {name!r}")
    return f"/dev/shm/{name}"


class Segment:
    """One mapped segment; ``base`` is the cffi char* every kernel takes."""

    def __init__(self, path: str, fd: int, size: int, owner: bool) -> None:
        self.ffi, self.lib = require()
        self.path = path
        self.size = size
        self.owner = owner
        self._fd = fd
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.mm)
        self.base = self.ffi.from_buffer(self.mm)
        self.hdr = self.ffi.cast("struct ap_header *", self.base)

    @classmethod
    def create(cls, name: str, config: SegmentConfig | None = None,
               replace: bool = False) -> Segment:
        """Create and format a segment file (mode 0600) named ``name`` under /dev/shm."""
        ffi, lib = require()
        config = config or SegmentConfig()
        if len(config.classes) > 8 or not 0 < config.nr_static <= config.nr_ports <= 253:
            raise InvalidArgument("segment config: ≤ 8 size classes, 0 < static ≤ ports ≤ 253")
        c = ffi.new("struct ap_config *")
        c.nr_ports, c.nr_static, c.nr_desc = config.nr_ports, config.nr_static, config.nr_desc
        c.nr_classes = len(config.classes)
        for i, (size, count) in enumerate(sorted(config.classes)):
            c.buf_size[i], c.buf_count[i] = size, count
        total = lib.ap_seg_size(c)
        path = _segment_path(name)
        if replace and os.path.exists(path):
            os.unlink(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise AlreadyExists(f"segment {path} exists (is another daemon running?)") from None
        try:
            os.ftruncate(fd, total)
            seg = cls(path, fd, total, owner=True)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        rc = lib.ap_seg_format(seg.base, total, c, os.getpid())
        if rc < 0:
            seg.close()
            raise ConfigError(f"cannot format segment: {os.strerror(-rc)}")
        return seg

    @classmethod
    def join(cls, name: str) -> Segment:
        """Map an existing segment; refuse a foreign file or another format version."""
        _, lib = require()
        path = _segment_path(name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotRunning(f"segment {path} does not exist (daemon not running?)") from None
        size = os.fstat(fd).st_size
        if size < 4096:
            os.close(fd)
            raise Corrupt(f"{path} is not an archipelago segment (too small)")
        seg = cls(path, fd, size, owner=False)
        rc = lib.ap_seg_check(seg.base, size)
        if rc == 0:
            return seg
        version = seg.hdr.version
        seg.close()
        if rc == -2:
            raise ConfigError(f"segment {path} has format version {version}, this build "
                              f"speaks {FORMAT_VERSION}: restart the daemon with this build")
        raise Corrupt(f"{path} is not an archipelago segment (bad magic or size)")

    # -- layout facts
    @property
    def nr_ports(self) -> int:
        """Number of ports (static and dynamic) in the segment."""
        return int(self.hdr.nr_ports)

    @property
    def nr_static(self) -> int:
        """Number of static (server) ports; the rest are dynamic client ports."""
        return int(self.hdr.nr_static)

    @property
    def nr_desc(self) -> int:
        """Number of request descriptors in the pool."""
        return int(self.hdr.nr_desc)

    @property
    def max_buffer(self) -> int:
        """Largest buffer of the arena."""
        return int(self.hdr.classes[self.hdr.nr_classes - 1].buf_size)

    def class_sizes(self) -> list[tuple[int, int]]:
        """(buffer size, count) per arena class."""
        return [(int(self.hdr.classes[i].buf_size), int(self.hdr.classes[i].count))
                for i in range(self.hdr.nr_classes)]

    def desc(self, idx: int) -> Any:
        """The cffi ``struct ap_desc *`` of descriptor ``idx``."""
        return self.lib.ap_desc_ptr(self.base, idx)

    def free_descs(self) -> int:
        """Descriptors currently in the free pool."""
        return int(self.lib.ap_desc_free_count(self.base))

    def free_buffers(self) -> list[int]:
        """Free buffers per arena class."""
        return [int(self.lib.ap_buf_free_count(self.base, i)) for i in range(self.hdr.nr_classes)]

    def is_full(self) -> bool:
        """True when every descriptor and every buffer is back in its pool."""
        return self.free_descs() == self.nr_desc and all(
            f == c for f, (_, c) in zip(self.free_buffers(), self.class_sizes(), strict=True))

    def port_state(self, port: int) -> tuple[int, int, int]:
        """(state, pid, generation) of a port; state 0 free, 1 bound, 2 dead."""
        lib, b = self.lib, self.base
        return lib.ap_port_state(b, port), lib.ap_port_pid(b, port), lib.ap_port_gen(b, port)

    def close(self) -> None:
        """Unmap (views still held by callers keep the mapping alive until released)."""
        self.base = None
        self.hdr = None
        try:
            self.view.release()
            self.mm.close()
        except BufferError:
            pass
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def unlink(self) -> None:
        """Remove the segment file (the owner does this at shutdown)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
