"""Expiring objects (Swift's X-Delete-At / X-Delete-After).

The expiry instant is kept in the version's metadata as ``X-Delete-At`` (integer Unix
seconds), so it comes back as a header and a POST or copy carries it. An expired
object reads as absent at once (404, 412 for If-Match, gone from listings); the
version itself is deleted the first time it is met after expiry and by the app's
sweeper (every ``SWEEP_SECONDS``), which stands in for Swift's object-expirer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from pithos_gw.common import META, fail, fail_exact, now
from pithos_gw.meta import ObjectVersion

KEY = "X-Delete-At"
#: Swift's largest timestamp (10 digits): later expiries are clamped to it.
MAX_DELETE_AT = 9999999999
SWEEP_SECONDS = 30.0
log = logging.getLogger("pithos_gw")


def requested(request: web.Request) -> int | None:
    """The X-Delete-At a request asks for (X-Delete-After relative to now); None when it
    sends neither; 400 when malformed or in the past, as Swift."""
    h = request.headers
    if "X-Delete-After" in h:
        after = h["X-Delete-After"]
        if not (after.strip().isascii() and after.strip().lstrip("-").isdigit()):
            fail_exact(400, "Non-integer X-Delete-After")
        n = int(after)
        if n < 0:
            fail_exact(400, "X-Delete-After in past")
        return int(now()) + n
    if "X-Delete-At" in h:
        at = h["X-Delete-At"].strip()
        if not (at.isascii() and at.isdigit()):
            fail_exact(400, "Non-integer X-Delete-At")
        if int(at) <= now():
            fail_exact(400, "X-Delete-At in past")
        return min(int(at), MAX_DELETE_AT)
    return None


def apply(request: web.Request, meta: dict[str, str],
          old: dict[str, str] | None = None) -> dict[str, str]:
    """``meta`` with the expiry the request sets (or removes with X-Remove-Delete-At),
    else the one ``old`` had (POST and copies keep it)."""
    out = {k: v for k, v in meta.items() if k != KEY}
    at = requested(request)
    if at is not None:
        out[KEY] = str(at)
    elif "X-Remove-Delete-At" not in request.headers and old and old.get(KEY):
        out[KEY] = old[KEY]
    return out


def check_if_delete_at(request: web.Request, v: ObjectVersion | None) -> bool:
    """DELETE with X-If-Delete-At: 400 unless an integer, 412 unless it is ``v``'s expiry
    (``v`` None: the syntax only); whether the request had one."""
    want = request.headers.get("X-If-Delete-At")
    if want is None:
        return False
    if not (want.strip().isascii() and want.strip().isdigit()):
        fail_exact(400, "Bad X-If-Delete-At header value")
    if v is not None and v.meta.get(KEY) != str(int(want)):
        fail(412, "X-If-Delete-At and X-Delete-At do not match")
    return True


def expired(v: ObjectVersion | None) -> bool:
    """True when ``v`` carries an expiry that has passed."""
    if v is None:
        return False
    at = v.meta.get(KEY)
    return bool(at) and at.isdigit() and int(at) <= now()


async def live(request: web.Request, v: ObjectVersion | None) -> ObjectVersion | None:
    """``v``, or None once it has expired (deleting it then: the expirer's work)."""
    if v is None or not expired(v):
        return v
    meta = request.app[META]
    replaced = False
    with contextlib.suppress(Exception):  # a concurrent delete got there first
        # only the version seen expired: one written meanwhile stays, and is the answer
        replaced = not await meta.object_delete(v.account, v.container, v.name,
                                                expect=v.serial)
    if replaced:
        return await live(request, await meta.object_get(v.account, v.container, v.name))
    return None


async def sweep(app: web.Application) -> int:
    """Delete every current version whose expiry has passed; how many."""
    meta = app[META]
    done = 0
    for account, container, name, serial in await meta.expired_objects(now()):
        with contextlib.suppress(Exception):
            # a version written since the listing is not the expired one: it stays
            done += await meta.object_delete(account, container, name, expect=serial)
    return done


async def sweeper(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run :func:`sweep` every SWEEP_SECONDS while the app serves."""
    async def loop() -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await sweep(app)
            except Exception as e:  # keep sweeping; the next round retries
                log.warning("expiry sweep failed: %s", e)

    task = asyncio.ensure_future(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
