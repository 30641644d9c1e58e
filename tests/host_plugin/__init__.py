"""A small control-plane plugin for the host's tests: a table with a migration, a sub-app,
an event handler, a service and a CLI command (the shape docs/control-api.md describes)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from archipelago.config import doc
from archipelago.errors import NotFound
from control.host.plugin import Event, Plugin
from control.host.webapi import make_subapp, read_json

metadata = sa.MetaData()
notes = sa.Table(
    "echo_notes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("text", sa.String(200), nullable=False),
)
seen = sa.Table(
    "echo_seen", metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
)


@dataclass
class EchoConfig:
    """[echo]: the test plugin."""

    greeting: str = field(default="hello", metadata=doc("what GET /echo/v1 says"))


class EchoService:
    """The interface the plugin offers (ctx.service("echo"))."""

    def __init__(self, plugin: EchoPlugin) -> None:
        self.plugin = plugin

    async def add(self, text: str, fail: bool = False) -> int:
        """Store a note and emit echo.noted in the same transaction."""
        async with self.plugin.ctx.db.begin() as conn:
            r = await conn.execute(notes.insert().values(text=text))
            nid = int(r.inserted_primary_key[0])
            await self.plugin.ctx.events.emit(conn, Event("echo.noted", {"id": nid, "text": text}))
            if fail:
                raise RuntimeError("rolled back after emit")
        return nid

    async def get(self, nid: int) -> str:
        """A note's text; NotFound when absent."""
        async with self.plugin.ctx.db.read() as conn:
            text = (await conn.execute(sa.select(notes.c.text).where(notes.c.id == nid))
                    ).scalar_one_or_none()
        if text is None:
            raise NotFound(f"note {nid} not found")
        return str(text)


class EchoPlugin(Plugin):
    """Notes over HTTP; counts echo.noted events it handled (idempotent by event id)."""

    name = "echo"
    config = EchoConfig
    tables = metadata
    migrations = "host_plugin.versions"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.service = EchoService(self)
        self.handled: list[str] = []
        self.fail_handler = False
        self.started = False

    @classmethod
    def register_cli(cls, subparsers: argparse._SubParsersAction) -> None:
        """`archip echo NOTE`."""
        p = subparsers.add_parser("echo", help="test plugin")
        p.add_argument("note")

    def routes(self) -> dict[str, web.Application]:
        """/echo/v1."""
        app = make_subapp()

        async def hello(request: web.Request) -> web.Response:
            return web.json_response({"greeting": self.settings.greeting})

        async def post(request: web.Request) -> web.Response:
            body = await read_json(request, {})
            if not isinstance(body, dict) or not isinstance(body.get("text"), str):
                raise web.HTTPBadRequest(reason="text required")
            return web.json_response({"id": await self.service.add(body["text"])}, status=201)

        async def get(request: web.Request) -> web.Response:
            return web.json_response({"text": await self.service.get(int(request.match_info["n"]))})

        app.router.add_get("", hello)
        app.router.add_post("/notes", post)
        app.router.add_get("/notes/{n:[0-9]+}", get)
        return {"/echo/v1": app}

    def catalog(self, base_url: str, user: str | None) -> list[dict[str, Any]]:
        """An "echo" entry."""
        return [{"name": "echo", "type": "echo", "endpoints_links": [], "endpoints": [
            {"versionId": "v1", "publicURL": f"{base_url}/echo/v1", "region": "default"}]}]

    def handlers(self) -> dict[str, Any]:
        """echo.noted."""
        return {"echo.noted": self.on_noted}

    async def on_noted(self, ev: Event) -> None:
        """Record the event once (a redelivery is recognised by its id)."""
        if self.fail_handler:
            raise RuntimeError("handler down")
        async with self.ctx.db.begin() as conn:
            dup = (await conn.execute(sa.select(seen.c.event_id)
                                      .where(seen.c.event_id == ev.id))).first()
            if dup is None:
                await conn.execute(seen.insert().values(event_id=ev.id))
                self.handled.append(ev.id)

    def services(self) -> dict[str, object]:
        """echo."""
        return {"echo": self.service}

    async def start(self) -> None:
        """Mark started."""
        self.started = True

    async def stop(self) -> None:
        """Mark stopped."""
        self.started = False
