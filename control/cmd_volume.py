"""`archip volume ...`: create, list, info, remove, resize, snapshot, clone, rename, hash, lock."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from archipelago.client import Client
from archipelago.errors import InvalidArgument, NotFound
from archipelago.wire import VolumeInfo
from control.context import get_config, print_json, wants_json
from control.volume_fmt import connect, human, info_table, info_text, parse_size


def _run(args: argparse.Namespace, fn: Callable[[Client], Any]) -> Any:
    with connect(args) as c:
        return fn(c)


def _show(args: argparse.Namespace, info: VolumeInfo, verb: str) -> int:
    if wants_json(args):
        print_json(info.to_dict())
    else:
        print(f"{verb} {info.kind} {info.name!r} ({human(info.size)})")
    return 0


def _done(args: argparse.Namespace, doc: dict[str, Any], text: str) -> int:
    if wants_json(args):
        print_json(doc)
    else:
        print(text)
    return 0


def _create(a: argparse.Namespace) -> int:
    if a.from_image:
        return _create_from_image(a)
    if a.size is None:
        raise InvalidArgument("volume create needs --size (or --from-image ID)")
    size, bs = parse_size(a.size), parse_size(a.block_size)
    return _show(a, _run(a, lambda c: c.create(a.name, size, bs)), "created")


def _create_from_image(a: argparse.Namespace) -> int:
    """Thin clone of a gateway image's map: no block is copied."""
    from pithos_gw.plankton import volume_from_image

    size = parse_size(a.size) if a.size is not None else None
    cfg = get_config(a)
    info = _run(a, lambda c: volume_from_image(c, a.from_image, a.name, size, cfg))
    return _show(a, info, f"created from image {a.from_image}")


def _list(a: argparse.Namespace) -> int:
    infos = _run(a, lambda c: c.list())
    if wants_json(a):
        print_json([i.to_dict() for i in infos])
    else:
        print(info_table(infos) if infos else "no volumes")
    return 0


def _info(a: argparse.Namespace) -> int:
    info = _run(a, lambda c: c.info(a.name))
    if wants_json(a):
        print_json(info.to_dict())
    else:
        print(info_text(info))
    return 0


def _remove(a: argparse.Namespace) -> int:
    _run(a, lambda c: c.remove(a.name))
    return _done(a, {"removed": a.name}, f"removed {a.name!r}")


def _resize(a: argparse.Namespace) -> int:
    size = parse_size(a.size)
    return _show(a, _run(a, lambda c: c.resize(a.name, size)), "resized")


def _snapshot(a: argparse.Namespace) -> int:
    return _show(a, _run(a, lambda c: c.snapshot(a.volume, a.snap)), "created")


def _clone(a: argparse.Namespace) -> int:
    size = parse_size(a.size) if a.size else None
    return _show(a, _run(a, lambda c: c.clone(a.snap, a.new, size)), "created")


def _rename(a: argparse.Namespace) -> int:
    return _show(a, _run(a, lambda c: c.rename(a.old, a.new)), "renamed to")


def _hash(a: argparse.Namespace) -> int:
    return _show(a, _run(a, lambda c: c.hash(a.snap)), "content-addressed")


def _lock(a: argparse.Namespace) -> int:
    _run(a, lambda c: c.lock(a.name))
    return _done(a, {"locked": a.name}, f"locked {a.name!r} (held by the daemon until unlock)")


def _unlock(a: argparse.Namespace) -> int:
    def go(c: Client) -> None:
        # Unlocking a name that is no volume is a typo; --force still clears a leftover lock.
        try:
            c.info(a.name)
        except NotFound:
            if not a.force:
                raise
        c.unlock(a.name, force=a.force)

    _run(a, go)
    return _done(a, {"unlocked": a.name, "forced": a.force}, f"unlocked {a.name!r}")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `archip volume`."""
    p = subparsers.add_parser("volume", help="manage volumes (VM disks), snapshots, clones")
    sub = p.add_subparsers(title="volume commands", metavar="ACTION")

    def cmd(name: str, fn: Callable[[argparse.Namespace], int], help_: str,
            *pos: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help_)
        for x in pos:
            s.add_argument(x)
        s.set_defaults(func=fn)
        return s

    s = cmd("create", _create, "create an empty volume", "name")
    s.add_argument("--size", default=None,
                   help="size (e.g. 10G); with --from-image at least the image's (default)")
    s.add_argument("--block-size", default="4M", help="map block size, 64K..4M (default 4M)")
    s.add_argument("--from-image", metavar="ID", default=None,
                   help="thin clone of a gateway (Plankton) image: no block is copied")
    cmd("list", _list, "list volumes and snapshots")
    cmd("info", _info, "describe a volume", "name")
    cmd("remove", _remove, "remove a volume or snapshot", "name")
    s = cmd("resize", _resize, "grow or shrink a volume", "name")
    s.add_argument("--size", required=True, help="new size (e.g. 20G)")
    cmd("snapshot", _snapshot, "read-only snapshot of a volume", "volume", "snap")
    s = cmd("clone", _clone, "writable clone of a snapshot", "snap", "new")
    s.add_argument("--size", default=None, help="size (at least the snapshot's)")
    cmd("rename", _rename, "rename a volume that is not open", "old", "new")
    cmd("hash", _hash, "content-addressed copy of a snapshot, named by its Merkle root", "snap")
    cmd("lock", _lock, "take the volume's lock for the daemon", "name")
    from control.cmd_diff import volume_diff

    cmd("diff", volume_diff, "extents that differ between two maps (from the maps alone)",
        "frm", "to")
    s = cmd("unlock", _unlock, "release the volume's lock", "name")
    s.add_argument("--force", action="store_true", help="break a lock held by another owner")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
