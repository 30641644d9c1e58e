"""Ganeti ExtStorage provider "archipelago": the scripts and what each one does.

``archip extstorage install DIR`` writes DIR/{create,attach,detach,remove,grow,setinfo,
verify,snapshot,open,close} (each ``exec``s ``python -m control.compute.extstorage
ACTION`` with the instance's data dir baked in: Ganeti cleans the environment) and
DIR/parameters.list. Inputs come only from the environment Ganeti sets (VOL_NAME,
VOL_SIZE and VOL_NEW_SIZE in MiB, VOL_SNAPSHOT_NAME, EXTP_ORIGIN, ...). Exit 0 is
success; any error prints one ``archip extstorage: error: ...`` line on stderr and exits
with its class's exit code. attach, detach and remove are idempotent; attach prints an
empty first line (no kernel block device: there is no kernel NBD here) and then the
``kvm:nbd+unix:///VOL?socket=...`` URI qemu opens (Ganeti <= 3.0 userspace access).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from archipelago.client import Client
from archipelago.errors import ArchipelagoError, InvalidArgument, NotFound
from archipelago.instance import Instance

ACTIONS = ("create", "attach", "detach", "remove", "grow", "setinfo", "verify", "snapshot",
           "open", "close")
#: `name description` lines of parameters.list (Ganeti passes them as EXTP_<NAME>).
PARAMETERS = {
    "origin": "snapshot, content-addressed map (Merkle root) or Plankton image id to thin-clone",
    "origin_size": "size in bytes of the origin (checked, optional)",
}
MiB = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def install(directory: Path, instance: Instance, config_file: str | None = None) -> list[Path]:
    """Write the provider's scripts into ``directory``; the paths written."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    env = [f"ARCHIPELAGO_DATA_DIR={shlex.quote(str(instance.data_dir))}"]
    if config_file:
        env.append(f"ARCHIPELAGO_CONFIG={shlex.quote(str(Path(config_file).resolve()))}")
    written = []
    for action in ACTIONS:
        p = directory / action
        p.write_text("#!/bin/sh\n# Ganeti ExtStorage provider archipelago "
                     "(written by `archip extstorage install`)\n"
                     f"export {' '.join(env)}\n"
                     f"exec {shlex.quote(sys.executable)} -m control.compute.extstorage {action}\n")
        p.chmod(0o755)
        written.append(p)
    p = directory / "parameters.list"
    p.write_text("".join(f"{k} {v}\n" for k, v in PARAMETERS.items()))
    p.chmod(0o644)
    written.append(p)
    return written


def _need(env: Mapping[str, str], key: str) -> str:
    v = env.get(key, "")
    if not v:
        raise InvalidArgument(f"{key} is not set")
    return v


def _mib(env: Mapping[str, str], key: str) -> int:
    v = _need(env, key)
    if not v.isdigit() or int(v) <= 0:
        raise InvalidArgument(f"{key}={v!r} is not a size in MiB")
    return int(v) * MiB


def _image_map(inst: Instance, origin: str) -> tuple[list[str], int] | None:
    """(hashes, bytes) of the Plankton image whose id or checksum is ``origin``, else None."""
    from pithos_gw.meta import MetaStore
    from pithos_gw.plankton import image_hashmap
    from pithos_gw.server import has_meta, meta_url

    if not has_meta(inst):
        return None

    async def lookup() -> tuple[list[str], int] | None:
        meta = MetaStore(meta_url(inst))
        try:
            ids = [origin]
            if _HEX64.match(origin):
                ids += [i["id"] for i in await meta.image_list() if i.get("checksum") == origin]
            for image_id in ids:
                try:
                    return await image_hashmap(meta, image_id)
                except NotFound:
                    continue
            return None
        finally:
            await meta.close()

    return asyncio.run(lookup())


