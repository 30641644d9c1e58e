"""TLS for NBD over TCP: the instance's pre-shared key and how clients connect with it.

A unix socket is private by its mode (0600 in a 0700 directory), but any local user can
connect to a loopback TCP port: so `archip nbd serve --tcp` runs nbdkit with
``--tls=require`` and either a PSK file (the default: ``DATA_DIR/tls/keys.psk``, one
``username:hexkey`` line, created 0600 when absent) or X.509 certificates
(``[nbd] tls_certificates``: a directory with ca-cert.pem, server-cert.pem and
server-key.pem, as nbdkit and qemu expect). Plain TCP needs an explicit ``--insecure``.
The PSK file is named ``keys.psk`` because qemu's ``tls-creds-psk`` object takes the
directory holding it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from archipelago.errors import ConfigError

#: The PSK identity written into a new key file (clients send it as their username).
PSK_USER = "archip"
#: Files nbdkit needs in a certificates directory (server side).
CERT_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem")


@dataclass(frozen=True)
class TlsSetup:
    """How nbdkit serves TLS, and what a client needs to connect."""

    kind: str  # "psk" | "x509" | "none"
    path: Path | None = None  # PSK file, or certificates directory
    username: str = ""

    def nbdkit_args(self) -> list[str]:
        """nbdkit options for this setup."""
        if self.kind == "psk":
            return ["--tls=require", f"--tls-psk={self.path}"]
        if self.kind == "x509":
            return ["--tls=require", f"--tls-certificates={self.path}"]
        return ["--tls=off"]

    def uri(self, host: str, port: int, volume: str) -> str:
        """The URI libnbd tools (nbdcopy, nbdinfo, fio, Python nbd) take for ``volume``."""
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self.kind == "psk":
            return f"nbds://{self.username}@{hostport}/{volume}?tls-psk-file={self.path}"
        if self.kind == "x509":
            return f"nbds://{hostport}/{volume}?tls-certificates={self.path}"
        return f"nbd://{hostport}/{volume}"

    def qemu_object(self) -> str | None:
        """The ``--object`` qemu-img / qemu-system need (None without TLS)."""
        if self.kind == "psk":
            assert self.path is not None
            return (f"tls-creds-psk,id=tls0,endpoint=client,dir={self.path.parent},"
                    f"username={self.username}")
        if self.kind == "x509":
            return f"tls-creds-x509,id=tls0,endpoint=client,dir={self.path}"
        return None

    def qemu_drive(self, host: str, port: int, volume: str) -> str:
        """qemu ``--image-opts`` / ``-drive`` options for ``volume``."""
        opts = f"driver=nbd,host={host},port={port},export={volume}"
        return opts + (",tls-creds=tls0" if self.kind != "none" else "")

    def describe(self, host: str, port: int) -> dict[str, str | None]:
        """What `archip nbd serve --tcp` prints: the URI and the qemu options."""
        return {
            "tls": self.kind,
            "tls_path": str(self.path) if self.path else None,
            "tls_username": self.username or None,
            "uri": self.uri(host, port, "VOLUME"),
            "qemu_object": self.qemu_object(),
            "qemu_drive": self.qemu_drive(host, port, "VOLUME"),
        }


def psk_username(path: Path) -> str:
    """The first identity in a PSK file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the NBD TLS key {path}: {e.strerror}") from e
    for line in text.splitlines():
        user, sep, key = line.strip().partition(":")
        if sep and user and key:
            return user
    raise ConfigError(f"{path} holds no 'username:hexkey' line")


def ensure_psk(path: Path) -> Path:
    """Create the PSK file (0600, its directory 0700) unless it exists; refuse a shared one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    except OSError as e:
        raise ConfigError(f"cannot create the NBD TLS key {path}: {e.strerror}") from e
    else:
        try:
            os.write(fd, f"{PSK_USER}:{secrets.token_hex(32)}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"the NBD TLS key {path} is readable by others: chmod 600 it")
    return path


def tls_setup(psk: str, certificates: str, insecure: bool) -> TlsSetup:
    """The TLS of a TCP export: certificates if configured, else the PSK (made if absent)."""
    if insecure:
        return TlsSetup("none")
    if certificates:
        d = Path(certificates)
        missing = [f for f in CERT_FILES if not (d / f).is_file()]
        if missing:
            raise ConfigError(f"NBD TLS certificates directory {d} lacks {', '.join(missing)}")
        return TlsSetup("x509", d)
    path = ensure_psk(Path(psk))
    return TlsSetup("psk", path, psk_username(path))
