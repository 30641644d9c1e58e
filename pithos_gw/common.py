"""Shared pieces of the gateway: config, app keys, the request target, header helpers."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import NoReturn, TypeVar
from urllib.parse import quote, unquote

from aiohttp import web

from pithos_gw.meta import MetaStore, ObjectVersion
from pithos_gw.store import BlockStore


@dataclass(frozen=True)
class GatewayConfig:
    """Gateway settings; ``etag`` is "md5" (Swift clients) or "merkle" (Pithos clients)."""

    etag: str = "md5"
    max_meta_count: int = 32
    max_meta_name_length: int = 128
    max_meta_value_length: int = 256
    max_meta_overall_size: int = 4096
    container_listing_limit: int = 10000
    max_container_name_length: int = 256
    max_object_name_length: int = 1024
    max_file_size: int = 1 << 40
    max_groups: int = 32
    max_group_members: int = 32
    #: Objects assembled from stored blocks get an MD5 ETag up to this size only.
    assembled_md5_limit: int = 256 << 20
    #: Seconds a client may stall mid-headers or mid-body before its connection is closed.
    client_timeout: float = 60.0
    #: "account": a hashmap PUT accepts only blocks its requester references; "global":
    #: any stored block (knowing a hash is then enough to read the block).
    hashmap_scope: str = "account"


T = TypeVar("T")
META = web.AppKey("meta", MetaStore)
BLOCKS = web.AppKey("blocks", BlockStore)
CONFIG = web.AppKey("config", GatewayConfig)


class HttpError(Exception):
    """An HTTP error answered with a short plain-text body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 body: bytes | None = None, content_type: str = "text/plain") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.body = body
        self.content_type = content_type


def fail(status: int, message: str, headers: dict[str, str] | None = None) -> NoReturn:
    """Raise an HttpError."""
    raise HttpError(status, message, headers)


def fail_exact(status: int, text: str) -> NoReturn:
    """Raise an HttpError whose body is exactly ``text`` (Swift's wording, which clients
    and Swift's own tests compare byte for byte)."""
    raise HttpError(status, text, body=text.encode())


#: The request a clone stands in for (a confined TempURL request), whose middlewares
#: must learn when the clone's response started.
ORIGIN = web.RequestKey("gw_origin", web.Request)


@dataclass
class Target:
    """What a request addresses, and who asks."""

    account: str
    container: str = ""
    obj: str = ""
    user: str = ""

    @property
    def owner(self) -> bool:
        """True when the requester owns the account."""
        return self.user == self.account


def http_date(ts: float) -> str:
    """RFC 1123 date, rounded up to the second as Swift's Last-Modified."""
    return email.utils.formatdate(math.ceil(ts), usegmt=True)


def parse_date(value: str | None) -> float | None:
    """Parse an HTTP date (None if absent or malformed, as Swift ignores bad dates)."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


#: Largest value a SQLite INTEGER holds (serials, limits).
MAX_INT64 = (1 << 63) - 1
#: 9999-12-31T23:59:59Z: the last instant an HTTP date can name.
_MAX_TS = 253402300799.0


def parse_until(request: web.Request) -> float | None:
    """The ``until`` query parameter as a timestamp (seconds or HTTP date), 400 unless
    it is a finite instant between 1970 and 9999."""
    raw = request.query.get("until")
    if raw is None:
        return None
    try:
        ts: float | None = float(raw)
    except ValueError:
        ts = parse_date(raw)
    if ts is None or not 0.0 <= ts <= _MAX_TS:  # also refuses nan
        fail(400, "Bad until")
    return ts


def out_value(value: str) -> str:
    """Header value for the wire: UTF-8 as stored (Swift returns unicode metadata so);
    control characters %-encoded, so a value stored with CR/LF can never split a header."""
    if not _control(value):
        return value
    return quote(value, safe=" !#$&'()*+,/:;=?@[]~")


_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def out_name(name: str) -> str:
    """Header name for the wire: anything but RFC 9110 token characters %-encoded."""
    return name if all(c in _TCHAR for c in name) else quote(name, safe="-")


def _control(text: str) -> bool:
    """True when ``text`` holds a C0/C1 control character or DEL."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def check_meta_item(name: str, value: str) -> None:
    """400 for a metadata name that is not a header token (non-ASCII allowed: it travels
    %-encoded) or a name or value with control characters (CR/LF would split headers)."""
    if _control(name) or _control(value):
        fail(400, "Control characters are not allowed in metadata")
    if any(c not in _TCHAR and ord(c) < 128 for c in name):
        fail(400, "Invalid metadata name")


def norm_key(key: str) -> str:
    """Pithos meta key normalisation: ``_`` -> ``-``, each word capitalised."""
    return "-".join(w.capitalize() for w in key.replace("_", "-").split("-"))


