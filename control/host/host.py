"""The host: builds the enabled plugins over one Database and EventBus, runs their
migrations, wires their services, handlers and catalog; used by the API server and the CLI."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from archipelago.config import Config, database_url
from archipelago.errors import ConfigError
from archipelago.instance import Instance
from control.host import registry
from control.host.db import Database, url_of
from control.host.events import EventBus
from control.host.migrate import Migrator
from control.host.plugin import Plugin, PluginContext

log = logging.getLogger("control.host")
#: Seconds between redeliveries of undelivered outbox rows in the API server.
REDELIVER_EVERY = 30.0


def _configured_url(config: Config) -> str:
    return database_url(config)


class Host:
    """The enabled plugins of one instance, their database and event bus."""

    def __init__(self, inst: Instance, config: Config, database_url: str | None = None,
                 plugin_classes: list[type[Plugin]] | None = None) -> None:
        self.instance = inst
        self.config = config
        self.db = Database(database_url or url_of(inst, _configured_url(config)),
                           "control database", config.database.pool_size)
        self.events = EventBus(self.db)
        self.ctx = PluginContext(inst, config, self.db, self.events,
                                 catalog_fn=self._catalog)
        self.plugins: dict[str, Plugin] = {}
        # plugin_classes: tests host plugins that are not installed as entry points.
        classes = registry.enabled(config) if plugin_classes is None else plugin_classes
        for cls in classes:
            self.plugins[cls.name] = cls(self.ctx)
        #: Catalog entries of APIs served beside the plugins (the gateway's), set by the server.
        self.extra_catalog: list[Any] = []
        for p in self.plugins.values():
            for name, obj in p.services().items():
                if name in self.ctx.registry:
                    raise ConfigError(f"service {name!r} offered twice (plugin {p.name!r})")
                self.ctx.registry[name] = obj
            for etype, handler in p.handlers().items():
                self.events.subscribe(p.name, etype, handler)
        known = [cls.migrations for cls in [*self._installed_classes(), *classes]
                 if cls.migrations]
        self.migrator = Migrator({p.name: p.migrations for p in self.plugins.values()
                                  if p.migrations}, known)
        self._redeliver: asyncio.Task[None] | None = None
        self._started: list[Plugin] = []

    def _installed_classes(self) -> list[type[Plugin]]:
        out = []
        for name in registry.installed():
            try:
                out.append(registry.load_class(name))
            except Exception as e:  # noqa: BLE001 -- a broken disabled plugin is only logged
                if name in self.plugins:
                    raise
                log.warning("cannot load installed plugin %s: %s", name, e)
        return out

    def plugin(self, name: str) -> Plugin:
        """An enabled plugin by name (ConfigError when it is not enabled)."""
        try:
            return self.plugins[name]
        except KeyError:
            raise ConfigError(f"plugin {name!r} is not enabled: add it to [control] plugins"
                              ) from None

    def _catalog(self, base_url: str, user: str | None) -> list[dict[str, Any]]:
        base = (self.config.control.public_url or base_url).rstrip("/")
        out: list[dict[str, Any]] = []
        for entry in self.extra_catalog:
            out.extend(entry(base, user) if callable(entry) else [entry])
        for p in self.plugins.values():
            out.extend(p.catalog(base, user))
        return out

    async def open(self) -> None:
        """Migrate the database and let every plugin set itself up (every process)."""
        await self.migrator.upgrade(self.db)
        for p in self.plugins.values():
            await p.open()

    async def start(self) -> None:
        """API server only: deliver what a crash left in the outbox, start the plugins."""
        await self.events.deliver_pending()
        for p in self.plugins.values():
            await p.start()
            self._started.append(p)
        self._redeliver = asyncio.create_task(self._redeliver_loop())

    async def _redeliver_loop(self) -> None:
        while True:
            await asyncio.sleep(REDELIVER_EVERY)
            try:
                await self.events.deliver_pending()
            except Exception:  # noqa: BLE001 -- retried at the next round
                log.exception("outbox redelivery failed")

    async def close(self) -> None:
        """Stop started plugins (reverse order) and close the database."""
        if self._redeliver is not None:
            self._redeliver.cancel()
            await asyncio.gather(self._redeliver, return_exceptions=True)
            self._redeliver = None
        while self._started:
            p = self._started.pop()
            try:
                await p.stop()
            except Exception:  # noqa: BLE001 -- keep stopping the others
                log.exception("plugin %s failed to stop", p.name)
        await self.db.close()
