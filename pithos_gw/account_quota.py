"""Account quotas through the Swift API (Swift's account_quotas middleware), over the
host's quota: with the identity plugin, the account owner's ``pithos.diskspace`` limit.

- Only an administrator (the identity plugin's admin users; Swift's reseller admin) may
  set or remove an account's quota: ``POST /v1/ACCOUNT`` with
  ``X-Account-Meta-Quota-Bytes`` or ``X-Account-Quota-Bytes`` (a byte count; empty or
  ``X-Remove-...``: back to the default limit). Anyone else, the owner included, gets 403
  for any of Swift's quota headers (``-Quota-Count``, ``-Policy-`` ones too), so no user
  raises their own quota. An administrator asking for a count or per-policy quota: 400.
- HEAD/GET of the account show the quota as ``X-Account-Meta-Quota-Bytes`` and
  ``X-Account-Quota-Bytes`` (and Pithos' ``X-Account-Policy-Quota``).
- An upload whose Content-Length would pass the quota is refused with 413 before its body
  is read; the charge at commit (QuotaCharger) stays the authority for every other write.
- Without a host quota (the gateway's own v1 users) there is no account quota and no
  administrator: the headers are refused (403) and /info does not list account_quotas.
"""

from __future__ import annotations

from aiohttp import web

from pithos_gw.common import fail
from pithos_gw.hooks import QUOTA_ADMIN

#: Swift's quota headers (lower case, without X-Remove-) a user may never send.
_NAMES = ("x-account-meta-quota-bytes", "x-account-quota-bytes", "x-account-quota-count")
_PREFIXES = ("x-account-quota-bytes-policy-", "x-account-quota-count-policy-")
#: The ones that set the byte quota.
_BYTES = ("x-account-meta-quota-bytes", "x-account-quota-bytes")
#: Stored account metadata that is not metadata but the quota (never kept as meta).
META_KEY = "X-Account-Meta-Quota-Bytes"


def requested(request: web.Request) -> dict[str, str]:
    """The quota headers of a request, lower case ("" for an X-Remove- header or an empty
    value: back to the default)."""
    out: dict[str, str] = {}
    for k, v in request.headers.items():
        lk = k.lower()
        removed = lk.startswith("x-remove-")
        name = "x-" + lk[len("x-remove-"):] if removed else lk
        if name in _NAMES or name.startswith(_PREFIXES):
            out[name] = "" if removed else v.strip()
    return out


async def apply(request: web.Request, account: str, user: str,
                wanted: dict[str, str]) -> None:
    """Set ``account``'s byte quota as ``user`` asks: 403 unless an administrator asks."""
    admin = request.app.get(QUOTA_ADMIN)
    if admin is None or not user or not await admin.is_admin(user):
        fail(403, "Forbidden: only an administrator sets account quotas")
    if any(name not in _BYTES for name in wanted):
        fail(400, "Only a byte quota (X-Account-Meta-Quota-Bytes) is supported")
    values = {wanted[name] for name in _BYTES if name in wanted}
    if len(values) != 1:
        fail(400, "Conflicting quota headers")
    value = values.pop()
    if value and not (value.isascii() and value.isdigit()):
        fail(400, "Invalid bytes quota")
    await admin.set_limit(account, int(value) if value else None)


async def add_headers(request: web.Request, account: str, headers: dict[str, str]) -> None:
    """The account's quota in HEAD/GET answers (nothing without a host quota)."""
    admin = request.app.get(QUOTA_ADMIN)
    limit = await admin.limit(account) if admin is not None else None
    if limit is None:
        return
    for name in ("X-Account-Meta-Quota-Bytes", "X-Account-Quota-Bytes",
                 "X-Account-Policy-Quota"):
        headers[name] = str(limit)


async def check_upload(request: web.Request, account: str, delta: int) -> None:
    """413 (QuotaExceeded) before an upload of known size that would pass the quota."""
    admin = request.app.get(QUOTA_ADMIN)
    if admin is not None and delta > 0:
        await admin.check(account, delta)
