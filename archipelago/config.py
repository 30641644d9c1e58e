"""One TOML configuration with documented defaults, as nested dataclasses.

Load order (later wins): built-in defaults < DATA_DIR/archipelago.toml (if present)
< $ARCHIPELAGO_CONFIG or --config FILE < CLI overrides ("section.key=value").
Unknown keys and wrongly typed values raise ConfigError naming the dotted key.

Adding a key is one dataclass field: ``name: type = field(default, metadata=doc("..."))``.
Adding a section is one dataclass plus one field of :class:`Config`.
Empty path strings mean "derive from the instance data directory" (see :func:`resolve`).
Control-plane plugins add their own sections through the entry-point group
``archipelago.config`` (section name -> dataclass), see :func:`config_class`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archipelago.errors import ConfigError

#: Environment variable naming an extra config file (overridden by --config).
CONFIG_ENV = "ARCHIPELAGO_CONFIG"


def doc(text: str, choices: tuple[str, ...] = ()) -> dict[str, Any]:
    """Field metadata: a one-line description and optional allowed values."""
    return {"doc": text, "choices": choices}


@dataclass
class FileBlockerConfig:
    """[blocker.file]: the embedded local-file object store."""

    path: str = field(default="", metadata=doc("object store directory (empty: DATA_DIR/blocks)"))
    fsync: bool = field(default=True, metadata=doc("fdatasync on flush/FUA and fsync dirs"))


@dataclass
class RadosBlockerConfig:
    """[blocker.rados]: a Ceph RADOS pool."""

    conffile: str = field(default="/etc/ceph/ceph.conf", metadata=doc("ceph.conf path"))
    pool: str = field(default="archipelago", metadata=doc("RADOS pool holding blocks and maps"))
    namespace: str = field(default="", metadata=doc("RADOS namespace inside the pool"))
    timeout: float = field(default=30.0, metadata=doc("seconds before an operation fails"))


@dataclass
class BlockerConfig:
    """[blocker]: where blocks and maps live."""

    backend: str = field(
        default="file",
        metadata=doc("object store backend", choices=("file", "memory", "rados")),
    )
    file: FileBlockerConfig = field(default_factory=FileBlockerConfig)
    rados: RadosBlockerConfig = field(default_factory=RadosBlockerConfig)


@dataclass
class PeersConfig:
    """[peers]: the shared-memory segment and the peer processes."""

    blockers: int = field(default=2, metadata=doc("number of blocker peer processes"))
    mapper_threads: int = field(default=4, metadata=doc("worker threads of the mapper peer"))
    max_inflight: int = field(default=256, metadata=doc("requests in flight per peer"))
    segment_size: int = field(
        default=256 * 1024 * 1024, metadata=doc("bytes of the /dev/shm segment (data arena)")
    )
    request_slots: int = field(default=1024, metadata=doc("request descriptors in the segment"))
    request_timeout: float = field(
        default=60.0, metadata=doc("seconds before a client gives up on a reply")
    )


@dataclass
class NbdConfig:
    """[nbd]: the nbdkit export."""

    socket: str = field(default="", metadata=doc("NBD unix socket (empty: DATA_DIR/nbd.sock)"))
    default_export: str = field(default="", metadata=doc("volume served to clients naming none"))
    threads: int = field(default=16, metadata=doc("nbdkit worker threads"))
    cfilter: bool = field(default=True, metadata=doc(
        "put the C filter archip-fast (pread/pwrite of cached blocks without Python) in "
        "front of the plugin when it is built (scripts/install.sh)"))
    tls_psk: str = field(default="", metadata=doc(
        "PSK file (username:hexkey lines) of `archip nbd serve --tcp`, created 0600 when "
        "absent (empty: DATA_DIR/tls/keys.psk)"))
    tls_certificates: str = field(default="", metadata=doc(
        "directory with ca-cert.pem, server-cert.pem, server-key.pem: TCP NBD uses these "
        "X.509 certificates instead of the PSK (empty: the PSK)"))


@dataclass
class GatewayConfig:
    """[gateway]: the Pithos+/Swift HTTP gateway."""

    listen: str = field(default="127.0.0.1:8080", metadata=doc("host:port to bind (loopback)"))
    with_daemon: bool = field(
        default=False, metadata=doc("`archip daemon start` also runs the gateway (like --gateway)")
    )
    etag: str = field(
        default="md5", metadata=doc("object ETag algorithm", choices=("md5", "merkle"))
    )
    assembled_md5_limit: int = field(default=256 << 20, metadata=doc(
        "bytes: objects assembled by hashmap PUT or partial updates above this size get "
        "their Merkle root as ETag (an MD5 would hash every byte)"))
    client_timeout: float = field(default=60.0, metadata=doc(
        "seconds a client may stall mid-headers or mid-body (or idle between requests) "
        "before its connection is closed (408 mid-body), as Swift's client_timeout"))
    max_file_size: int = field(default=1 << 40, metadata=doc(
        "bytes: the largest object one PUT may store (advertised in /info); larger files "
        "go up as segments with a static or dynamic large object manifest"))
    hashmap_scope: str = field(default="account", metadata=doc(
        "blocks a hashmap PUT may name: those its account references or uploaded "
        "(account), or any stored block (global: knowing a block's hash reads it)",
        choices=("account", "global")))


@dataclass
class ControlConfig:
    """[control]: the control-plane plugin host (identity, compute, billing, ui)."""

    plugins: list[str] = field(
        default_factory=lambda: ["identity"],
        metadata=doc("control-plane plugins the API server runs (entry points archipelago.control)"))
    database: str = field(default="", metadata=doc(
        "deprecated spelling of [database] url (used when that is empty)"))
    public_url: str = field(default="", metadata=doc(
        "base URL clients see in the service catalog (empty: from each request's Host)"))


@dataclass
class DatabaseConfig:
    """[database]: the metadata database of the gateway and the control plane."""

    url: str = field(default="", metadata=doc(
        "SQLAlchemy URL shared by the gateway and the control plane (empty: SQLite files "
        "DATA_DIR/gateway.db and DATA_DIR/control.db; postgresql+asyncpg://... when several "
        "hosts share one Ceph pool)"))
    pool_size: int = field(default=5, metadata=doc(
        "connections each pool keeps open to PostgreSQL (a process has one for the gateway, "
        "one for the control plane)"))


def database_url(cfg: Config) -> str:
    """The configured database URL: [database] url, else the deprecated [control] database."""
    return cfg.database.url or cfg.control.database


@dataclass
class GcConfig:
    """[gc]: garbage collection and scrub run by the daemon (docs/gc.md)."""

    interval: float = field(default=86400.0, metadata=doc(
        "seconds between the daemon's garbage collections (0: never; `archip gc` runs one)"))
    grace: float = field(default=3600.0, metadata=doc(
        "seconds: unreferenced objects younger than this are kept (uploads in flight)"))
    scrub_interval: float = field(default=0.0, metadata=doc(
        "seconds between the daemon's slow scrubs (0: never; `archip scrub` runs one)"))
    scrub_bytes_per_second: int = field(default=16 * 1024 * 1024, metadata=doc(
        "I/O budget of the daemon's periodic scrub (bytes re-hashed per second)"))


@dataclass
class MetricsConfig:
    """[metrics]: the daemon's Prometheus endpoint (docs/metrics.md)."""

    listen: str = field(default="127.0.0.1:9464", metadata=doc(
        "host:port of the Prometheus exposition (loopback; empty: off; port 0: any free)"))


