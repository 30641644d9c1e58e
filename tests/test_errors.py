"""The error hierarchy: every class keeps its published code, errno and exit code."""

from __future__ import annotations

import errno

import pytest

from archipelago import errors as E

# The published table (README: "stable code, errno, HTTP status and CLI exit code").
# Changing a row breaks scripts that test exit codes: this test is meant to fail then.
STABLE = {
    E.ArchipelagoError: ("internal", errno.EIO, 1, 500),
    E.InvalidArgument: ("invalid-argument", errno.EINVAL, 2, 400),
    E.NotFound: ("not-found", errno.ENOENT, 3, 404),
    E.AlreadyExists: ("already-exists", errno.EEXIST, 4, 409),
    E.Locked: ("locked", errno.EBUSY, 5, 423),
    E.Busy: ("busy", errno.EBUSY, 6, 409),
    E.ReadOnly: ("read-only", errno.EROFS, 7, 403),
    E.NoSpace: ("no-space", errno.ENOSPC, 8, 507),
    E.Corrupt: ("corrupt", errno.EIO, 9, 500),
    E.BackendUnavailable: ("backend-unavailable", errno.EIO, 10, 503),
    E.PeerDied: ("peer-died", errno.ENOTCONN, 11, 503),
    E.NotRunning: ("not-running", errno.ECONNREFUSED, 12, 503),
    E.NotSupported: ("not-supported", errno.ENOTSUP, 13, 501),
    E.TimedOut: ("timed-out", errno.ETIMEDOUT, 14, 504),
    E.ConfigError: ("config", errno.EINVAL, 15, 500),
    E.NativeUnavailable: ("native-unavailable", errno.ENOSYS, 16, 500),
    E.Unauthorized: ("unauthorized", errno.EACCES, 17, 401),
    E.Forbidden: ("forbidden", errno.EPERM, 18, 403),
    E.QuotaExceeded: ("quota-exceeded", errno.EDQUOT, 19, 413),
    E.Fenced: ("fenced", errno.ESTALE, 20, 409),
    E.StaleHandle: ("stale-handle", errno.ESTALE, 21, 503),
    E.MissingBlock: ("missing-block", errno.EIO, 22, 500),
    E.TooManyRequests: ("too-many-requests", errno.EAGAIN, 23, 429),
}


def _all() -> list[type[E.ArchipelagoError]]:
    found, stack = [E.ArchipelagoError], [E.ArchipelagoError]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub.__module__ == E.__name__ and sub not in found:
                found.append(sub)
                stack.append(sub)
    return found


def test_every_class_has_its_published_numbers() -> None:
    assert set(_all()) == set(STABLE), "a new error class needs a row in STABLE (and the README)"
    for cls, row in STABLE.items():
        assert (cls.code, cls.errno, cls.exit_code, cls.http_status) == row, cls.__name__


def test_codes_and_exit_codes_are_unique() -> None:
    assert len({c.code for c in STABLE}) == len(STABLE)
    assert len({c.exit_code for c in STABLE}) == len(STABLE)
    assert all(0 < c.exit_code < 64 for c in STABLE)


@pytest.mark.parametrize("cls", list(STABLE), ids=lambda c: c.__name__)
def test_from_code_rebuilds_the_same_class(cls: type[E.ArchipelagoError]) -> None:
    exc = E.from_code(cls.code, "volume 'x' says hi")
    assert type(exc) is cls and exc.message == "volume 'x' says hi"
    assert isinstance(exc, E.ArchipelagoError)


def test_default_message_and_unknown_code() -> None:
    assert E.NotFound().message == "Not found."
    exc = E.from_code("no-such-code", "boom")
    assert type(exc) is E.ArchipelagoError and exc.message == "boom"


@pytest.mark.parametrize(("err", "cls"), [
    (errno.ENOENT, E.NotFound), (errno.EEXIST, E.AlreadyExists), (errno.EINVAL, E.InvalidArgument),
    (errno.ENOSPC, E.NoSpace), (errno.EDQUOT, E.NoSpace), (errno.EROFS, E.ReadOnly),
    (errno.EBUSY, E.Busy), (errno.ETIMEDOUT, E.TimedOut), (errno.ENOTCONN, E.PeerDied),
    (errno.ENAMETOOLONG, E.InvalidArgument), (errno.EPERM, E.ArchipelagoError),
])
def test_from_errno(err: int, cls: type[E.ArchipelagoError]) -> None:
    assert type(E.from_errno(err, "m")) is cls
