"""One exception hierarchy for every layer of archipelago.

Each class carries a stable id (``code``), an errno (for NBD and peer replies),
an exit code (for the CLI) and an HTTP status (for the gateway). The class
docstring is the default message. Peers send ``code`` across the segment and the
receiver rebuilds the same class with :func:`from_code`.
"""

from __future__ import annotations

import errno as _errno
from typing import ClassVar


class ArchipelagoError(Exception):
    """Internal error."""

    code: ClassVar[str] = "internal"
    errno: ClassVar[int] = _errno.EIO
    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or self.code).strip())

    @property
    def message(self) -> str:
        """The one-line message shown to users."""
        return str(self.args[0]) if self.args else self.code


class InvalidArgument(ArchipelagoError):
    """Invalid argument."""

    code = "invalid-argument"
    errno = _errno.EINVAL
    exit_code = 2
    http_status = 400


class NotFound(ArchipelagoError):
    """Not found."""

    code = "not-found"
    errno = _errno.ENOENT
    exit_code = 3
    http_status = 404


class AlreadyExists(ArchipelagoError):
    """Already exists."""

    code = "already-exists"
    errno = _errno.EEXIST
    exit_code = 4
    http_status = 409


class Locked(ArchipelagoError):
    """Locked by another owner."""

    code = "locked"
    errno = _errno.EBUSY
    exit_code = 5
    http_status = 423


class Busy(ArchipelagoError):
    """Busy."""

    code = "busy"
    errno = _errno.EBUSY
    exit_code = 6
    http_status = 409


class ReadOnly(ArchipelagoError):
    """Read-only."""

    code = "read-only"
    errno = _errno.EROFS
    exit_code = 7
    http_status = 403


class NoSpace(ArchipelagoError):
    """No space left on the backend."""

    code = "no-space"
    errno = _errno.ENOSPC
    exit_code = 8
    http_status = 507


class Corrupt(ArchipelagoError):
    """Corrupt data or metadata."""

    code = "corrupt"
    errno = _errno.EIO
    exit_code = 9
    http_status = 500


class BackendUnavailable(ArchipelagoError):
    """Backend unavailable."""

    code = "backend-unavailable"
    errno = _errno.EIO
    exit_code = 10
    http_status = 503


class PeerDied(ArchipelagoError):
    """Peer died."""

    code = "peer-died"
    errno = _errno.ENOTCONN
    exit_code = 11
    http_status = 503


class NotRunning(ArchipelagoError):
    """Daemon not running (start it with: archip daemon start)."""

    code = "not-running"
    errno = _errno.ECONNREFUSED
    exit_code = 12
    http_status = 503


class NotSupported(ArchipelagoError):
    """Operation not supported."""

    code = "not-supported"
    errno = _errno.ENOTSUP
    exit_code = 13
    http_status = 501


class TimedOut(ArchipelagoError):
    """Timed out."""

    code = "timed-out"
    errno = _errno.ETIMEDOUT
    exit_code = 14
    http_status = 504


class ConfigError(ArchipelagoError):
    """Bad configuration."""

    code = "config"
    errno = _errno.EINVAL
    exit_code = 15
    http_status = 500


class NativeUnavailable(ArchipelagoError):
    """Native extension unavailable."""

    code = "native-unavailable"
    errno = _errno.ENOSYS
    exit_code = 16
    http_status = 500


class Unauthorized(ArchipelagoError):
    """Unauthorized: no valid credentials."""

    code = "unauthorized"
    errno = _errno.EACCES
    exit_code = 17
    http_status = 401


class Forbidden(ArchipelagoError):
    """Forbidden."""

    code = "forbidden"
    errno = _errno.EPERM
    exit_code = 18
    http_status = 403


class QuotaExceeded(ArchipelagoError):
    """Quota exceeded."""

    code = "quota-exceeded"
    errno = _errno.EDQUOT
    exit_code = 19
    http_status = 413


class Fenced(Locked):
    """Fenced: this writer's lock was taken away (a kind of Locked, with its own code)."""

    code = "fenced"
    errno = _errno.ESTALE
    exit_code = 20
    http_status = 409


class StaleHandle(NotFound):
    """The volume is not open on the mapper peer (it restarted since the open): reopen it."""

    code = "stale-handle"
    errno = _errno.ESTALE
    exit_code = 21
    http_status = 503


class MissingBlock(Corrupt):
    """A referenced block is missing from the store."""

    code = "missing-block"
    errno = _errno.EIO
    exit_code = 22
    http_status = 500


class TooManyRequests(ArchipelagoError):
    """Too many requests: try again later."""

    code = "too-many-requests"
    errno = _errno.EAGAIN
    exit_code = 23
    http_status = 429


def _all_classes() -> list[type[ArchipelagoError]]:
    seen: list[type[ArchipelagoError]] = [ArchipelagoError]
    stack = [ArchipelagoError]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


def from_code(code: str, message: str | None = None) -> ArchipelagoError:
    """Rebuild the error class named by ``code`` (unknown codes become internal errors)."""
    for cls in _all_classes():
        if cls.code == code:
            return cls(message)
    return ArchipelagoError(message)


def from_errno(err: int, message: str | None = None) -> ArchipelagoError:
    """Map an OS errno to the closest error class."""
    table: dict[int, type[ArchipelagoError]] = {
        _errno.ENOENT: NotFound,
        _errno.EEXIST: AlreadyExists,
        _errno.EINVAL: InvalidArgument,
        _errno.ENOSPC: NoSpace,
        _errno.EDQUOT: NoSpace,
        _errno.EROFS: ReadOnly,
        _errno.EBUSY: Busy,
        _errno.ETIMEDOUT: TimedOut,
        _errno.ENOTCONN: PeerDied,
        _errno.ENOTSUP: NotSupported,
        _errno.ENAMETOOLONG: InvalidArgument,
    }
    return table.get(err, ArchipelagoError)(message)
