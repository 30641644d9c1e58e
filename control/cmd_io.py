"""`archip import FILE VOLUME` and `archip export VOLUME FILE`: raw images in and out.

Import reads only the data regions (SEEK_DATA/SEEK_HOLE; a block device is all data),
skips all-zero blocks, names each 4 MiB block by its Pithos content hash (native
SHA-256, GIL released, one thread per core) and sends only blocks the store lacks;
the volume is then one map over those content blocks (clone_hashmap), so importing
the same image twice stores no new data block. Export writes a sparse file: holes
stay holes, and data blocks that read as zeros are not written.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from archipelago import native
from archipelago.client import Client
from archipelago.errors import AlreadyExists, InvalidArgument, NotFound, from_errno
from archipelago.hashing import BLOCK_SIZE, ZERO_HASH
from archipelago.mapper.format import check_user_name
from control.context import print_json, wants_json
from control.volume_fmt import connect, human


@dataclass
class Stats:
    """What an import or export did."""

    source: str
    target: str
    bytes: int = 0
    blocks: int = 0
    data_blocks: int = 0
    zero_blocks: int = 0
    new_blocks: int = 0
    bytes_done: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def dedup_ratio(self) -> float:
        """Data blocks per newly stored block (inf when nothing new was stored)."""
        return self.data_blocks / self.new_blocks if self.new_blocks else float("inf")

    @property
    def throughput(self) -> float:
        """Logical bytes per second."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        d: dict[str, object] = {k: getattr(self, k) for k in (
            "source", "target", "bytes", "blocks", "data_blocks", "zero_blocks", "new_blocks")}
        d["seconds"] = round(self.seconds, 3)
        d["dedup_ratio"] = None if self.new_blocks == 0 else round(self.dedup_ratio, 3)
        d["throughput"] = round(self.throughput)
        return d


def _open_source(path: str) -> tuple[int, int, bool]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise from_errno(e.errno or 5, f"cannot open {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        os.close(fd)
        raise InvalidArgument(f"{path} is neither a regular file nor a block device")
    return fd, os.lseek(fd, 0, os.SEEK_END), stat.S_ISREG(st.st_mode)


def data_blocks(fd: int, size: int, regular: bool, bs: int = BLOCK_SIZE) -> Iterator[int]:
    """Indices of blocks overlapping a data region (every block where holes are unknown)."""
    n = (size + bs - 1) // bs
    if not regular:
        yield from range(n)
        return
    pos, last = 0, -1
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after pos
            return
        try:
            end = min(size, os.lseek(fd, start, os.SEEK_HOLE))
        except OSError:
            end = size
        for i in range(max(start // bs, last + 1), (end + bs - 1) // bs):
            yield i
            last = i
        pos = end


class Progress:
    """A one-line progress bar on stderr when it is a terminal."""

    def __init__(self, total: int, verb: str, enabled: bool) -> None:
        self.total, self.verb = max(total, 1), verb
        self.enabled = enabled and sys.stderr.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0

    def update(self, done: int, extra: str = "") -> None:
        """Redraw (at most 10 times a second)."""
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < self.total):
            return
        self._last = now
        frac = min(1.0, done / self.total)
        bar = "#" * int(frac * 30)
        rate = done / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.verb} [{bar:<30}] {frac:6.1%} {human(done)} "
                         f"{human(rate)}/s {extra}\x1b[K")
        sys.stderr.flush()

    def finish(self, done: int | None = None, extra: str = "") -> None:
        """Draw the final state (holes count as done: they are skipped, not read) and end the line."""
        if self.enabled:
            if done is not None:
                self._last = float("-inf")  # always drawn, even right after a redraw
                self.update(done, extra)
            sys.stderr.write("\n")


def import_file(client: Client, path: str, volume: str, threads: int = 2,
                on_progress: Callable[[Stats], None] | None = None) -> Stats:
    """Import a raw image (file or block device) as a new volume; returns Stats."""
    check_user_name(volume)  # before any data moves (the mapper checks it again)
    try:
        client.info(volume)
        raise AlreadyExists(f"volume {volume!r} already exists (import creates it)")
    except NotFound:
        pass
    fd, size, regular = _open_source(path)
    t0 = time.monotonic()
    nblocks = (size + BLOCK_SIZE - 1) // BLOCK_SIZE
    st = Stats(path, volume, bytes=size, blocks=nblocks)
    hashes = [ZERO_HASH] * nblocks
    local = threading.local()

    def one(i: int) -> None:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = bytearray(BLOCK_SIZE)
        n = native.pread_into(fd, memoryview(buf), i * BLOCK_SIZE)
        mv = memoryview(buf)[:n]
        new = False
        zero = native.is_zero(mv)
        if not zero:
            h = native.block_hash(mv)
            hashes[i] = h
            new = client.store_block(h, mv)
        with st._lock:
            st.bytes_done += n
            if zero:
                st.zero_blocks += 1
            else:
                st.data_blocks += 1
                st.new_blocks += int(new)
        if on_progress is not None:
            on_progress(st)

    try:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for _ in pool.map(one, data_blocks(fd, size, regular)):
                pass
    finally:
        os.close(fd)
    st.zero_blocks = nblocks - st.data_blocks
    client.clone_hashmap(volume, hashes, size)
    st.seconds = time.monotonic() - t0
    return st


