"""What a control-plane plugin is (:class:`Plugin`) and what it is given (:class:`PluginContext`)."""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from aiohttp import web

from archipelago.config import Config
from archipelago.errors import NotFound
from archipelago.instance import Instance

if TYPE_CHECKING:
    from control.host.db import Database
    from control.host.events import EventBus


@dataclass(frozen=True)
class Event:
    """A control-plane event: written to the outbox with the change that caused it."""

    type: str
    payload: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: float = field(default_factory=time.time)


Handler = Callable[[Event], Awaitable[None]]


@dataclass
class PluginContext:
    """What the host hands every plugin: the instance, config, database, events, services."""

    instance: Instance
    config: Config
    db: Database
    events: EventBus
    #: name -> interface object, filled from every enabled plugin's services().
    registry: dict[str, object] = field(default_factory=dict)
    #: A narrow handle on the gateway (pithos_gw.handle.GatewayHandle) in the API server;
    #: None in CLI processes.
    gateway: Any = None
    #: Builds the Keystone serviceCatalog (set by the host).
    catalog_fn: Callable[[str, str | None], list[dict[str, Any]]] | None = None

    def service(self, name: str) -> Any:
        """Another plugin's interface (e.g. ``ctx.service("identity")``); NotFound if absent."""
        try:
            return self.registry[name]
        except KeyError:
            raise NotFound(f"no plugin offers the service {name!r} "
                           "(is its plugin in [control] plugins?)") from None

    def has_service(self, name: str) -> bool:
        """True when an enabled plugin offers ``name``."""
        return name in self.registry

    def catalog(self, base_url: str, user: str | None = None) -> list[dict[str, Any]]:
        """The Keystone v2 serviceCatalog of everything this server runs."""
        return self.catalog_fn(base_url, user) if self.catalog_fn else []


class Plugin:
    """Base class of control-plane plugins; every hook has a do-nothing default."""

    #: The plugin's name: its entry-point name, [control] plugins item and config section.
    name: ClassVar[str] = ""
    #: Plugins that must be enabled with this one.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Dataclass of its [name] config section (also registered in the archipelago.config
    #: entry-point group so the loader knows it); None without a section.
    config: ClassVar[type | None] = None
    #: Its tables (names prefixed with the plugin name), for queries and the migration check.
    tables: ClassVar[sa.MetaData | None] = None
    #: Dotted package holding its Alembic revisions (one branch labelled with its name).
    migrations: ClassVar[str | None] = None

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    @property
    def settings(self) -> Any:
        """This plugin's config section (an instance of ``config``), or None."""
        return getattr(self.ctx.config, self.name, None)

    @classmethod
    def register_cli(cls, subparsers: argparse._SubParsersAction) -> None:
        """Add its `archip` subcommands (called for every installed plugin, enabled or not)."""

    def routes(self) -> dict[str, web.Application]:
        """Mount prefix (e.g. "/identity/v2.0") -> aiohttp sub-app, on the API server."""
        return {}

    def catalog(self, base_url: str, user: str | None) -> list[dict[str, Any]]:
        """Keystone serviceCatalog entries of the APIs it serves (``user``: the caller's uuid)."""
        return []

    def handlers(self) -> dict[str, Handler]:
        """Event type -> async handler (idempotent by event id: delivery is at least once)."""
        return {}

    def services(self) -> dict[str, object]:
        """Interfaces it offers to other plugins and to the host, by name."""
        return {}

    async def open(self) -> None:
        """After migrations, in every process (API server and CLI): idempotent set-up."""

    async def start(self) -> None:
        """In the API server only, after open(): start background tasks."""

    async def stop(self) -> None:
        """In the API server only: stop background tasks."""
