"""Rendering listings as plain text, JSON or XML, the Swift way."""

from __future__ import annotations

import datetime
import json
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from pithos_gw.common import want_format


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
        return web.Response(status=204, headers=headers)
    text = "".join((it.get("subdir") or it["name"]) + "\n" for it in items)
    return web.Response(status=200, body=text.encode(), headers=headers,
                        content_type="text/plain", charset="utf-8")


def apply_delimiter(names: list[tuple[str, dict[str, Any]]], prefix: str, delimiter: str | None,
                    limit: int, marker: str | None = None) -> list[dict[str, Any]]:
    """Fold names sharing a prefix up to ``delimiter`` into subdir entries; cut at ``limit``."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name, item in names:
        if len(out) >= limit:
            break
        if delimiter:
            idx = name.find(delimiter, len(prefix))
            if idx >= 0:
                sub = name[: idx + len(delimiter)]
                if sub != name:
                    # A subdir not after the marker was on an earlier page: clients page
                    # with the last entry (a subdir) as marker; repeating it loops them.
                    if sub not in seen and (marker is None or sub > marker):
                        seen.add(sub)
                        out.append({"subdir": sub})
                    continue
        seen.add(name)
        out.append(item)
    return out
