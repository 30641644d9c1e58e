"""A narrow handle on a running gateway for the control plane (e.g. compute reading an
image's map): public functions over its metadata, never its tables."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from archipelago.errors import Unauthorized
from pithos_gw import plankton
from pithos_gw.common import BLOCKS, META
from pithos_gw.hooks import LegacyAuth
from pithos_gw.meta import ObjectVersion


class GatewayHandle:
    """Read access to the objects and images of one gateway app (valid while it runs)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def object_version(self, account: str, container: str,
                             name: str) -> ObjectVersion | None:
        """The current version of an object (its map and size), or None."""
        return await self._app[META].object_get(account, container, name)

    async def image(self, image_id: str) -> dict[str, Any] | None:
        """A Plankton image record, or None."""
        return await self._app[META].image_get(image_id)

    async def image_hashmap(self, image_id: str) -> tuple[list[str], int]:
        """(block ids, bytes) of an image (NotFound when it or its object is gone)."""
        return await plankton.image_hashmap(self._app[META], image_id)

    async def legacy_login(self, user: str, key: str) -> str | None:
        """The account of a pre-control-plane v1 user (gateway table) whose key matches."""
        try:
            return (await LegacyAuth(self._app[META]).login_v1(user, key, None))[0]
        except Unauthorized:
            return None

    async def legacy_token(self, token: str) -> str | None:
        """The account whose pre-control-plane v1 key is ``token``, or None."""
        return await self._app[META].user_by_token(token)

    async def account_bytes(self, account: str) -> int:
        """Bytes of an account's current object versions (what quotas charge)."""
        return (await self._app[META].account_get(account)).bytes

    @property
    def block_size(self) -> int:
        """The gateway's block size (4 MiB)."""
        return self._app[BLOCKS].block_size
