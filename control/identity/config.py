"""[identity]: the identity plugin's settings (kept import-light: the config loader reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from archipelago.config import doc


@dataclass
class IdentityConfig:
    """[identity]: users, tokens, login providers and default quotas (Astakos)."""

    token_lifetime: int = field(default=30 * 86400, metadata=doc(
        "seconds a token stays valid (default 30 days)"))
    token_cache_ttl: float = field(default=5.0, metadata=doc(
        "seconds a validated token stays cached in the API server (0: off); a revocation "
        "by another process (CLI, second API server) takes effect after at most this"))
    login_attempts: int = field(default=5, metadata=doc(
        "failed logins per user name or client address per login_window before 429"))
    login_window: float = field(default=300.0, metadata=doc(
        "seconds over which failed logins are counted"))
    default_diskspace: int = field(default=50 << 30, metadata=doc(
        "pithos.diskspace limit of a user's system project, bytes"))
    admin_name: str = field(default="admin", metadata=doc(
        "name of the admin user created on first start (credentials in DATA_DIR/admin.json)"))
    proxy_header: str = field(default="", metadata=doc(
        "trusted front-proxy login: request header carrying the user name set by the "
        "reverse proxy (e.g. Shibboleth's REMOTE_USER as X-Remote-User); empty: off"))
    proxy_addresses: list[str] = field(default_factory=list, metadata=doc(
        "client addresses (IPs or CIDRs) of the reverse proxies whose proxy_header is trusted"))
    proxy_create_users: bool = field(default=False, metadata=doc(
        "create a user on the first front-proxy login of an unknown name"))
