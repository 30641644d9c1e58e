"""[ui]: the web UI plugin's settings (registered in the archipelago.config entry points)."""

from __future__ import annotations

from dataclasses import dataclass, field

from archipelago.config import doc


@dataclass
class UiConfig:
    """[ui]: the web UI at /ui/ on the API server."""

    session_lifetime: int = field(default=8 * 3600, metadata=doc(
        "seconds a web UI session (its identity token) stays valid after login"))
    secure_cookie: bool = field(default=False, metadata=doc(
        "always mark the session cookie Secure (set it when a TLS proxy fronts the API "
        "server; over direct TLS the cookie is Secure anyway)"))
