"""Rendering listings as plain text, JSON or XML, the Swift way."""

from __future__ import annotations

import datetime
import json
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from pithos_gw.common import CONFIG, fail, want_format

_TRUE = ("true", "yes", "1", "on", "t", "y")
#: Content-Type of a listing reply (also on its 204 and HEAD answers, as Swift).
LISTING_TYPES = {"json": "application/json", "xml": "application/xml", "plain": "text/plain"}


def listing_type(request: web.Request) -> str:
    """The Content-Type header a listing (or its HEAD) answers with."""
    return LISTING_TYPES[want_format(request)] + "; charset=utf-8"


def listing_limit(request: web.Request) -> int:
    """?limit as Swift reads it: digits only (else the maximum), 412 above the maximum."""
    top = request.app[CONFIG].container_listing_limit
    raw = request.query.get("limit", "")
    if not (raw.isascii() and raw.isdigit()):
        return top
    if int(raw) > top:
        fail(412, f"Maximum limit is {top}")
    return int(raw)


def reversed_listing(request: web.Request) -> bool:
    """True for ?reverse=true (or yes, 1, on)."""
    return request.query.get("reverse", "").lower() in _TRUE


def page(entries: list[tuple[str, dict[str, Any]]], request: web.Request, prefix: str,
         delimiter: str | None) -> list[dict[str, Any]]:
    """One page of a name-sorted listing: marker/end_marker (swapped when reversed),
    prefix, ``delimiter`` folding into subdirs, reverse and limit."""
    q = request.query
    marker, end_marker = q.get("marker") or None, q.get("end_marker") or None
    limit = listing_limit(request)
    rev = reversed_listing(request)
    seq = reversed(entries) if rev else iter(entries)

    def inside(name: str) -> bool:
        if rev:
            return (marker is None or name < marker) and (end_marker is None or name > end_marker)
        return (marker is None or name > marker) and (end_marker is None or name < end_marker)

    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name, item in seq:
        if len(out) >= limit:
            break
        if not name.startswith(prefix) or not inside(name):
            continue
        if delimiter:
            idx = name.find(delimiter, len(prefix))
            if idx >= 0:
                sub = name[: idx + len(delimiter)]
                if sub != name:
                    # A subdir at or before the marker was on an earlier page: clients
                    # page with the last entry (a subdir) as marker; repeating it loops them.
                    if sub not in seen and (marker is None or inside(sub)):
                        seen.add(sub)
                        out.append({"subdir": sub})
                    continue
        out.append(item)
    return out


def iso(ts: float) -> str:
    """Swift listing timestamp (UTC, microseconds, no zone)."""
    dt = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")


def render(request: web.Request, root: str, root_name: str, item_tag: str,
           items: list[dict[str, Any]], headers: dict[str, str]) -> web.Response:
    """A listing response; an empty plain-text listing is a 204."""
    fmt = want_format(request)
    if fmt == "json":
        return web.Response(status=200, body=json.dumps(items).encode(), headers=headers,
                            content_type="application/json", charset="utf-8")
    if fmt == "xml":
        parts = ['<?xml version="1.0" encoding="UTF-8"?>\n',
                 f"<{root} name={quoteattr(root_name)}>"]
        for it in items:
            if "subdir" in it:
                parts.append(f"<subdir name={quoteattr(it['subdir'])}><name>"
                             f"{escape(it['subdir'])}</name></subdir>")
                continue
            parts.append(f"<{item_tag}>")
            for k, v in it.items():
                if isinstance(v, dict | list):
                    v = json.dumps(v)
                parts.append(f"<{k}>{escape(str(v))}</{k}>")
            parts.append(f"</{item_tag}>")
        parts.append(f"</{root}>")
        return web.Response(status=200, body="".join(parts).encode(), headers=headers,
                            content_type="application/xml", charset="utf-8")
    if not items:
        headers = {**headers, "Content-Type": "text/plain; charset=utf-8"}
        return web.Response(status=204, headers=headers)
    text = "".join((it.get("subdir") or it["name"]) + "\n" for it in items)
    return web.Response(status=200, body=text.encode(), headers=headers,
                        content_type="text/plain", charset="utf-8")
