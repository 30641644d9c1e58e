"""Helpers for plugin HTTP APIs: OpenStack-shaped JSON faults, bounded JSON bodies, tokens.

Every plugin sub-app uses :func:`make_subapp` (or adds :func:`faults` itself) so errors
reach clients as ``{"itemNotFound": {"code": 404, "message": "..."}}``, never a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from archipelago.errors import ArchipelagoError, InvalidArgument, QuotaExceeded

log = logging.getLogger("control.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Largest JSON body a plugin API reads (bigger: 413 before reading it).
MAX_JSON = 1 << 20

#: HTTP status -> OpenStack fault name.
FAULT_NAMES = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
               405: "badMethod", 409: "conflict", 413: "overLimit", 423: "conflict",
               429: "overLimit", 500: "internalServerError", 501: "notImplemented",
               503: "serviceUnavailable", 504: "serviceUnavailable", 507: "overLimit"}


def fault_body(status: int, message: str, details: str = "",
               data: dict[str, Any] | None = None, name: str | None = None) -> dict[str, Any]:
    """``{name: {"code", "message", "details"[, "data"]}}``."""
    inner: dict[str, Any] = {"code": status, "message": message, "details": details}
    if data is not None:
        inner["data"] = data
    return {name or FAULT_NAMES.get(status, "internalServerError"): inner}


def fault(status: int, message: str, details: str = "", data: dict[str, Any] | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    """A JSON fault response."""
    return web.json_response(fault_body(status, message, details, data), status=status,
                             headers=headers)


def with_data(err: ArchipelagoError, data: dict[str, Any]) -> ArchipelagoError:
    """Attach fault ``data`` to an error (e.g. the 413 overLimit provision, limit, usage)."""
    err.fault_data = data  # type: ignore[attr-defined]
    return err


@web.middleware
async def faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn errors into JSON faults (the plugin APIs' one error middleware)."""
    try:
        return await handler(request)
    except ArchipelagoError as e:
        headers = {"Retry-After": "1"} if e.http_status == 429 else None
        data = getattr(e, "fault_data", None)
        if isinstance(e, QuotaExceeded) and data is not None:
            data = {"name": "NoCapacityError", **data}
        return fault(e.http_status, e.message, data=data, headers=headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return fault(e.status, e.reason, headers={k: v for k, v in e.headers.items()
                                                  if k.lower() in ("allow", "retry-after")})
    except UnicodeDecodeError:
        return fault(400, "Invalid UTF-8")
    except Exception:  # noqa: BLE001 -- never let a traceback reach a user
        log.exception("unexpected error on %s %s", request.method, request.rel_url)
        return fault(500, "Internal error")


def make_subapp() -> web.Application:
    """An aiohttp sub-app with the fault middleware."""
    return web.Application(middlewares=[faults], client_max_size=MAX_JSON)


async def read_json(request: web.Request, empty: Any = None) -> Any:
    """The JSON body (``empty`` when there is none); 400 when malformed, 413 when huge."""
    clen = request.content_length
    if clen is not None and clen > MAX_JSON:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_JSON, actual_size=clen)
    raw = await request.content.read(MAX_JSON + 1)
    if len(raw) > MAX_JSON:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_JSON, actual_size=len(raw))
    if not raw.strip():
        return empty
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..."
        raise InvalidArgument("malformed JSON body") from None


def token_of(request: web.Request) -> str | None:
    """The token of X-Auth-Token or ``?X-Auth-Token=``."""
    return request.headers.get("X-Auth-Token") or request.query.get("X-Auth-Token") or None


def base_url(request: web.Request) -> str:
    """scheme://host of a request (the catalog's default base)."""
    return f"{request.scheme}://{request.host}"
