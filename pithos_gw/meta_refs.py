"""Which blocks each account references: the proof of possession behind hashmap PUTs.

A content block's name is its SHA-256, so whoever knows a hash could "upload" a hashmap
naming it and then read the block (a known Pithos+ behaviour). With ``[gateway]
hashmap_scope = "account"`` a hashmap PUT accepts only blocks its requester already
references: blocks of objects written into or by that account (every version, deleted
ones included: the account had the data) and blocks it uploaded raw. Stored bytes stay
deduplicated globally; only the instant-upload shortcut is scoped. Mixed into MetaStore.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from archipelago.hashing import ZERO_HASH

T = TypeVar("T")
SCHEMA = """
CREATE TABLE IF NOT EXISTS account_blocks(account TEXT NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY(account, hash)) WITHOUT ROWID;
"""
_BATCH = 500
_ZERO = bytes.fromhex(ZERO_HASH)


def record_refs(db: sqlite3.Connection, accounts: Iterable[str], hashes: Iterable[str]) -> None:
    """Note that ``accounts`` reference the blocks ``hashes`` (in the caller's transaction)."""
    blobs = {bytes.fromhex(h) for h in hashes} - {_ZERO}
    db.executemany("INSERT OR IGNORE INTO account_blocks VALUES(?,?)",
                   ((a, b) for a in set(accounts) for b in blobs))


def create_refs(db: sqlite3.Connection) -> None:
    """Create the table; filled once from every recorded version when it is new."""
    new = db.execute("SELECT 1 FROM sqlite_master WHERE name='account_blocks'").fetchone() is None
    db.executescript(SCHEMA)
    if new:
        with db:
            for account, by, blob in db.execute(
                    "SELECT account, modified_by, hashes FROM versions").fetchall():
                record_refs(db, (account, by), (blob[i : i + 32].hex()
                                                for i in range(0, len(blob), 32)))


class RefsMixin:
    """Block references of accounts (methods of MetaStore)."""

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    async def refs_add(self, account: str, hashes: list[str]) -> None:
        """Record that ``account`` uploaded (so holds) the blocks ``hashes``."""
        await self._run(record_refs, (account,), hashes)

    async def refs_unknown(self, account: str, hashes: list[str]) -> list[str]:
        """The distinct ids among ``hashes`` that ``account`` does not reference, in order
        (the zero block is everyone's)."""
        todo = [h for h in dict.fromkeys(hashes) if h != ZERO_HASH]

        def q(db: sqlite3.Connection) -> list[str]:
            known: set[str] = set()
            for i in range(0, len(todo), _BATCH):
                batch = [bytes.fromhex(h) for h in todo[i : i + _BATCH]]
                marks = ",".join("?" * len(batch))
                known.update(r[0].hex() for r in db.execute(
                    f"SELECT hash FROM account_blocks WHERE account=? AND hash IN ({marks})",
                    (account, *batch)))
            return [h for h in todo if h not in known]

        return await self._run(q)
