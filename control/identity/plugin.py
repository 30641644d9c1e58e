"""The identity plugin: wires IdentityService into the host (routes, catalog, services,
gateway hooks, CLI) and purges expired tokens in the background."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from aiohttp import web

from control.host.plugin import Plugin, PluginContext
from control.identity import api_account, api_tokens
from control.identity.config import IdentityConfig
from control.identity.service import GatewayAuth, GatewayQuota, IdentityService
from control.identity.tables import metadata

log = logging.getLogger("control.identity")
#: Seconds between purges of expired tokens.
PURGE_EVERY = 3600.0


class IdentityPlugin(Plugin):
    """Astakos: users, tokens, projects, quotas, commissions."""

    name = "identity"
    config = IdentityConfig
    tables = metadata
    migrations = "control.identity.versions"

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        self.service = IdentityService(ctx, self.settings or IdentityConfig())
        self._purge: asyncio.Task[None] | None = None

    @classmethod
    def register_cli(cls, subparsers: argparse._SubParsersAction) -> None:
        """`archip user|project|quota`."""
        from control.identity import cli

        cli.register(subparsers)

    def routes(self) -> dict[str, web.Application]:
        """/identity/v2.0 and /account/v1.0."""
        return {"/identity/v2.0": api_tokens.routes(self.service),
                "/account/v1.0": api_account.routes(self.service)}

    def catalog(self, base_url: str, user: str | None) -> list[dict[str, Any]]:
        """identity and account entries."""
        def entry(name: str, kind: str, url: str, version: str) -> dict[str, Any]:
            return {"name": name, "type": kind, "endpoints_links": [], "endpoints": [
                {"versionId": version, "publicURL": url, "region": "default"}]}

        return [entry("astakos_identity", "identity", f"{base_url}/identity/v2.0", "v2.0"),
                entry("astakos_account", "account", f"{base_url}/account/v1.0", "v1.0")]

    def services(self) -> dict[str, object]:
        """identity, and the gateway's authenticator and quota charger."""
        return {"identity": self.service,
                "gateway.authenticator": GatewayAuth(self.service),
                "gateway.quota": GatewayQuota(self.service)}

    async def open(self) -> None:
        """Resources and the first admin."""
        await self.service.open()

    async def start(self) -> None:
        """Purge expired tokens now and then; the hot path on its own SQLite thread."""
        self.service.hot.start()
        self._purge = asyncio.create_task(self._purge_loop())

    async def _purge_loop(self) -> None:
        while True:
            try:
                n = await self.service.purge_tokens()
                if n:
                    log.info("purged %d expired tokens", n)
            except Exception:  # noqa: BLE001 -- retried next round
                log.exception("token purge failed")
            await asyncio.sleep(PURGE_EVERY)

    async def stop(self) -> None:
        """Stop the purge task and the hot path's thread."""
        if self._purge is not None:
            self._purge.cancel()
            await asyncio.gather(self._purge, return_exceptions=True)
        await self.service.hot.stop()