@dataclass
class Config:
    """The whole effective configuration."""

    blocker: BlockerConfig = field(default_factory=BlockerConfig)
    peers: PeersConfig = field(default_factory=PeersConfig)
    nbd: NbdConfig = field(default_factory=NbdConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    gc: GcConfig = field(default_factory=GcConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for JSON and TOML output)."""
        return dataclasses.asdict(self)


#: Entry-point group of extra top-level sections: name -> dataclass (control-plane plugins).
SECTIONS_GROUP = "archipelago.config"


@functools.cache
def config_class() -> type[Config]:
    """Config plus one field per section registered in the ``archipelago.config`` group.

    The sections of every installed plugin are known (enabled or not), so a key of a
    disabled plugin is accepted while a misspelt one is still an error.
    """
    from importlib.metadata import entry_points

    extra = []
    for ep in sorted(entry_points(group=SECTIONS_GROUP), key=lambda e: e.name):
        if ep.name in {f.name for f in dataclasses.fields(Config)}:
            raise ConfigError(f"config section {ep.name!r} of {ep.value} clashes with a core one")
        cls = ep.load()
        extra.append((ep.name, cls, field(default_factory=cls)))
    if not extra:
        return Config
    return dataclasses.make_dataclass("Config", extra, bases=(Config,))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_value(key: str, value: Any, typ: Any, choices: tuple[str, ...]) -> Any:
    if typing.get_origin(typ) is list:
        (item,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        return [_check_value(key, v, item, choices) for v in value]
    # bool is an int subclass: check it first so "blockers = true" is refused.
    if typ is bool:
        ok = isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif typ is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, typ)
    if not ok:
        name = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"config key {key!r}: expected {name}, got {value!r}")
    if choices and value not in choices:
        raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(choices)}")
    return value


def _apply(obj: Any, data: dict[str, Any], prefix: str, origin: str) -> None:
    """Overlay ``data`` onto dataclass ``obj`` in place, validating every key."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.')!r} must be a table ({origin})")
    hints = _hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        dotted = prefix + key
        f = fields.get(key)
        if f is None:
            raise ConfigError(f"unknown config key {dotted!r} ({origin})")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            _apply(getattr(obj, key), value, dotted + ".", origin)
        else:
            choices = tuple(f.metadata.get("choices", ()))
            setattr(obj, key, _check_value(dotted, value, typ, choices))


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse one TOML file; ConfigError on absence or syntax error."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r}: {e}") from e
    except OSError as e:
        raise ConfigError(f"config file {str(path)!r}: {e.strerror}") from e


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is TOML when it parses, else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"bad override {text!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {path[-1]: value}
    for part in reversed(path[:-1]):
        out = {part: out}
    return out


