"""Changed-block diffs between two maps, from the maps alone (no block data is read).

Two maps differ at a block when their entries name different objects (a zero entry
names none). Snapshots and clones share entries, so a diff between a snapshot and a
later snapshot (or the live volume) of the same lineage is exactly the blocks written,
copied up or zeroed in between. Granularity is the map's block (like RBD's objects).

Ceph's "rbd diff v1" stream (doc/dev/rbd-diff.rst) is written and read here too:
``b"rbd diff v1\\n"``, then records: ``f`` from-snap / ``t`` to-snap (u8, le32 length,
name), ``s`` image size (le64), ``w`` data (le64 offset, le64 length, bytes), ``z``
zeroed range (le64 offset, le64 length), and ``e`` at the end.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from archipelago.errors import InvalidArgument
from archipelago.mapper.chunks import load_chunk
from archipelago.mapper.format import ENTRIES_PER_CHUNK, ENTRY_SIZE, ZERO, Header, chunks_of
from archipelago.upkeep.maps import prefixes_named

if TYPE_CHECKING:
    from archipelago.mapper import Mapper

EPC = ENTRIES_PER_CHUNK
ES = ENTRY_SIZE
MAGIC = b"rbd diff v1\n"
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def _names(h: Header, buf: bytes | bytearray, lo: int, hi: int) -> list[str | None]:
    out: list[str | None] = []
    for j in range(lo, hi):
        kind = buf[j * ES]
        out.append(None if kind == ZERO else h.name_of(kind, bytes(buf[j * ES + 1 : (j + 1) * ES])))
    return out


async def diff_headers(m: Mapper, hf: Header, ht: Header) -> list[dict[str, Any]]:
    """Extents of ``ht`` whose blocks differ from ``hf``: [{offset, length, zero}]."""
    if hf.block_size != ht.block_size:
        raise InvalidArgument(f"{hf.name!r} and {ht.name!r} have different block sizes")
    bs, n_to, n_from = ht.block_size, ht.nblocks, hf.nblocks
    out: list[dict[str, Any]] = []

    def add(i: int, zero: bool) -> None:
        start, end = i * bs, min((i + 1) * bs, ht.size)
        last = out[-1] if out else None
        if last is not None and last["zero"] == zero and last["offset"] + last["length"] == start:
            last["length"] = end - last["offset"]
        else:
            out.append({"offset": start, "length": end - start, "zero": zero})

    for c in range(chunks_of(n_to)):
        lo, hi = c * EPC, min((c + 1) * EPC, n_to)
        bt = await load_chunk(m.blocker, ht, c)
        bf = await load_chunk(m.blocker, hf, c) if lo < n_from else bytearray(len(bt))
        if hi <= n_from and bt == bf and prefixes_named(ht, bt) == prefixes_named(hf, bf):
            continue  # the same entries naming the same objects (clones extend prefixes)
        nt = _names(ht, bt, 0, hi - lo)
        nf = _names(hf, bf, 0, hi - lo)
        for j in range(hi - lo):
            i = lo + j
            f = nf[j] if i < n_from else None
            if nt[j] != f:
                add(i, nt[j] is None)
    return out


async def map_diff(m: Mapper, frm: str, to: str) -> dict[str, Any]:
    """{"size": size of ``to``, "block_size", "extents": changed extents of ``to``}."""
    hf, ht = await m.live(frm), await m.live(to)
    return {"size": ht.size, "block_size": ht.block_size,
            "extents": await diff_headers(m, hf, ht)}


# -- the rbd diff v1 stream ------------------------------------------------------------

def _name_record(tag: bytes, name: str) -> bytes:
    raw = name.encode()
    return tag + _U32.pack(len(raw)) + raw


def write_diff(out: IO[bytes], size: int, extents: list[dict[str, Any]], read: Any,
               from_snap: str | None = None, to_snap: str | None = None,
               step: int = 4 << 20) -> int:
    """Write a v1 stream; ``read(offset, length)`` gives data of non-zero extents.
    Returns the bytes of data written."""
    out.write(MAGIC)
    if from_snap:
        out.write(_name_record(b"f", from_snap))
    if to_snap:
        out.write(_name_record(b"t", to_snap))
    out.write(b"s" + _U64.pack(size))
    total = 0
    for e in extents:
        if e["zero"]:
            out.write(b"z" + _U64.pack(e["offset"]) + _U64.pack(e["length"]))
            continue
        for off in range(e["offset"], e["offset"] + e["length"], step):
            n = min(step, e["offset"] + e["length"] - off)
            data = read(off, n)
            out.write(b"w" + _U64.pack(off) + _U64.pack(n))
            out.write(data)
            total += n
    out.write(b"e")
    return total


@dataclass
class DiffRecord:
    """One record of a v1 stream: kind f, t, s, w, z."""

    kind: str
    offset: int = 0
    length: int = 0
    name: str = ""
    data: bytes = b""


def read_diff(f: IO[bytes]) -> Iterator[DiffRecord]:
    """Parse a v1 stream (InvalidArgument on anything malformed or truncated)."""

    def need(n: int) -> bytes:
        b = f.read(n)
        if len(b) != n:
            raise InvalidArgument("rbd diff stream is truncated")
        return b

    if f.read(len(MAGIC)) != MAGIC:
        raise InvalidArgument("not an rbd diff v1 stream (bad header)")
    while True:
        tag = need(1)
        if tag == b"e":
            return
        if tag in (b"f", b"t"):
            (n,) = _U32.unpack(need(4))
            if n > 4096:
                raise InvalidArgument("rbd diff stream: snapshot name too long")
            yield DiffRecord(tag.decode(), name=need(n).decode(errors="replace"))
        elif tag == b"s":
            yield DiffRecord("s", length=_U64.unpack(need(8))[0])
        elif tag in (b"w", b"z"):
            off, ln = _U64.unpack(need(8))[0], _U64.unpack(need(8))[0]
            if tag == b"w" and ln > 64 << 20:
                raise InvalidArgument("rbd diff stream: data record over 64 MiB")
            yield DiffRecord(tag.decode(), offset=off, length=ln,
                             data=need(ln) if tag == b"w" else b"")
        else:
            raise InvalidArgument(f"rbd diff stream: unknown record {tag!r}")
