"""The one API server: `python -m control.host.apiserver --data-dir DIR [--listen H:P]`
(what `archip gateway start` and the daemon's gateway child run).

It is the gateway process (pithos_gw.server: listening, run/gateway.json, signals, blocks)
serving one root app: every enabled plugin's sub-apps at their prefixes, then the
gateway's Swift/Pithos+/Plankton paths for everything else. Services named
``gateway.authenticator`` and ``gateway.quota`` (offered by a plugin, e.g. identity) are
injected into the gateway; without them it keeps its own v1 users and charges nothing.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from archipelago.blocker.base import Blocker
from archipelago.config import Config
from archipelago.instance import Instance
from control.host.host import Host
from pithos_gw.app import make_app
from pithos_gw.handle import GatewayHandle
from pithos_gw.server import gateway_config, meta_url
from pithos_gw.server import main as server_main

#: Service names the host injects into the gateway.
AUTHENTICATOR = "gateway.authenticator"
QUOTA = "gateway.quota"
HOST = web.AppKey("control_host", Host)


def gateway_catalog(base: str, user: str | None) -> list[dict[str, Any]]:
    """Catalog entries of the gateway's APIs (object-store URL ends with the user's account)."""
    store = f"{base}/object-store/v1" + (f"/{user}" if user else "")
    return [_entry("pithos_object-store", "object-store", store),
            _entry("pithos_image", "image", f"{base}/image/v1.0")]


def _entry(name: str, kind: str, url: str, version: str = "v1") -> dict[str, Any]:
    return {"name": name, "type": kind, "endpoints_links": [],
            "endpoints": [{"versionId": version, "publicURL": url, "region": "default"}]}


def build(inst: Instance, cfg: Config, blocker: Blocker, host: Host | None = None,
          gateway_db: str | None = None) -> web.Application:
    """The root app over ``blocker``: plugin sub-apps + the gateway, the host's lifecycle."""
    host = host or Host(inst, cfg)
    host.extra_catalog.append(gateway_catalog)
    mounts: dict[str, web.Application] = {}
    for p in host.plugins.values():
        for prefix, sub in p.routes().items():
            mounts[prefix.rstrip("/")] = sub
    reg = host.ctx.registry
    app = make_app(blocker, gateway_db or meta_url(inst, cfg), gateway_config(cfg),
                   authenticator=reg.get(AUTHENTICATOR),  # type: ignore[arg-type]
                   quota=reg.get(QUOTA), mounts=mounts,  # type: ignore[arg-type]
                   pool_size=cfg.database.pool_size)
    app[HOST] = host
    host.ctx.gateway = GatewayHandle(app)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        # First of all contexts: the gateway's reconcile needs the migrated database.
        await host.open()
        try:
            await host.start()
            yield
        finally:
            await host.close()

    app.cleanup_ctx.insert(0, lifecycle)
    return app


def main(argv: list[str] | None = None) -> int:
    """Entry point of the API server process."""
    return server_main(argv, factory=build, prog="control.host.apiserver")


if __name__ == "__main__":
    sys.exit(main())
