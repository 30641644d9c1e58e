"""Swift TempURL: time-limited URLs signed with the account's (or the container's)
X-*-Meta-Temp-URL-Key[-2].

``?temp_url_sig=SIG&temp_url_expires=UNIX`` signs ``METHOD\\nEXPIRES\\nPATH`` with HMAC
(SHA-1, SHA-256 or SHA-512; hex, or ``sha512:`` and base64). GET answers carry
``Content-Disposition: attachment`` (``?inline`` or ``?filename=`` change it).

What a valid TempURL request may do -- the one rule, applied by :func:`check` and
:func:`confine` before any handler runs, and by :func:`filter_response` on the way out
(Swift's tempurl middleware, made strict where the Pithos+ extensions add more):

- the method the signature names (a HEAD also with a GET, PUT or POST signature), on
  exactly the signed object path, or on an object under the signed ``temp_url_prefix``;
  never an account or container (no listings, container/account POST, bulk delete): 401;
- the scope of the key that signed it: an account key reaches that account, a container
  key that container (a DLO's segments included): 401 outside it;
- only ``temp_url_*``, ``filename`` and ``inline`` of the query string are seen, the rest is
  dropped as Swift does (so no ``?multipart-manifest=put|delete``, ``?hashmap``,
  ``?version``, ``?update``, ``?delimiter`` or ``?until``: a PUT stores its body as is);
- no pointer to other data on PUT, POST or DELETE (400, as Swift's disallowed headers):
  ``X-Object-Manifest``, ``X-Symlink-Target``, ``X-Copy-From[-Account]``, ``X-Move-From``,
  ``X-Source-Object``/``-Account``/``-Version``; and a POST changes metadata only (400 for
  Pithos partial updates: ``Content-Range``, ``X-Object-Bytes``; and for form uploads);
- no sharing or publishing: ``X-Object-Sharing`` and ``X-Object-Public`` answer 403;
- ``X-Timestamp`` and ``X-Open-Expired`` are dropped (Swift's incoming_remove_headers);
- answers lose the owner's metadata (``X-Object-Meta-*`` but ``X-Object-Meta-Public-*``,
  Swift's outgoing_remove_headers) and the Pithos+ permission headers (sharing, the public
  URL, who may access or modified it).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import time
from collections.abc import MutableMapping
from urllib.parse import quote

from aiohttp import web

from pithos_gw import dlo
from pithos_gw.common import META, ORIGIN, fail, now

METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")
DIGESTS = ("sha1", "sha256", "sha512")
_HEX = {40: "sha1", 64: "sha256", 128: "sha512"}

#: The query parameters a TempURL request keeps (Swift rewrites QUERY_STRING to these).
QUERY_KEPT = ("temp_url_sig", "temp_url_expires", "temp_url_prefix", "filename", "inline")
#: Pointers to other data: refused (400) on PUT, POST and DELETE.
POINTERS = ("X-Object-Manifest", "X-Symlink-Target", "X-Copy-From", "X-Copy-From-Account",
            "X-Move-From", "X-Source-Object", "X-Source-Account", "X-Source-Version")
#: A POST changes metadata only: these would write data (Pithos partial updates).
DATA_ON_POST = ("Content-Range", "X-Object-Bytes")
#: Only the owner may share or publish: 403.
OWNER_ONLY = ("X-Object-Sharing", "X-Object-Public")
#: Dropped from the request (Swift's incoming_remove_headers).
STRIPPED_IN = ("X-Timestamp", "X-Open-Expired")
#: Dropped from the answer besides X-Object-Meta-* (the owner's view of permissions).
STRIPPED_OUT = ("X-Object-Sharing", "X-Object-Shared-By", "X-Object-Public",
                "X-Object-Allowed-To", "X-Object-Modified-By")
_STRIPPED_IN = frozenset(h.lower() for h in STRIPPED_IN)
_STRIPPED_OUT = frozenset(h.lower() for h in STRIPPED_OUT)
#: Set on a request a TempURL confined (the answer is filtered).
CONFINED = web.RequestKey("gw_tempurl", bool)


def info() -> dict[str, list[str]]:
    """The /info entry, with Swift's names for the header rules."""
    return {"methods": list(METHODS), "allowed_digests": list(DIGESTS),
            "incoming_remove_headers": [h.lower() for h in STRIPPED_IN],
            "incoming_allow_headers": [],
            "outgoing_remove_headers": ["x-object-meta-*"] + [h.lower() for h in STRIPPED_OUT],
            "outgoing_allow_headers": ["x-object-meta-public-*"]}


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


def _headers_ok(request: web.Request) -> None:
    """400 for pointers to other data (and data on a POST), 403 for sharing/publishing."""
    h = request.headers
    if request.method in ("GET", "HEAD"):
        return
    for name in OWNER_ONLY:
        if name in h:
            fail(403, f"The header {name} is not allowed in a Temp URL")
    refused = POINTERS + (DATA_ON_POST if request.method == "POST" else ())
    for name in refused:
        if name in h:
            fail(400, f"The header {name!r} is not allowed in this tempurl")
    if request.method == "POST" and h.get("Content-Type", "").startswith("multipart/form-data"):
        fail(400, "A Temp URL POST changes metadata only")


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
    heads = [method] + (["HEAD", "GET", "PUT", "POST"] if request.method == "HEAD" else [])
    for key, scoped in await _keys(request, account, container):
        for m in heads:
            for p in candidates:
                want = hmac.new(key.encode(), f"{m}\n{expires}\n{p}".encode(),
                                getattr(hashlib, algo)).hexdigest()
                if hmac.compare_digest(want, got):
                    _headers_ok(request)
                    # A container's key reaches only that container (DLO segments too).
                    request[dlo.SAME_CONTAINER] = scoped
                    return account
    fail(401, "Unauthorized: Temp URL invalid")


def confine(request: web.Request) -> web.Request:
    """The request a checked TempURL request is served as: only the kept query
    parameters and without the stripped headers (a clone sharing the body)."""
    query = [(k, v) for k, v in request.query.items() if k in QUERY_KEPT]
    kw: dict[str, object] = {"rel_url": request.rel_url.with_query(query)}
    if any(name in request.headers for name in STRIPPED_IN):
        kw["headers"] = [(k, v) for k, v in request.headers.items()
                         if k.lower() not in _STRIPPED_IN]
    request[CONFINED] = True  # both: aiohttp prepares a returned answer with the original
    inner = request.clone(**kw)  # type: ignore[arg-type]
    inner[ORIGIN] = request
    return inner


def filter_response(headers: MutableMapping[str, str]) -> None:
    """Drop the owner's metadata and permission headers from a TempURL answer."""
    for name in list(headers):
        low = name.lower()
        if (low.startswith("x-object-meta-") and not low.startswith("x-object-meta-public-")) \
                or low in _STRIPPED_OUT:
            del headers[name]


def disposition(request: web.Request, obj: str) -> str | None:
    """Content-Disposition of a TempURL GET (None: leave as is)."""
    if request.method != "GET":
        return None
    name = request.query.get("filename") or obj.rsplit("/", 1)[-1]
    kind = "inline" if "inline" in request.query else "attachment"
    return f'{kind}; filename="{name}"; filename*=UTF-8\'\'{quote(name)}'
