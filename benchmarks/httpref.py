"""Reference HTTP object server for the gateway benchmark: the ceiling of aiohttp on this host.

PUT streams the body into one file per path (MD5 computed on the way, as Swift's ETag),
GET serves the file (sendfile), nothing else: no auth check, no metadata, no blocks, no
hashing into a map. Like the bare ``nbdkit python`` plugin for NBD it is a reference,
not a competitor. Usage: ``python -m benchmarks.httpref DIR`` prints ``URL`` on stdout.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys
from pathlib import Path

import uvloop
from aiohttp import web


def make_app(root: Path) -> web.Application:
    """The two handlers over ``root``."""

    def path_of(req: web.Request) -> Path:
        return root / hashlib.sha1(req.path.encode()).hexdigest()

    async def put(req: web.Request) -> web.Response:
        md5 = hashlib.md5()
        fd = os.open(path_of(req), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            async for chunk in req.content.iter_chunked(1 << 20):
                md5.update(chunk)
                os.write(fd, chunk)
        finally:
            os.close(fd)
        return web.Response(status=201, headers={"ETag": md5.hexdigest()})

    async def get(req: web.Request) -> web.StreamResponse:
        p = path_of(req)
        if not p.exists():
            return web.Response(status=404)
        return web.FileResponse(p)

    app = web.Application(client_max_size=1 << 40)
    app.router.add_route("PUT", "/{tail:.*}", put)
    app.router.add_route("GET", "/{tail:.*}", get)
    return app


def main() -> None:
    """Serve on a free loopback port until killed; print the base URL first."""
    root = Path(sys.argv[1])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))

    async def serve() -> None:
        runner = web.AppRunner(make_app(root), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
