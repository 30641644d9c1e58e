"""Which blocks each account references: the proof of possession behind hashmap PUTs.

A content block's name is its SHA-256, so whoever knows a hash could "upload" a hashmap
naming it and then read the block (a known Pithos+ behaviour). With ``[gateway]
hashmap_scope = "account"`` a hashmap PUT accepts only blocks its requester already
references: blocks of objects written into or by that account (every version, deleted
ones included: the account had the data) and blocks it uploaded raw. Stored bytes stay
deduplicated globally; only the instant-upload shortcut is scoped. Mixed into MetaStore.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import sqlalchemy as sa

from archipelago.hashing import ZERO_HASH
from pithos_gw.meta_tables import account_blocks, insert_of, run_many

T = TypeVar("T")
_BATCH = 500
_ZERO = bytes.fromhex(ZERO_HASH)
#: Insert-or-ignore of account_blocks, per dialect (built once: see meta_objects).
_INSERTS: dict[str, Any] = {}


def record_refs(db: sa.Connection, accounts: Iterable[str], hashes: Iterable[str]) -> None:
    """Note that ``accounts`` reference the blocks ``hashes`` (in the caller's transaction)."""
    blobs = {bytes.fromhex(h) for h in hashes} - {_ZERO}
    rows = [{"account": a, "hash": b} for a in set(accounts) for b in blobs]
    if not rows:
        return
    stmt = _INSERTS.get(db.dialect.name)
    if stmt is None:
        stmt = _INSERTS[db.dialect.name] = insert_of(db)(account_blocks).on_conflict_do_nothing()
    # Sorted: concurrent writers take the rows' locks in one order (no deadlock).
    rows.sort(key=lambda r: (r["account"], r["hash"]))
    for i in range(0, len(rows), _BATCH):
        run_many(db, stmt, rows[i : i + _BATCH])


class RefsMixin:
    """Block references of accounts (methods of MetaStore)."""

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    async def _ro(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    async def refs_add(self, account: str, hashes: list[str]) -> None:
        """Record that ``account`` uploaded (so holds) the blocks ``hashes``."""
        await self._run(record_refs, (account,), hashes)

    async def refs_unknown(self, account: str, hashes: list[str]) -> list[str]:
        """The distinct ids among ``hashes`` that ``account`` does not reference, in order
        (the zero block is everyone's)."""
        todo = [h for h in dict.fromkeys(hashes) if h != ZERO_HASH]

        def q(db: sa.Connection) -> list[str]:
            known: set[str] = set()
            for i in range(0, len(todo), _BATCH):
                batch = [bytes.fromhex(h) for h in todo[i : i + _BATCH]]
                known.update(bytes(r[0]).hex() for r in db.execute(
                    sa.select(account_blocks.c.hash).where(
                        account_blocks.c.account == account,
                        account_blocks.c.hash.in_(batch))))
            return [h for h in todo if h not in known]

        return await self._ro(q)
