"""Reading a map's header object from a blocker, safe against a concurrent replace."""

from __future__ import annotations

from archipelago.blocker.base import Blocker
from archipelago.errors import Corrupt, NotFound
from archipelago.mapper.format import Header, decode_header, header_name

#: Reads of one header before damage counts as real (each retry needs another replace).
ATTEMPTS = 5


async def load_header(b: Blocker, name: str) -> Header | None:
    """The header stored for map ``name`` (tombstones included), None if absent.

    Size and read are two calls: a header replaced in between by one of another size
    reads torn (Corrupt), so it is read again; damage that stays is real and raised."""
    hn = header_name(name)
    for attempt in range(ATTEMPTS):
        try:
            n = await b.size(hn)
            return decode_header(name, await b.read(hn, 0, n))
        except NotFound:
            return None
        except Corrupt:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
