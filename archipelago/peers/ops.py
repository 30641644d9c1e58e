"""Op codes and request flags carried in segment descriptors."""

from __future__ import annotations

from enum import IntEnum, IntFlag


class Op(IntEnum):
    """Request operations (PING first, as in XSEG)."""

    PING = 0
    READ = 1
    WRITE = 2
    FLUSH = 3
    TRUNCATE = 4
    DELETE = 5
    ACQUIRE = 6
    RELEASE = 7
    COPY = 8
    CLONE = 9
    INFO = 11
    OPEN = 14
    CLOSE = 15
    SNAPSHOT = 16
    HASH = 17
    CREATE = 18
    RENAME = 19
    LIST = 20
    ZERO = 21
    TRIM = 22
    EXTENTS = 23
    CTRL = 24  # generic control op, msgpack payload (volume ops)


class Flag(IntFlag):
    """Request flags."""

    NONE = 0
    NOWAIT = 1  # try a lock without blocking
    FUA = 2
    FORCE = 4  # break a lock
    EXISTS = 8  # generic "the object exists" bit for replies
    MUST_EXIST = 16  # READ: an absent object is NotFound, not zeros (a map references it)
    TOUCH = 32  # INFO: also make the object young again (a dedup hit; garbage collection)
    FENCED = 64  # a mutation with its writer fence in the target: "name\nmap key\ngeneration"
