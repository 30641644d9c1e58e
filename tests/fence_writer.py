"""A mapper process for tests/test_fencing.py: one writer of one volume, driven by lines
on stdin ("open [force]", "write OFFSET BYTE LENGTH", "zero OFFSET LENGTH", "flush",
"read OFFSET LENGTH"); answers one line each: "ok [data hex digest]" or "err CODE"."""

from __future__ import annotations

import asyncio
import hashlib
import sys

from archipelago.blocker.base import make_owner
from archipelago.blocker.file import FileBlocker
from archipelago.errors import ArchipelagoError
from archipelago.mapper import Mapper


async def main(root: str, name: str, tag: str) -> None:
    """Serve commands until stdin closes."""
    m = Mapper(FileBlocker(root), make_owner(tag))
    v = None
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).split():
        try:
            out = ""
            if line[0] == "open":
                v = await m.open(name, force=line[1:] == ["force"])
            elif line[0] == "write":
                assert v is not None
                await v.write(int(line[1]), bytes([int(line[2])]) * int(line[3]))
            elif line[0] == "zero":
                assert v is not None
                await v.zero(int(line[1]), int(line[2]))
            elif line[0] == "flush":
                assert v is not None
                await v.flush()
            elif line[0] == "read":
                assert v is not None
                out = hashlib.sha256(await v.read(int(line[1]), int(line[2]))).hexdigest()
            print(f"ok {out}".strip(), flush=True)
        except ArchipelagoError as e:
            print(f"err {e.code}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
