"""Run the gateway as a process: `python -m pithos_gw.server --data-dir DIR [--listen H:P]`.

Serves over the instance's configured blocker directly (the peer proxy comes later),
with metadata in DATA_DIR/gateway.db. Writes run/gateway.json ({"url", "pid"}) once
listening and removes it on exit; SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from archipelago.blocker import open_blocker
from archipelago.errors import ArchipelagoError, InvalidArgument
from archipelago.instance import Instance
from pithos_gw.app import make_app
from pithos_gw.common import GatewayConfig


def db_path(inst: Instance) -> Path:
    """The gateway's SQLite metadata file of an instance."""
    return inst.data_dir / "gateway.db"


def state_path(inst: Instance) -> Path:
    """run/gateway.json: URL and pid of the running gateway."""
    return inst.run_dir / "gateway.json"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT on a loopback address only (the gateway is never exposed directly)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidArgument(f"--listen wants HOST:PORT, got {text!r}")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidArgument(f"the gateway binds loopback addresses only, not {host!r}")
    return host, int(port)


async def serve(inst: Instance, listen: str, config_file: str | None = None,
                overrides: list[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    cfg = inst.config(config_file, overrides or [])
    host, port = parse_listen(listen or cfg.gateway.listen)
    blocker = open_blocker(cfg)
    app = make_app(blocker, db_path(inst), GatewayConfig(etag=cfg.gateway.etag))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        state = {"url": f"http://{shown}:{bound}", "pid": os.getpid(),
                 "data_dir": str(inst.data_dir)}
        tmp = state_path(inst).with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(state_path(inst))
        inst.gateway_pid.write_text(f"{os.getpid()}\n")
        logging.getLogger("pithos_gw").info("gateway listening on %s", state["url"])
        await stop.wait()
    finally:
        state_path(inst).unlink(missing_ok=True)
        inst.gateway_pid.unlink(missing_ok=True)
        await runner.cleanup()
        await blocker.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the gateway process."""
    p = argparse.ArgumentParser(prog="pithos_gw.server")
    p.add_argument("--data-dir")
    p.add_argument("--listen", default="")
    p.add_argument("--config")
    p.add_argument("-o", "--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.umask(0o077)
    inst = Instance.from_args(args.data_dir).ensure()
    try:
        uvloop.run(serve(inst, args.listen, args.config, args.overrides))
    except ArchipelagoError as e:
        print(f"gateway: error: {e.message}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
