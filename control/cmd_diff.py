"""`archip export-diff` / `archip import-diff`: changed blocks between snapshots as Ceph's
"rbd diff v1" stream (archipelago/upkeep/diff.py), interchangeable with `rbd export-diff`
and `rbd import-diff`. (`archip volume diff FROM TO` lists the extents.)"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import IO, Any

from archipelago.errors import InvalidArgument, NotFound
from archipelago.upkeep.diff import read_diff, write_diff
from control.context import print_json, wants_json
from control.volume_fmt import connect


@contextlib.contextmanager
def _stream(path: str, mode: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdout.buffer if "w" in mode else sys.stdin.buffer
        return
    try:
        f = open(path, mode)  # noqa: SIM115 -- closed below
    except OSError as e:
        raise InvalidArgument(f"{path}: {e.strerror}") from None
    with f:
        yield f


def diff_extents(c: Any, frm: str, to: str) -> dict[str, Any]:
    """The mapper's answer: size, block size and changed extents of ``to``."""
    return c.ctrl("diff", frm=frm, to=to)


def _export(a: argparse.Namespace) -> int:
    vol, _, snap = a.image.partition("@")
    to = snap or vol
    with connect(a) as c:
        d = diff_extents(c, a.from_snap, to)
        h = c.open(to)
        try:
            with _stream(a.file, "wb") as out:
                n = write_diff(out, d["size"], d["extents"], lambda o, ln: bytes(h.read(o, ln)),
                               from_snap=a.from_snap, to_snap=snap or None)
        finally:
            h.close()
    doc = {"image": a.image, "from_snap": a.from_snap, "extents": len(d["extents"]),
           "data_bytes": n}
    if a.file != "-":
        if wants_json(a):
            print_json(doc)
        else:
            print(f"exported {len(d['extents'])} changed extents ({n} data bytes) of {to!r} "
                  f"since {a.from_snap!r} to {a.file}")
    return 0


def _import(a: argparse.Namespace) -> int:
    written = zeroed = 0
    to_snap = None
    with connect(a) as c, _stream(a.file, "rb") as f:
        records = read_diff(f)
        h = c.open(a.volume)
        try:
            for r in records:
                if r.kind == "f":
                    try:
                        c.info(r.name)
                    except NotFound:
                        raise NotFound(f"start snapshot {r.name!r} of the diff not found") from None
                elif r.kind == "t":
                    to_snap = r.name
                elif r.kind == "s" and r.length != h.size:
                    c.resize(a.volume, r.length)
                    h.close()
                    h = c.open(a.volume)
                elif r.kind == "w":
                    h.write(r.offset, r.data)
                    written += r.length
                elif r.kind == "z":
                    h.zero(r.offset, r.length)
                    zeroed += r.length
            h.flush()
        finally:
            h.close()
        if to_snap:
            c.snapshot(a.volume, to_snap)
    if wants_json(a):
        print_json({"volume": a.volume, "written": written, "zeroed": zeroed, "snapshot": to_snap})
    else:
        print(f"applied diff to {a.volume!r}: {written} bytes written, {zeroed} zeroed"
              + (f", snapshot {to_snap!r} created" if to_snap else ""))
    return 0


def volume_diff(a: argparse.Namespace) -> int:
    """`archip volume diff FROM TO`: changed extents from the maps alone."""
    with connect(a) as c:
        d = diff_extents(c, a.frm, a.to)
    if wants_json(a):
        print_json(d)
    else:
        for e in d["extents"]:
            print(f"{e['offset']:>16} {e['length']:>12} {'zero' if e['zero'] else 'data'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `export-diff` and `import-diff`."""
    p = subparsers.add_parser("export-diff", help="changed blocks since a snapshot, as an "
                              "rbd diff v1 stream (rbd import-diff reads it)")
    p.add_argument("image", metavar="VOL[@SNAP]")
    p.add_argument("--from-snap", required=True, metavar="S", help="the older snapshot")
    p.add_argument("file", metavar="FILE", help="output file ('-': stdout)")
    p.set_defaults(func=_export)
    p = subparsers.add_parser("import-diff", help="apply an rbd diff v1 stream to a volume "
                              "(rbd export-diff writes one)")
    p.add_argument("file", metavar="FILE", help="input file ('-': stdin)")
    p.add_argument("volume", metavar="VOL")
    p.set_defaults(func=_import)
