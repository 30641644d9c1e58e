"""Identity test helpers: an opened Host with the identity plugin on a temporary SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from archipelago import config as cfgmod
from archipelago.instance import Instance
from control.host.host import Host
from control.identity.service import IdentityService


@asynccontextmanager
async def identity(tmp_path: Path, overrides: list[str] | None = None
                   ) -> AsyncIterator[tuple[Host, IdentityService]]:
    """(host, identity service), opened (migrated, admin created), closed after."""
    inst = Instance(tmp_path).ensure()
    cfg = cfgmod.load(inst.data_dir, overrides=['control.plugins=["identity"]',
                                                *(overrides or [])], env={})
    host = Host(inst, cfg)
    try:
        await host.open()
        yield host, host.ctx.service("identity")
    finally:
        await host.close()
