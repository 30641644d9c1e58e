"""Tokens for CLI calls to the API server, minted in-process by the identity plugin:
the instance's administrator (DATA_DIR/admin.json) or, for admins acting for them, a user."""

from __future__ import annotations

import argparse
import json
from typing import Any

from archipelago.errors import NotRunning
from control.context import get_instance

#: Seconds a CLI token lives.
LIFETIME = 3600


def _admin_uuid(args: argparse.Namespace) -> str:
    path = get_instance(args).data_dir / "admin.json"
    try:
        return str(json.loads(path.read_text())["uuid"])
    except (OSError, ValueError, KeyError):
        raise NotRunning(f"no administrator yet ({path} is created when the API server first "
                         "starts: archip daemon start --gateway)") from None


def token_for(args: argparse.Namespace, user: str | None = None) -> tuple[str, str]:
    """(uuid, token) of ``user`` (name or uuid) or of the administrator."""
    from control.host.clirun import run_host

    who = user or _admin_uuid(args)

    async def mint(host: Any) -> tuple[str, str]:
        ident = host.ctx.service("identity")
        u = await ident.user(who)
        return str(u.uuid), str(await ident.mint_token(u.uuid, lifetime=LIFETIME))

    return run_host(args, mint)


def admin_token(args: argparse.Namespace) -> str:
    """A token of the instance's administrator."""
    return token_for(args)[1]