def export_volume(client: Client, volume: str, path: str, threads: int = 2,
                  on_progress: Callable[[Stats], None] | None = None) -> Stats:
    """Write a volume to a sparse file (or a block device); returns Stats."""
    t0 = time.monotonic()
    with client.open(volume) as v:
        size = v.size
        st = Stats(volume, path, bytes=size, blocks=(size + BLOCK_SIZE - 1) // BLOCK_SIZE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except IsADirectoryError:
            raise InvalidArgument(f"cannot export to {path}: it is a directory") from None
        except OSError as e:
            raise from_errno(e.errno or 5, f"cannot open {path}: {e.strerror}") from None
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        try:
            if regular:
                os.ftruncate(fd, 0)  # drop old content: holes must read as zeros
                os.ftruncate(fd, size)
            pieces = [(o, min(BLOCK_SIZE, e.offset + e.length - o)) for e in v.extents()
                      if not e.zero or not regular
                      for o in range(e.offset, e.offset + e.length, BLOCK_SIZE)]

            def one(piece: tuple[int, int]) -> None:
                off, n = piece
                with v.read_reply(off, n) as r:  # written from the segment: no extra copy
                    mv = r.data
                    zero = native.is_zero(mv)
                    if not zero or not regular:
                        native.pwrite_from(fd, mv, off)
                with st._lock:
                    st.bytes_done += n
                    st.data_blocks += int(not zero)
                    st.zero_blocks += int(zero)
                if on_progress is not None:
                    on_progress(st)

            with ThreadPoolExecutor(max(1, threads)) as pool:
                for _ in pool.map(one, pieces):
                    pass
            os.fsync(fd)
        finally:
            os.close(fd)
    st.seconds = time.monotonic() - t0
    return st


def _summary(st: Stats, verb: str) -> str:
    if verb == "imported":
        dedup = ("nothing new stored" if st.new_blocks == 0 and st.data_blocks
                 else f"dedup ratio {st.dedup_ratio:.2f}")
        return (f"imported {st.source} -> {st.target}: {human(st.bytes)} in {st.seconds:.2f}s "
                f"({human(st.throughput)}/s); {st.data_blocks} data blocks, "
                f"{st.blocks - st.data_blocks} zero/hole blocks, {st.new_blocks} new; {dedup}")
    return (f"exported {st.source} -> {st.target}: {human(st.bytes)} in {st.seconds:.2f}s "
            f"({human(st.throughput)}/s); {st.data_blocks} data blocks written, sparse elsewhere")


def _import(a: argparse.Namespace) -> int:
    with connect(a) as c:
        try:
            with open(a.file, "rb") as f:
                total = f.seek(0, os.SEEK_END)  # st_size is 0 for block devices
        except OSError:
            total = 0
        bar = Progress(total, "importing", not a.no_progress)
        st = import_file(c, a.file, a.volume, a.threads, lambda s: bar.update(
            s.bytes_done, f"{s.new_blocks} new / {s.data_blocks} data blocks"))
        bar.finish(st.bytes, f"{st.new_blocks} new / {st.data_blocks} data blocks")
    if wants_json(a):
        print_json(st.to_dict())
    else:
        print(_summary(st, "imported"), file=sys.stderr)
    return 0


def _export(a: argparse.Namespace) -> int:
    with connect(a) as c:
        bar = Progress(c.info(a.volume).size, "exporting", not a.no_progress)
        st = export_volume(c, a.volume, a.file, a.threads, lambda s: bar.update(s.bytes_done))
        bar.finish(st.bytes)
    if wants_json(a):
        print_json(st.to_dict())
    else:
        print(_summary(st, "exported"), file=sys.stderr)
    return 0


def _threads(text: str) -> int:
    """argparse type for --threads: 1..256 (0 or a negative count is a typo, not 'one')."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 256:
        raise argparse.ArgumentTypeError(f"must be a whole number in 1..256, got {text!r}")
    return n


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `archip import` and `archip export`."""
    threads = max(4, os.cpu_count() or 4)  # > cores: hashing overlaps blocker round trips
    s = subparsers.add_parser("import", help="import a raw image (file or block device) "
                                             "as a new volume")
    s.add_argument("file")
    s.add_argument("volume")
    s.add_argument("--threads", type=_threads, default=threads, help="hashing threads")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_import)
    s = subparsers.add_parser("export", help="write a volume to a sparse raw file")
    s.add_argument("volume")
    s.add_argument("file")
    s.add_argument("--threads", type=_threads, default=threads, help="reader threads")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_export)
