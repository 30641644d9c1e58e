"""The `billing` control-plane plugin: Aquarium's role on the plugin host.

It turns other plugins' events (accepted commissions, server states, volumes, credits)
into usage events, serves /billing/v1, adds `archip billing`, and — with
``[billing] deny_when_negative`` — tells identity to refuse new commissions of users
whose balance is below zero.
"""

from __future__ import annotations

import argparse
import inspect
import logging
from typing import Any

from aiohttp import web

from archipelago.errors import InvalidArgument, QuotaExceeded
from control.billing import intake
from control.billing import tables as billing_tables
from control.billing.bill import rounded
from control.billing.config import BillingConfig
from control.billing.events import UsageEvent
from control.billing.service import BillingService
from control.host.plugin import Event, Handler, Plugin

log = logging.getLogger("control.billing")


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class BillingPlugin(Plugin):
    """Usage events become credits."""

    name = "billing"
    requires = ("identity",)
    config = BillingConfig
    tables = billing_tables.metadata
    migrations = "control.billing.versions"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.service = BillingService(ctx.db)
        self.recorded = self.duplicates = self.rejected = self.refused_commissions = 0

    @classmethod
    def register_cli(cls, subparsers: argparse._SubParsersAction) -> None:
        """`archip billing ...`."""
        from control.billing.cli import register

        register(subparsers)

    def routes(self) -> dict[str, web.Application]:
        """/billing/v1."""
        from control.billing.api import make_app

        return {"/billing/v1": make_app(self)}

    def catalog(self, base_url: str, user: str | None) -> list[dict[str, Any]]:
        """One "billing" entry."""
        return [{"name": "aquarium_billing", "type": "billing", "endpoints_links": [],
                 "endpoints": [{"versionId": "v1", "publicURL": f"{base_url}/billing/v1",
                                "region": "default"}]}]

    def handlers(self) -> dict[str, Handler]:
        """Every event type billing charges (control.billing.intake)."""
        return {kind: self.handle for kind in intake.TRANSLATORS}

    def services(self) -> dict[str, object]:
        """"billing": this plugin (balance, commission_guard)."""
        return {"billing": self}

    async def open(self) -> None:
        """Ask identity to consult :meth:`commission_guard` when deny_when_negative is set."""
        if self.settings.deny_when_negative:
            await _maybe(self.ctx.service("identity").add_commission_guard(self.commission_guard))

    # events ---------------------------------------------------------------------------
    async def handle(self, event: Event) -> None:
        """Record the usage an event means, once (a redelivered event is a duplicate)."""
        try:
            usage = intake.TRANSLATORS[event.type](event.payload, event.id, event.occurred_at)
        except InvalidArgument as e:
            # Redelivery cannot fix a malformed payload: count it, say why, drop it.
            self.rejected += 1
            log.warning("billing ignores %s event %s: %s", event.type, event.id, e.message)
            return
        if not usage:
            return
        new = await self.service.record(usage)
        self.recorded += new
        self.duplicates += len(usage) - new

    async def credit(self, user: str, amount: str, by: str = "") -> UsageEvent:
        """Add credits: a billing.credit event through the outbox (recorded by :meth:`handle`)."""
        ev = self.service.credit_event(user, amount, by)
        async with self.ctx.db.begin() as conn:
            await self.ctx.events.emit(conn, Event(
                intake.CREDIT, {"user": user, "amount": str(ev.value), "by": by},
                id=ev.id, occurred_at=ev.occurred.timestamp()))
        return ev

    def counters(self) -> dict[str, int]:
        """Event intake counters (also for tests: read, never parsed from logs)."""
        return {"recorded": self.recorded, "duplicates": self.duplicates, "rejected": self.rejected,
                "refused_commissions": self.refused_commissions}

    # identity -------------------------------------------------------------------------
    async def authenticate(self, token: str) -> Any:
        """The identity principal of a token (Unauthorized when invalid)."""
        return await _maybe(self.ctx.service("identity").authenticate(token))

    async def resolve_user(self, text: str) -> str:
        """A user's uuid from its name or uuid (identity's ``user``; NotFound when unknown)."""
        found = await _maybe(self.ctx.service("identity").user(text))
        return str(found.uuid)

    async def commission_guard(self, user: str, provisions: list[Any]) -> None:
        """Refuse (413) a commission that adds usage for a user whose balance is below zero."""
        if not any(_quantity(p) > 0 for p in provisions):
            return          # releasing resources stays possible
        balance = await self.service.balance(user)
        if balance < 0:
            self.refused_commissions += 1
            raise QuotaExceeded(f"billing: the balance of user {user} is {rounded(balance)} credits, "
                                f"below zero; new usage is refused until credits are added")


def _quantity(p: Any) -> float:
    q = p.get("quantity", 0) if isinstance(p, dict) else getattr(p, "quantity", 0)
    try:
        return float(q)
    except (TypeError, ValueError):
        return 0.0
