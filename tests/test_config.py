"""Configuration: defaults, load order, unknown keys, types, instances and the sample."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from archipelago import config as cfgmod
from archipelago.blocker import open_blocker
from archipelago.blocker.file import FileBlocker
from archipelago.blocker.memory import MemoryBlocker
from archipelago.config import Config, load
from archipelago.errors import ConfigError
from archipelago.instance import Instance, default_data_dir

REPO = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    cfg = Config()
    assert cfg.blocker.backend == "file"
    assert cfg.blocker.file.fsync is True
    assert cfg.blocker.rados.timeout == 30.0
    assert cfg.peers.blockers == 2
    assert cfg.gateway.listen == "127.0.0.1:8080"
    assert cfg.gateway.etag == "md5"


def test_empty_paths_derive_from_data_dir(tmp_path: Path) -> None:
    cfg = load(tmp_path, env={})
    assert cfg.blocker.file.path == str(tmp_path / "blocks")
    assert cfg.nbd.socket == str(tmp_path / "nbd.sock")


def test_load_order(tmp_path: Path) -> None:
    (tmp_path / "archipelago.toml").write_text(
        '[blocker]\nbackend = "memory"\n[peers]\nblockers = 3\nmapper_threads = 7\n')
    extra = tmp_path / "extra.toml"
    extra.write_text("[peers]\nblockers = 5\n[blocker.file]\npath = 'rel/dir'\n")
    cfg = load(tmp_path, env={})
    assert (cfg.blocker.backend, cfg.peers.blockers, cfg.peers.mapper_threads) == ("memory", 3, 7)
    cfg = load(tmp_path, env={"ARCHIPELAGO_CONFIG": str(extra)})
    assert (cfg.peers.blockers, cfg.peers.mapper_threads) == (5, 7)
    assert cfg.blocker.file.path == str(tmp_path / "rel/dir")  # relative to the data dir
    cfg = load(tmp_path, config_file=extra, overrides=["peers.blockers=9", "gateway.listen=127.0.0.1:9"],
               env={"ARCHIPELAGO_CONFIG": "/nonexistent"})
    assert cfg.peers.blockers == 9
    assert cfg.gateway.listen == "127.0.0.1:9"  # non-TOML override values are strings


@pytest.mark.parametrize(("text", "key"), [
    ("[blocker]\nbakend = 'file'\n", "blocker.bakend"),
    ("[blocker.file]\nfsnyc = false\n", "blocker.file.fsnyc"),
    ("[nosuch]\nx = 1\n", "nosuch"),
    ("toplevel = 1\n", "toplevel"),
])
def test_unknown_keys_are_named(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, config_file=f, env={})
    assert repr(key) in ei.value.message
    assert str(f) in ei.value.message
    assert ei.value.exit_code == 15


@pytest.mark.parametrize(("override", "fragment"), [
    ("peers.blockers=true", "peers.blockers"),
    ("peers.blockers='two'", "peers.blockers"),
    ("blocker.file.fsync=1", "blocker.file.fsync"),
    ("blocker.backend=ceph", "not one of"),
    ("blocker.file=3", "must be a table"),
    ("noequals", "expected section.key=value"),
])
def test_bad_values(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load(None, overrides=[override], env={})


def test_ints_are_accepted_for_floats() -> None:
    cfg = load(None, overrides=["blocker.rados.timeout=5"], env={})
    assert cfg.blocker.rados.timeout == 5.0 and isinstance(cfg.blocker.rados.timeout, float)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path, config_file=tmp_path / "absent.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[peers\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        load(tmp_path, config_file=broken, env={})


def test_toml_round_trip(tmp_path: Path) -> None:
    cfg = load(tmp_path, overrides=["peers.blockers=4", 'nbd.default_export="vm1"'], env={})
    f = tmp_path / "round.toml"
    f.write_text(cfgmod.to_toml(cfg))
    assert load(None, config_file=f, env={}) == cfg


def test_shipped_sample_matches_the_defaults() -> None:
    from control.cmd_config import sample_text

    sample = REPO / "etc" / "archipelago.toml.sample"
    assert sample.read_text() == sample_text(), (
        "etc/archipelago.toml.sample is stale: regenerate with "
        "`.venv/bin/archip config sample > etc/archipelago.toml.sample`")
    # Every key is documented in it.
    def keys(obj: object, prefix: str = "") -> list[str]:
        out = []
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                out += keys(value, f"{prefix}{f.name}.")
            else:
                assert f.metadata.get("doc"), f"config key {prefix}{f.name} has no doc"
                out.append(f.name)
        return out
    for key in keys(Config()):
        assert f"# {key} = " in sample.read_text()


def test_open_blocker_by_backend(tmp_path: Path) -> None:
    b = open_blocker(load(tmp_path, env={}))
    assert isinstance(b, FileBlocker) and b.root == str(tmp_path / "blocks")
    b._pool.shutdown()
    assert isinstance(open_blocker(load(tmp_path, overrides=["blocker.backend=memory"], env={})),
                      MemoryBlocker)


def test_instance_paths_are_isolated(tmp_path: Path) -> None:
    a, b = Instance.from_args(tmp_path / "a"), Instance.from_args(tmp_path / "b")
    for attr in ("config_path", "blocks_dir", "segment_name", "control_socket", "nbd_socket",
                 "daemon_pid", "gateway_pid", "log_file", "gateway_log"):
        assert getattr(a, attr) != getattr(b, attr), attr
    assert a.segment_name.startswith("archipelago-") and "/" not in a.segment_name
    assert Instance.from_args(tmp_path / "a" / ".." / "a").segment_name == a.segment_name
    a.ensure()
    for d in (a.data_dir, a.run_dir, a.log_dir):
        assert d.is_dir() and (d.stat().st_mode & 0o777) == 0o700


def test_instance_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"ARCHIPELAGO_DATA_DIR": str(tmp_path / "env")}
    assert Instance.from_args(None, env=env).data_dir == tmp_path / "env"
    assert Instance.from_args(tmp_path / "flag", env=env).data_dir == tmp_path / "flag"
    if os.geteuid() == 0:
        assert default_data_dir({}) == Path("/var/lib/archipelago")
    else:
        assert default_data_dir({"XDG_DATA_HOME": "/x"}) == Path("/x/archipelago")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_data_dir({"XDG_DATA_HOME": "/x"}) == Path("/x/archipelago")
    assert default_data_dir({}) == Path.home() / ".local/share/archipelago"
    with pytest.raises(ConfigError, match="too long"):
        Instance(tmp_path).check_socket_path(tmp_path / ("s" * 120))


@pytest.mark.rados
async def test_open_blocker_rados_from_config(tmp_path: Path) -> None:
    import uuid

    conf = os.environ.get("ARCHIPELAGO_CEPH_CONF")
    if not conf:
        pytest.skip("ARCHIPELAGO_CEPH_CONF is unset: no Ceph cluster (scripts/test.sh starts one)")
    ns = f"test-{uuid.uuid4().hex}"
    cfg = load(tmp_path, env={}, overrides=[
        "blocker.backend=rados", f"blocker.rados.conffile={conf}",
        "blocker.rados.pool=archipelago-test", f"blocker.rados.namespace={ns}"])
    b = open_blocker(cfg)
    try:
        assert b.kind == "rados"
        await b.put("cfg-obj", b"via config")
        assert await b.read("cfg-obj", 0, 10) == b"via config"
        await b.delete("cfg-obj")
    finally:
        await b.close()
