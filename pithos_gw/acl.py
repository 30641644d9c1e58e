"""Swift container ACLs: X-Container-Read and X-Container-Write.

An ACL is a comma list of grants: ``ACCOUNT`` or ``ACCOUNT:USER`` (an account; the
user part is accepted for tempauth's syntax and names the same account here, where one
account has one user), ``*`` / ``*:*`` (any authenticated requester), ``.r:*`` (anyone,
even without a token, may read objects) and ``.rlistings`` (those who may read may list).
The owner always has full access. Write grants PUT, POST and DELETE of objects, not
reading them (Swift's write-only "drop box" container). Stored in the container's
policy under ``read`` and ``write``; Pithos' per-object sharing is separate and checked
first.
"""

from __future__ import annotations

from aiohttp import web

from pithos_gw.common import META, Target, fail

#: The referrer grants Swift knows; only the catch-all is honoured (no Referer checks).
_REFERRERS = (".r:*",)


def parse_acl(value: str) -> str:
    """A normalised ACL header value (400 when a grant is malformed)."""
    out: list[str] = []
    for raw in value.split(","):
        grant = raw.strip()
        if not grant:
            continue
        if grant.startswith(".") and grant not in _REFERRERS + (".rlistings",):
            if grant.startswith((".r:", ".ref", ".referer", ".referrer")):
                continue  # Referer-based grants: not honoured, as if absent
            fail(400, f"Invalid ACL grant {grant!r}")
        if any(ord(c) < 32 for c in grant) or grant.count(":") > 1:
            fail(400, f"Invalid ACL grant {grant!r}")
        out.append(grant)
    return ",".join(out)


def _grants(policy: dict[str, str], kind: str) -> list[str]:
    return [g for g in policy.get(kind, "").split(",") if g]


def _names(user: str, grants: list[str]) -> bool:
    if not user:
        return False
    for g in grants:
        if g in ("*", "*:*") or g.split(":", 1)[0] == user:
            return True
    return False


async def container_policy(request: web.Request, t: Target) -> dict[str, str] | None:
    """The policy (ACLs included) of ``t``'s container, or None when it does not exist."""
    c = await request.app[META].container_get(t.account, t.container, usage=False)
    return None if c is None else c.policy


async def may_read(request: web.Request, t: Target) -> bool:
    """True when the container's read ACL lets the requester read its objects."""
    policy = await container_policy(request, t)
    if policy is None:
        return False
    grants = _grants(policy, "read")
    return ".r:*" in grants or _names(t.user, grants)


async def may_list(request: web.Request, t: Target) -> bool:
    """True when the read ACL lets the requester list (and HEAD) the container."""
    policy = await container_policy(request, t)
    if policy is None:
        return False
    grants = _grants(policy, "read")
    if _names(t.user, grants):
        return True
    return ".r:*" in grants and ".rlistings" in grants


async def may_write(request: web.Request, t: Target) -> bool:
    """True when the container's write ACL lets the requester write its objects."""
    policy = await container_policy(request, t)
    return policy is not None and _names(t.user, _grants(policy, "write"))
