"""[billing]: the billing plugin's settings (registered in the archipelago.config entry points)."""

from __future__ import annotations

from dataclasses import dataclass, field

from archipelago.config import doc


@dataclass
class BillingConfig:
    """[billing]: usage events become credits (the billing plugin)."""

    deny_when_negative: bool = field(default=False, metadata=doc(
        "identity refuses new commissions (413) of a user whose balance is below zero"))
