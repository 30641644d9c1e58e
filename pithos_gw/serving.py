"""Serving the gateway app: connection timeouts and parser errors that echo nothing.

aiohttp answers a request it cannot parse itself, with the parser's message, which
quotes the offending request bytes; here that answer is the bare status (no body) and the
log gets one line (no traceback). Everything else is aiohttp's own runner.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from pithos_gw.common import CONFIG

log = logging.getLogger("pithos_gw")
#: Request body bytes buffered per connection before reading pauses (aiohttp's default
#: 64 KiB makes a large upload pause and resume the socket thousands of times).
READ_BUFSIZE = 4 << 20


class _Handler(RequestHandler):
    """aiohttp's connection handler, with error replies that never quote the request."""

    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A short fixed reply for a request the HTTP parser refused."""
        if status == 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        first = (message or "").strip().splitlines()[:1]
        log.info("refused a malformed request from %s: %d %s", request.remote, status,
                 first[0][:80] if first else "")
        # No body: the parser dropped the request, so its method is unknown here, and
        # a reply to a HEAD must not carry one. The status line says it all.
        resp = web.Response(status=status)
        resp.force_close()
        return resp


class _Server(Server):
    """Builds :class:`_Handler` connections."""

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _Server  # same state, only the connection factory differs
        return server


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The runner that serves ``app``: a connection that sends no complete request for
    ``client_timeout`` s (half-sent headers, an idle keep-alive) is closed."""
    timeout = app[CONFIG].client_timeout
    # After an error reply to an unfinished upload aiohttp reads and drops the rest for
    # lingering_time (so the client sees the reply): a stalled client gets no more time.
    # auto_decompress=False: a body sent with Content-Encoding: gzip is the object's
    # content, stored as sent (Swift does not decode it either).
    return _Runner(app, keepalive_timeout=timeout, lingering_time=min(10.0, timeout),
                   auto_decompress=False, read_bufsize=READ_BUFSIZE,
                   **kwargs)
