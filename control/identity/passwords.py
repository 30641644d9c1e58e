"""Password hashes: scrypt (hashlib), checked in constant time.

Format ``scrypt$N$r$p$<salt b64>$<hash b64>``. A check against an unknown user still runs
scrypt over a dummy hash, so a wrong name costs the same time as a wrong password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

#: scrypt cost: N=2^14, r=8 (16 MiB, ~50 ms per check on one core).
N, R, P = 1 << 14, 8, 1
_MAXMEM = 64 << 20
#: Longest password accepted (scrypt hashes anything; this only bounds the work).
MAX_PASSWORD = 1024


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def hash_password(password: str) -> str:
    """A fresh salted scrypt hash of ``password``."""
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=_MAXMEM)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(dk)}"


_DUMMY = hash_password(secrets.token_urlsafe(16))


def verify_password(password: str, stored: str | None) -> bool:
    """True when ``password`` matches ``stored`` (None or malformed: False, same cost)."""
    try:
        kind, n, r, p, salt, want = (stored or _DUMMY).split("$")
        ok = kind == "scrypt" and stored is not None
        params = (int(n), int(r), int(p))
        salt_b, want_b = base64.b64decode(salt), base64.b64decode(want)
    except (ValueError, TypeError):
        ok, params = False, (N, R, P)
        salt_b, want_b = b"0" * 16, b"0" * 64
    dk = hashlib.scrypt(password.encode()[:MAX_PASSWORD * 4], salt=salt_b, n=params[0],
                        r=params[1], p=params[2], maxmem=_MAXMEM, dklen=len(want_b) or 64)
    return hmac.compare_digest(dk, want_b) and ok


def new_token() -> str:
    """A new token: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)