def load(
    data_dir: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Config:
    """Build the effective Config from defaults, files and overrides (see module doc)."""
    env = os.environ if env is None else env
    cfg = config_class()()
    if data_dir is not None:
        local = Path(data_dir) / "archipelago.toml"
        if local.is_file():
            _apply(cfg, read_toml(local), "", str(local))
    extra = config_file if config_file is not None else env.get(CONFIG_ENV) or None
    if extra is not None:
        _apply(cfg, read_toml(extra), "", str(extra))
    for text in overrides or []:
        path, value = parse_override(text)
        _apply(cfg, _nest(path, value), "", f"override {text!r}")
    if data_dir is not None:
        resolve(cfg, Path(data_dir))
    return cfg


def resolve(cfg: Config, data_dir: Path) -> Config:
    """Fill empty paths from the data directory and make relative paths absolute."""
    def fix(value: str, default: Path) -> str:
        if not value:
            return str(default)
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else data_dir / p)

    cfg.blocker.file.path = fix(cfg.blocker.file.path, data_dir / "blocks")
    cfg.nbd.socket = fix(cfg.nbd.socket, data_dir / "nbd.sock")
    cfg.nbd.tls_psk = fix(cfg.nbd.tls_psk, data_dir / "tls" / "keys.psk")
    if cfg.nbd.tls_certificates:
        cfg.nbd.tls_certificates = fix(cfg.nbd.tls_certificates, data_dir)
    if cfg.blocker.rados.conffile:  # a relative ceph.conf is relative to the data dir too
        cfg.blocker.rados.conffile = fix(cfg.blocker.rados.conffile, data_dir)
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    s = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def to_toml(cfg: Config, commented: bool = False) -> str:
    """Render a Config as TOML; ``commented`` gives the sample file (every key commented out)."""
    lines: list[str] = []

    def emit(obj: Any, prefix: str) -> None:
        scalars = [f for f in dataclasses.fields(obj) if not dataclasses.is_dataclass(
            _hints(type(obj))[f.name])]
        tables = [f for f in dataclasses.fields(obj) if f not in scalars]
        if prefix and scalars:
            lines.append("")
            if type(obj).__doc__:
                lines.append(f"# {type(obj).__doc__.strip().split(': ', 1)[-1]}")
            lines.append(f"[{prefix}]")
        for f in scalars:
            note = f.metadata.get("doc", "")
            choices = f.metadata.get("choices", ())
            if choices:
                note += f" ({' | '.join(choices)})"
            if commented and note:
                lines.append(f"# {note}")
            line = f"{f.name} = {_toml_value(getattr(obj, f.name))}"
            lines.append(f"# {line}" if commented else line)
        for f in tables:
            emit(getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name)

    emit(cfg, "")
    return "\n".join(lines).lstrip("\n") + "\n"
