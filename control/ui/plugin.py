"""The `ui` plugin: mounts the web UI sub-app at /ui and owns its HTTP client."""

from __future__ import annotations

import argparse
from typing import Any, ClassVar

from aiohttp import web

from control.host.plugin import Plugin, PluginContext
from control.ui.config import UiConfig


class UiPlugin(Plugin):
    """Plugin "ui": pages for identity, files, images, and (when enabled) compute and billing."""

    name: ClassVar[str] = "ui"
    requires: ClassVar[tuple[str, ...]] = ("identity",)
    config: ClassVar[type | None] = UiConfig

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        from control.ui.backend import Backend

        self.backend = Backend(ctx, self.settings or UiConfig())

    @classmethod
    def register_cli(cls, subparsers: argparse._SubParsersAction) -> None:
        """No commands: the UI is served by the API server (`archip gateway start`)."""

    def routes(self) -> dict[str, web.Application]:
        """/ui."""
        from control.ui.app import make_app

        return {"/ui": make_app(self.backend)}

    def catalog(self, base_url: str, user: str | None) -> list[dict[str, Any]]:
        """One "ui" entry (where people log in with a browser)."""
        return [{"name": "archipelago_ui", "type": "ui", "endpoints_links": [],
                 "endpoints": [{"versionId": "v1", "publicURL": f"{base_url}/ui/",
                                "region": "default"}]}]

    async def stop(self) -> None:
        """Close the UI's HTTP client."""
        await self.backend.close()
