"""The CLI's HTTP client of the API server: URL from run/gateway.json, the instance's admin
token, OpenStack faults turned back into archipelago errors (same exit codes)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from archipelago import errors
from archipelago.errors import ArchipelagoError, NotRunning
from archipelago.instance import Instance

_BY_STATUS: dict[int, type[ArchipelagoError]] = {
    400: errors.InvalidArgument, 401: errors.Unauthorized, 403: errors.Forbidden,
    404: errors.NotFound, 409: errors.Busy, 413: errors.QuotaExceeded, 423: errors.Locked,
    429: errors.TooManyRequests, 501: errors.NotSupported, 503: errors.BackendUnavailable,
    504: errors.TimedOut,
}


def api_url(inst: Instance) -> str:
    """The running API server's base URL (NotRunning naming the command that starts it)."""
    try:
        state = json.loads((inst.run_dir / "gateway.json").read_text())
        return str(state["url"]).rstrip("/")
    except (OSError, ValueError, KeyError):
        raise NotRunning("the API server is not running (start it: archip daemon start "
                         "--gateway, or archip gateway start)") from None


class Api:
    """Blocking JSON calls with one token."""

    def __init__(self, base: str, token: str, timeout: float = 300.0) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None, data: bytes | None = None,
                 headers: dict[str, str] | None = None) -> Any:
        h = {"X-Auth-Token": self.token, **(headers or {})}
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310 -- loopback URL
        except urllib.error.HTTPError as e:
            raise _error(e) from None
        except urllib.error.URLError as e:
            raise NotRunning(f"the API server at {self.base} does not answer: {e.reason}") from None

    def call(self, method: str, path: str, body: Any = None, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:
        """One request; the decoded JSON reply (None when empty)."""
        with self._request(method, path, body, data, headers) as r:
            raw = r.read()
        return json.loads(raw) if raw.strip() else None

    def text(self, path: str) -> bytes:
        """A plain-text GET."""
        with self._request("GET", path) as r:
            return bytes(r.read())

    def stream(self, path: str) -> Iterator[bytes]:
        """A streamed GET, chunk by chunk."""
        with self._request("GET", path) as r:
            while chunk := r.read1(65536):
                yield chunk


def _error(e: urllib.error.HTTPError) -> ArchipelagoError:
    try:
        doc = json.loads(e.read() or b"{}")
        (inner,) = doc.values()
        msg = str(inner.get("message", e.reason))
    except (ValueError, AttributeError, TypeError):
        msg = str(e.reason)
    return _BY_STATUS.get(e.code, ArchipelagoError)(msg)
