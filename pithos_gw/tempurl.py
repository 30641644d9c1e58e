"""Swift TempURL: time-limited URLs signed with the account's (or the container's)
X-*-Meta-Temp-URL-Key[-2].

``?temp_url_sig=SIG&temp_url_expires=UNIX`` signs ``METHOD\\nEXPIRES\\nPATH`` with HMAC
(SHA-1, SHA-256 or SHA-512; hex, or ``sha512:`` and base64). A valid signature makes
the request act as the account's owner for that one object and method; GET answers
carry ``Content-Disposition: attachment`` (``?inline`` or ``?filename=`` change it).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import time
from urllib.parse import quote, unquote

from aiohttp import web

from pithos_gw import dlo
from pithos_gw.common import META, fail, now

METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")
DIGESTS = ("sha1", "sha256", "sha512")
_HEX = {40: "sha1", 64: "sha256", 128: "sha512"}


def wanted(request: web.Request) -> bool:
    """True when the request carries TempURL parameters."""
    return "temp_url_sig" in request.query


def _sig(sig: str) -> tuple[str, str] | None:
    """(digest, hex) of a signature in either form, or None."""
    if ":" in sig:
        algo, _, b64 = sig.partition(":")
        if algo not in DIGESTS:
            return None
        try:
            raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except ValueError:
            return None
        return algo, raw.hex()
    algo = _HEX.get(len(sig))
    return (algo, sig.lower()) if algo else None


async def _keys(request: web.Request, account: str,
                container: str) -> list[tuple[str, bool]]:
    """(key, is a container's key) of the account's and the container's TempURL keys."""
    meta = request.app[META]
    acc = await meta.account_get(account)
    keys = [(acc.meta.get(k, ""), False) for k in ("X-Account-Meta-Temp-Url-Key",
                                                  "X-Account-Meta-Temp-Url-Key-2")]
    if container:
        c = await meta.container_get(account, container, usage=False)
        if c is not None:
            keys += [(c.meta.get(k, ""), True) for k in ("X-Container-Meta-Temp-Url-Key",
                                                         "X-Container-Meta-Temp-Url-Key-2")]
    return [(k, scoped) for k, scoped in keys if k]


def _expires(raw: str) -> int | None:
    """Unix seconds, or ISO 8601 UTC (2026-12-03T00:00:00Z), as Swift accepts."""
    if raw.isascii() and raw.isdigit():
        return int(raw)
    try:
        return calendar.timegm(time.strptime(raw, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def _manifest_ok(request: web.Request, container: str) -> None:
    """A TempURL may name a DLO's segments only in its own container (400 otherwise)."""
    value = request.headers.get("X-Object-Manifest")
    if value is not None and unquote(value).lstrip("/").partition("/")[0] != container:
        fail(400, "X-Object-Manifest must point into the Temp URL's container")


async def check(request: web.Request, account: str, container: str, obj: str) -> str:
    """The account a valid TempURL request acts as; 401 otherwise (as Swift)."""
    q = request.query
    method = "GET" if request.method == "HEAD" else request.method
    expires = _expires(q.get("temp_url_expires", ""))
    parsed = _sig(q.get("temp_url_sig", ""))
    prefix = q.get("temp_url_prefix")
    if (not obj or method not in METHODS or expires is None or expires < now()
            or parsed is None or (prefix is not None and not obj.startswith(prefix))):
        fail(401, "Unauthorized: Temp URL invalid")
    algo, got = parsed
    if prefix is not None:
        candidates = [f"prefix:/v1/{account}/{container}/{prefix}"]
    else:
        plain = f"/v1/{account}/{container}/{obj}"  # what Swift's clients sign
        candidates = [plain, request.rel_url.raw_path, quote(plain)]
    heads = [method] + (["HEAD", "GET", "PUT"] if request.method == "HEAD" else [])
    for key, scoped in await _keys(request, account, container):
        for m in heads:
            for p in candidates:
                want = hmac.new(key.encode(), f"{m}\n{expires}\n{p}".encode(),
                                getattr(hashlib, algo)).hexdigest()
                if hmac.compare_digest(want, got):
                    _manifest_ok(request, container)
                    # A container's key reaches only that container (DLO segments too).
                    request[dlo.SAME_CONTAINER] = scoped
                    return account
    fail(401, "Unauthorized: Temp URL invalid")


def disposition(request: web.Request, obj: str) -> str | None:
    """Content-Disposition of a TempURL GET (None: leave as is)."""
    if request.method != "GET":
        return None
    name = request.query.get("filename") or obj.rsplit("/", 1)[-1]
    kind = "inline" if "inline" in request.query else "attachment"
    return f'{kind}; filename="{name}"; filename*=UTF-8\'\'{quote(name)}'
