"""The compute plugin (Cyclades): flavors, servers as qemu processes on archipelago volumes
over NBD, the /compute/v2.0 API and the `archip flavor|server|image upload` commands."""

from __future__ import annotations

import argparse
import logging
from typing import Any, ClassVar

from aiohttp import web

from control.compute import tables
from control.compute.config import ComputeConfig
from control.compute.service import ComputeService
from control.host.plugin import Plugin, PluginContext

log = logging.getLogger("control.compute")


class ComputePlugin(Plugin):
    """Plugin "compute"."""

    name: ClassVar[str] = "compute"
    requires: ClassVar[tuple[str, ...]] = ("identity",)
    config: ClassVar[type | None] = ComputeConfig
    tables = tables.metadata
    migrations: ClassVar[str | None] = "control.compute.versions"

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        self.service = ComputeService(ctx, self.settings or ComputeConfig())

    @classmethod
    def register_cli(cls, subparsers: argparse._SubParsersAction) -> None:
        """`archip flavor ...`, `archip server ...`, `archip image upload ...`."""
        from control.compute import cli

        cli.register(subparsers)

    def routes(self) -> dict[str, web.Application]:
        """/compute/v2.0."""
        from control.compute.api import make_app

        return {"/compute/v2.0": make_app(self.service)}

    def catalog(self, base_url: str, user: str | None) -> list[dict[str, Any]]:
        """The compute endpoint."""
        return [{"name": "cyclades_compute", "type": "compute", "endpoints_links": [],
                 "endpoints": [{"versionId": "v2.0", "publicURL": f"{base_url}/compute/v2.0",
                                "region": "default"}]}]

    def services(self) -> dict[str, object]:
        """compute: the service object (the web UI plugin lists and drives servers with it)."""
        return {"compute": self.service}

    async def open(self) -> None:
        """Declare the cyclades.* quota resources to identity (idempotent)."""
        from control.compute.quota import register

        await register(self.ctx.service("identity"))

    async def start(self) -> None:
        """Re-adopt the qemu processes of servers that ran before this API server started."""
        await self.service.restore()

    async def stop(self) -> None:
        """Stop watching (the VMs keep running, as libvirt guests do)."""
        await self.service.close()
