"""Per-instance paths: everything a running archipelago owns derives from one data dir.

Two instances with different data directories never share a config file, object
store, shared-memory segment, socket, pid file or log file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from archipelago.config import Config
from archipelago.config import load as load_config
from archipelago.errors import ConfigError

#: Environment variable selecting the instance (overridden by --data-dir).
DATA_DIR_ENV = "ARCHIPELAGO_DATA_DIR"
#: Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


def default_data_dir(env: dict[str, str] | None = None) -> Path:
    """/var/lib/archipelago for root, else $XDG_DATA_HOME/archipelago (~/.local/share)."""
    env = os.environ if env is None else env
    if os.geteuid() == 0:
        return Path("/var/lib/archipelago")
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "archipelago"


@dataclass(frozen=True)
class Instance:
    """The paths of one archipelago instance, derived from its data directory."""

    data_dir: Path

    @classmethod
    def from_args(cls, data_dir: str | os.PathLike[str] | None = None,
                  env: dict[str, str] | None = None) -> Instance:
        """Pick the instance: explicit dir, else $ARCHIPELAGO_DATA_DIR, else the default."""
        env = os.environ if env is None else env
        chosen = data_dir or env.get(DATA_DIR_ENV) or default_data_dir(env)
        return cls(Path(chosen).expanduser().resolve())

    @property
    def config_path(self) -> Path:
        """DATA_DIR/archipelago.toml (read when present)."""
        return self.data_dir / "archipelago.toml"

    @property
    def blocks_dir(self) -> Path:
        """Default directory of the file blocker."""
        return self.data_dir / "blocks"

    @property
    def run_dir(self) -> Path:
        """Sockets and pid files."""
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        """Log files."""
        return self.data_dir / "log"

    @property
    def segment_name(self) -> str:
        """Shared-memory segment name, unique per data dir (file /dev/shm/<name>)."""
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return f"archipelago-{digest}"

    @property
    def segment_path(self) -> Path:
        """Where the segment appears on Linux."""
        return Path("/dev/shm") / self.segment_name

    @property
    def control_socket(self) -> Path:
        """Unix socket of the daemon's control endpoint."""
        return self.run_dir / "control.sock"

    @property
    def nbd_socket(self) -> Path:
        """Default NBD unix socket (config nbd.socket overrides)."""
        return self.data_dir / "nbd.sock"

    @property
    def daemon_pid(self) -> Path:
        """Pid file of the supervisor daemon."""
        return self.run_dir / "daemon.pid"

    @property
    def daemon_lock(self) -> Path:
        """The supervisor's flock: held for as long as the daemon runs."""
        return self.run_dir / "daemon.lock"

    def daemon_running(self) -> bool:
        """True while a supervisor holds the instance's daemon lock."""
        if not self.daemon_lock.exists():
            return False
        with open(self.daemon_lock, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False

    @property
    def nbd_pid(self) -> Path:
        """Pid file of nbdkit."""
        return self.run_dir / "nbdkit.pid"

    @property
    def gateway_pid(self) -> Path:
        """Pid file of the gateway."""
        return self.run_dir / "gateway.pid"

    @property
    def log_file(self) -> Path:
        """Daemon log."""
        return self.log_dir / "archipelago.log"

    @property
    def gateway_log(self) -> Path:
        """Gateway log."""
        return self.log_dir / "gateway.log"

    @property
    def nbd_log(self) -> Path:
        """nbdkit log."""
        return self.log_dir / "nbdkit.log"

    def ensure(self) -> Instance:
        """Create the instance directories (mode 0700) and return self."""
        for d in (self.data_dir, self.run_dir, self.log_dir):
            try:
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
            except FileExistsError as e:  # mkdir(exist_ok) only raises this for a non-directory
                raise ConfigError(f"cannot use {d}: it exists and is not a directory") from e
            except OSError as e:
                raise ConfigError(f"cannot create {d}: {e.strerror}") from e
        return self

    def check_socket_path(self, path: Path) -> Path:
        """ConfigError when a unix socket path is too long for the kernel."""
        if len(os.fsencode(str(path))) > MAX_SOCKET_PATH:
            raise ConfigError(f"socket path too long ({MAX_SOCKET_PATH} bytes max): {path}")
        return path

    def config(self, config_file: str | os.PathLike[str] | None = None,
               overrides: list[str] | None = None) -> Config:
        """The effective config of this instance (paths resolved against data_dir)."""
        return load_config(self.data_dir, config_file, overrides)