def read_meta(request: web.Request, prefix: str, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """User metadata headers with ``prefix`` (and the ``extra`` names), validated; an
    ``X-Remove-`` header (or an empty value) maps its key to "" (delete)."""
    cfg = request.app[CONFIG]
    out: dict[str, str] = {}
    total = 0
    remove = "x-remove-" + prefix.lower()[2:]
    for k, v in request.headers.items():
        lk = k.lower()
        if lk.startswith(prefix.lower()) or lk.startswith(remove):
            dropped = lk.startswith(remove)
            name = k[len(remove if dropped else prefix):]
            if not name:
                fail(400, "Metadata name cannot be empty")
            if len(name.encode()) > cfg.max_meta_name_length:
                fail(400, "Metadata name too long")
            if len(v.encode()) > cfg.max_meta_value_length:
                fail(400, "Metadata value too long")
            total += len(name.encode()) + len(v.encode())
            key, val = unquote(name), "" if dropped else unquote(v.strip())
            check_meta_item(key, val)
            out[prefix + norm_key(key)] = val
        elif lk in extra:
            check_meta_item(k, v)
            out[norm_key(k)] = v.strip()
    if len([k for k, v in out.items() if k.startswith(prefix) and v]) > cfg.max_meta_count:
        fail(400, "Too many metadata items")
    if total > cfg.max_meta_overall_size:
        fail(400, "Total metadata too large")
    return out


def check_meta_totals(request: web.Request, old: dict[str, str], new: dict[str, str],
                      prefix: str) -> None:
    """400 when ``new`` merged over ``old`` (an empty value deletes) passes the count or
    overall-size limits: Swift counts what the account or container will hold."""
    cfg = request.app[CONFIG]
    merged = {**old, **new}
    items = [(k[len(prefix):], v) for k, v in merged.items() if k.startswith(prefix) and v]
    if len(items) > cfg.max_meta_count:
        fail(400, "Too many metadata items")
    if sum(len(k.encode()) + len(v.encode()) for k, v in items) > cfg.max_meta_overall_size:
        fail(400, "Total metadata too large")


def check_container_name(request: web.Request, name: str) -> None:
    """400 on a bad container name (its length counted in UTF-8 bytes, as Swift)."""
    if not name or "/" in name or "\0" in name:
        fail(400, "Invalid container name")
    if len(name.encode()) > request.app[CONFIG].max_container_name_length:
        fail(400, "Container name too long")


def check_object_name(request: web.Request, name: str) -> None:
    """400 on a bad object name (its length counted in UTF-8 bytes, as Swift)."""
    if not name or "\0" in name:
        fail(400, "Invalid object name")
    if len(name.encode()) > request.app[CONFIG].max_object_name_length:
        fail(400, "Object name too long")


def etag_of(request: web.Request, v: ObjectVersion) -> str:
    """The ETag an object answers with: its MD5, or the Merkle root in Pithos mode."""
    if request.app[CONFIG].etag == "merkle" or not v.checksum:
        return v.hash
    return v.checksum


def want_format(request: web.Request, default: str = "plain") -> str:
    """``json``, ``xml`` or ``plain`` from ?format, else the Accept header."""
    fmt = request.query.get("format")
    if fmt:
        fmt = fmt.lower()
        if fmt not in ("json", "xml", "plain", "text"):
            fail(400, "Invalid format")
        return "plain" if fmt == "text" else fmt
    accept = request.headers.get("Accept", "")
    if "application/json" in accept:
        return "json"
    if "xml" in accept:
        return "xml"
    return default


def int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    """A non-negative integer query parameter (400 if malformed)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        val = int(raw)
    except ValueError:
        fail(400, f"Invalid {name}")
    if not 0 <= val <= MAX_INT64:
        fail(400, f"Invalid {name}")
    return val


async def timed(request: web.Request, aw: Awaitable[T]) -> T:
    """Await one read from the client: 408 after ``client_timeout`` s without progress."""
    limit = request.app[CONFIG].client_timeout
    try:
        return await asyncio.wait_for(aw, limit)
    except TimeoutError:
        raise HttpError(408, f"Request Timeout: the client sent nothing for {limit:g} s",
                        {"Connection": "close"}) from None


async def request_body(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives, each read bounded by ``client_timeout`` (Swift's
    client_timeout): a stalled upload ends with 408 and frees what it buffered."""
    while chunk := await timed(request, request.content.readany()):
        yield chunk


def client_alive(request: web.Request) -> bool:
    """False once the client closed its connection (long work then stops)."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def while_connected(request: web.Request,
                          chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``chunks``, stopped with ConnectionResetError once the client went away."""
    async for chunk in chunks:
        if not client_alive(request):
            raise ConnectionResetError("the client went away")
        yield chunk


def now() -> float:
    """Current time (one place to read the clock)."""
    return time.time()
