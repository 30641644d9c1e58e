"""Swift TempURL: time-limited URLs signed with the account's (or the container's)
X-*-Meta-Temp-URL-Key[-2].

``?temp_url_sig=SIG&temp_url_expires=UNIX`` signs ``METHOD\\nEXPIRES\\nPATH`` with HMAC
(SHA-1, SHA-256 or SHA-512; hex, or ``sha512:`` and base64). A valid signature makes
the request act as the account's owner for that one object and method; GET answers
carry ``Content-Disposition: attachment`` (``?inline`` or ``?filename=`` change it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

from aiohttp import web

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


async def _keys(request: web.Request, account: str, container: str) -> list[str]:
    meta = request.app[META]
    acc = await meta.account_get(account)
    keys = [acc.meta.get(k, "") for k in ("X-Account-Meta-Temp-Url-Key",
                                         "X-Account-Meta-Temp-Url-Key-2")]
    if container:
        c = await meta.container_get(account, container, usage=False)
        if c is not None:
            keys += [c.meta.get(k, "") for k in ("X-Container-Meta-Temp-Url-Key",
                                                 "X-Container-Meta-Temp-Url-Key-2")]
    return [k for k in keys if k]


async def check(request: web.Request, account: str, container: str, obj: str) -> str:
    """The account a valid TempURL request acts as; 401 otherwise (as Swift)."""
    q = request.query
    method = "GET" if request.method == "HEAD" else request.method
    expires = q.get("temp_url_expires", "")
    parsed = _sig(q.get("temp_url_sig", ""))
    if (not obj or method not in METHODS or not (expires.isascii() and expires.isdigit())
            or int(expires) < now() or parsed is None):
        fail(401, "Unauthorized: Temp URL invalid")
    algo, got = parsed
    path = request.rel_url.raw_path
    plain = f"/v1/{account}/{container}/{obj}"  # what Swift's clients sign
    candidates = [plain, path, quote(plain)]
    heads = [method] + (["HEAD", "GET", "PUT"] if request.method == "HEAD" else [])
    for key in await _keys(request, account, container):
        for m in heads:
            for p in candidates:
                want = hmac.new(key.encode(), f"{m}\n{expires}\n{p}".encode(),
                                getattr(hashlib, algo)).hexdigest()
                if hmac.compare_digest(want, got):
                    return account
    fail(401, "Unauthorized: Temp URL invalid")


def disposition(request: web.Request, obj: str) -> str | None:
    """Content-Disposition of a TempURL GET (None: leave as is)."""
    if request.method != "GET":
        return None
    name = request.query.get("filename") or obj.rsplit("/", 1)[-1]
    kind = "inline" if "inline" in request.query else "attachment"
    return f'{kind}; filename="{name}"; filename*=UTF-8\'\'{quote(name)}'