def create(c: Client, inst: Instance, env: Mapping[str, str]) -> str:
    """New volume of VOL_SIZE MiB; with EXTP_ORIGIN a thin clone (no block copied)."""
    name, size = _need(env, "VOL_NAME"), _mib(env, "VOL_SIZE")
    origin = env.get("EXTP_ORIGIN", "")
    if not origin:
        c.create(name, size)
        return ""
    try:
        src = c.info(origin)
    except (NotFound, InvalidArgument):
        src = None
    if src is not None:
        if not src.readonly:
            raise InvalidArgument(f"origin {origin!r} is a writable volume: snapshot it first")
        c.clone(origin, name, size)
        return ""
    found = _image_map(inst, origin)
    if found is None:
        raise NotFound(f"origin {origin!r} is no snapshot, map or image")
    hashes, nbytes = found
    if env.get("EXTP_ORIGIN_SIZE", "").isdigit() and int(env["EXTP_ORIGIN_SIZE"]) != nbytes:
        raise InvalidArgument(f"EXTP_ORIGIN_SIZE={env['EXTP_ORIGIN_SIZE']} but the origin has "
                              f"{nbytes} bytes")
    if size < nbytes:
        raise InvalidArgument(f"VOL_SIZE ({size >> 20} MiB) is smaller than origin {origin!r} "
                              f"({nbytes} bytes)")
    c.clone_hashmap(name, hashes, nbytes, size=size)
    return ""


def attach(c: Client, inst: Instance, env: Mapping[str, str]) -> str:
    """No block device (empty line), then the kvm: NBD URI of the volume."""
    name = _need(env, "VOL_NAME")
    c.info(name)
    sock = inst.config().nbd.socket
    return f"\nkvm:nbd+unix:///{name}?socket={sock}"


def remove(c: Client, inst: Instance, env: Mapping[str, str]) -> str:
    """Remove the volume; an absent one is already removed."""
    try:
        c.remove(_need(env, "VOL_NAME"))
    except NotFound:
        pass
    return ""


def grow(c: Client, inst: Instance, env: Mapping[str, str]) -> str:
    """Resize to VOL_NEW_SIZE MiB (never smaller)."""
    name, new = _need(env, "VOL_NAME"), _mib(env, "VOL_NEW_SIZE")
    if new < c.info(name).size:
        raise InvalidArgument(f"VOL_NEW_SIZE ({new >> 20} MiB) would shrink {name!r}")
    c.resize(name, new)
    return ""


def snapshot(c: Client, inst: Instance, env: Mapping[str, str]) -> str:
    """Read-only snapshot VOL_SNAPSHOT_NAME of the volume (no data copied)."""
    c.snapshot(_need(env, "VOL_NAME"), _need(env, "VOL_SNAPSHOT_NAME"))
    return ""


def verify(c: Client, inst: Instance, env: Mapping[str, str]) -> str:
    """Only the parameters of parameters.list are known."""
    unknown = sorted(k for k in env if k.startswith("EXTP_") and k[5:].lower() not in PARAMETERS)
    if unknown:
        raise InvalidArgument(f"unknown ExtStorage parameter(s): {', '.join(unknown)}")
    return ""


def _noop(c: Client, inst: Instance, env: Mapping[str, str]) -> str:
    return ""


HANDLERS: dict[str, Callable[[Client, Instance, Mapping[str, str]], str]] = {
    "create": create, "attach": attach, "remove": remove, "grow": grow,
    "snapshot": snapshot, "verify": verify,
    # detach: qemu closes its NBD connection itself; setinfo/open/close need no state
    "detach": _noop, "setinfo": _noop, "open": _noop, "close": _noop,
}


def run(action: str, env: Mapping[str, str]) -> str:
    """Do ``action`` with Ganeti's environment; its stdout."""
    if action not in HANDLERS:
        raise InvalidArgument(f"unknown ExtStorage action {action!r}")
    inst = Instance.from_args(None, dict(env))
    if action in ("detach", "setinfo", "open", "close"):
        return ""
    with Client.connect(inst) as c:
        return HANDLERS[action](c, inst, env)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the scripts: ``python -m control.compute.extstorage ACTION``."""
    args = sys.argv[1:] if argv is None else argv
    try:
        out = run(args[0] if args else "", os.environ)
    except ArchipelagoError as e:
        print(f"archip extstorage: error: {e.message}", file=sys.stderr)
        return e.exit_code
    if out:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
