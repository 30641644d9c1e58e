"""Run the gateway as a process: `python -m pithos_gw.server --data-dir DIR [--listen H:P]`.

Blocks: through the daemon's blocker peers when a daemon serves the instance (the
daemon runs the gateway as its child with ``--gateway``), else over the instance's
configured blocker opened directly (``--blocks direct|peers`` forces one); metadata
in [database] url, by default DATA_DIR/gateway.db. Writes run/gateway.json ({"url", "pid"}) once
listening and removes it on exit; SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from archipelago.blocker import open_blocker
from archipelago.blocker.base import Blocker
from archipelago.errors import ArchipelagoError, Busy, ConfigError, InvalidArgument
from archipelago.instance import Instance
from pithos_gw.app import make_app, make_runner
from pithos_gw.common import GatewayConfig


def db_path(inst: Instance) -> Path:
    """The gateway's SQLite metadata file of an instance (the embedded default)."""
    return inst.data_dir / "gateway.db"


def meta_url(inst: Instance, cfg: Any = None) -> str:
    """The gateway's metadata database: [database] url, else DATA_DIR/gateway.db
    (``cfg`` None: the instance's own config file)."""
    from archipelago.config import database_url, load
    from archipelago.db import sqlite_url

    cfg = load(inst.data_dir) if cfg is None else cfg
    return database_url(cfg) or sqlite_url(db_path(inst))


def has_meta(inst: Instance, cfg: Any = None) -> bool:
    """False only when the metadata is the default SQLite file and it does not exist yet."""
    return meta_url(inst, cfg) != _default_url(inst) or db_path(inst).exists()


async def meta_upgrade(url: str) -> dict[str, Any]:
    """Migrate the gateway's metadata at ``url`` (`archip db upgrade`); its status after."""
    from pithos_gw import meta_schema
    from pithos_gw.meta import MetaStore

    meta = MetaStore(url, pool_size=1)
    try:
        await meta.open()
        return await meta_schema.status(meta.db)
    finally:
        await meta.close()


async def meta_status(url: str) -> dict[str, Any]:
    """{"current", "head"} revisions of the gateway's metadata at ``url``."""
    from archipelago.db import Database
    from pithos_gw import meta_schema

    db = Database(url, "gateway's metadata database", 1)
    try:
        return await meta_schema.status(db)
    finally:
        await db.close()


async def meta_schema_upgrade(db: Any) -> None:
    """Create or migrate the gateway's tables in an open archipelago.db Database."""
    from pithos_gw import meta_schema

    await meta_schema.upgrade(db)


def _default_url(inst: Instance) -> str:
    from archipelago.db import sqlite_url

    return sqlite_url(db_path(inst))


def state_path(inst: Instance) -> Path:
    """run/gateway.json: URL and pid of the running gateway."""
    return inst.run_dir / "gateway.json"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT on a loopback address only (the gateway is never exposed directly)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise InvalidArgument(f"--listen wants HOST:PORT, got {text!r}")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidArgument(f"the gateway binds loopback addresses only, not {host!r}")
    return host, int(port)


def gateway_config(cfg: Any) -> GatewayConfig:
    """The app's settings from the [gateway] section (the keys both define)."""
    keys = {f.name for f in dataclasses.fields(GatewayConfig)}
    out = GatewayConfig(**{k: v for k, v in dataclasses.asdict(cfg.gateway).items()
                           if k in keys})
    if not out.client_timeout > 0:
        raise ConfigError("gateway.client_timeout must be a positive number of seconds")
    return out


async def open_blocks(inst: Instance, cfg: Any, mode: str = "auto") -> Blocker:
    """The gateway's blocks: the daemon's blocker peers ("peers"), the blocker opened
    here ("direct"), or "auto": peers when a daemon serves the instance."""
    if mode not in ("auto", "direct", "peers"):
        raise InvalidArgument(f"--blocks wants auto, direct or peers, not {mode!r}")
    if mode == "auto":

        mode = "peers" if inst.daemon_running() else "direct"
    if mode == "peers":
        from pithos_gw.peer_blocks import PeerBlocks

        return await PeerBlocks.open(inst)
    return open_blocker(cfg)


#: Builds the served app from the instance, its config and the opened blocker.
AppFactory = Callable[[Instance, Any, Blocker], web.Application]


def gateway_app(inst: Instance, cfg: Any, blocker: Blocker) -> web.Application:
    """The plain gateway (its own v1 users, no quotas, no control plane)."""
    return make_app(blocker, meta_url(inst, cfg), gateway_config(cfg),
                    pool_size=cfg.database.pool_size)


async def serve(inst: Instance, listen: str, config_file: str | None = None,
                overrides: list[str] | None = None, blocks: str = "auto",
                factory: AppFactory = gateway_app) -> None:
    """Serve until SIGTERM/SIGINT."""
    cfg = inst.config(config_file, overrides or [])
    host, port = parse_listen(listen or cfg.gateway.listen)
    blocker = await open_blocks(inst, cfg, blocks)
    try:
        app = factory(inst, cfg, blocker)
        runner = make_runner(app, access_log=None)
        await runner.setup()
    except BaseException:
        await blocker.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as e:  # one line for the user, not uvloop's traceback
            in_use = e.errno == errno.EADDRINUSE
            why = "address already in use" if in_use else (e.strerror or str(e))
            raise (Busy if in_use else ConfigError)(
                f"cannot listen on {host}:{port}: {why} "
                f"(choose another with --listen or [gateway] listen)") from None
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        state = {"url": f"http://{shown}:{bound}", "pid": os.getpid(),
                 "data_dir": str(inst.data_dir), "blocks": blocker.kind}
        tmp = state_path(inst).with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(state_path(inst))
        inst.gateway_pid.write_text(f"{os.getpid()}\n")
        logging.getLogger("pithos_gw").info("gateway listening on %s (blocks: %s)",
                                            state["url"], blocker.kind)
        await stop.wait()
    finally:
        state_path(inst).unlink(missing_ok=True)
        inst.gateway_pid.unlink(missing_ok=True)
        await runner.cleanup()
        await blocker.close()


def main(argv: list[str] | None = None, factory: AppFactory = gateway_app,
         prog: str = "pithos_gw.server") -> int:
    """Entry point of the gateway process (``factory`` builds the served app)."""
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--data-dir")
    p.add_argument("--listen", default="")
    p.add_argument("--config")
    p.add_argument("-o", "--set", dest="overrides", action="append", default=[])
    p.add_argument("--blocks", default="auto", choices=("auto", "direct", "peers"),
                   help="blocks through the daemon's peers or the blocker directly")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.umask(0o077)
    inst = Instance.from_args(args.data_dir).ensure()
    try:
        uvloop.run(serve(inst, args.listen, args.config, args.overrides, args.blocks, factory))
    except ArchipelagoError as e:
        print(f"gateway: error: {e.message}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
