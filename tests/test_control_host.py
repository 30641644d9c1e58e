"""The control-plane plugin host: discovery, database and migrations, the event outbox,
the API server mounting plugin sub-apps beside the gateway, the CLI hook."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from api_helpers import ApiServer
from host_plugin import EchoConfig, EchoPlugin, notes

from archipelago import config as cfgmod
from archipelago.errors import Busy, ConfigError, InvalidArgument
from archipelago.instance import Instance
from control.host import registry
from control.host.events import outbox
from control.host.host import Host
from control.host.migrate import schema_diff
from control.host.plugin import Event, Plugin

ARCHIP = [sys.executable, "-m", "control"]


def _config(tmp_path: Path) -> Any:
    cfg = cfgmod.load(tmp_path, env={})
    cfg.echo = EchoConfig(greeting="hi")
    return cfg


def _host(tmp_path: Path) -> Host:
    return Host(Instance(tmp_path).ensure(), _config(tmp_path), plugin_classes=[EchoPlugin])


async def test_open_migrates_once_and_the_file_is_private(tmp_path: Path) -> None:
    host = _host(tmp_path)
    try:
        await host.open()
        await host.open()  # idempotent: every process opens (server and each CLI command)
        st = await host.migrator.status(host.db)
        assert st == {"host": {"current": "host_0001", "head": "host_0001"},
                      "echo": {"current": "echo_0001", "head": "echo_0001"}}
        assert await schema_diff(host.db, EchoPlugin.tables) == []
        from control.host.events import metadata as host_tables
        assert await schema_diff(host.db, host_tables) == []
    finally:
        await host.close()
    mode = stat.S_IMODE((tmp_path / "control.db").stat().st_mode)
    assert mode == 0o600


async def test_schema_diff_sees_a_table_the_migrations_forgot(tmp_path: Path) -> None:
    host = _host(tmp_path)
    try:
        await host.open()
        extra = sa.MetaData()
        sa.Table("echo_forgotten", extra, sa.Column("id", sa.Integer, primary_key=True))
        diff = await schema_diff(host.db, extra)
        assert [d[0] for d in diff] == ["add_table"]
    finally:
        await host.close()


async def test_events_are_delivered_after_commit_only(tmp_path: Path) -> None:
    host = _host(tmp_path)
    echo = host.plugin("echo")
    assert isinstance(echo, EchoPlugin)
    try:
        await host.open()
        nid = await echo.service.add("one")
        assert await echo.service.get(nid) == "one"
        assert len(echo.handled) == 1 and await host.events.pending() == 0
        with pytest.raises(RuntimeError):
            await echo.service.add("two", fail=True)  # rolled back: no row, no event
        async with host.db.read() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(notes))
                    ).scalar_one() == 1
            assert (await conn.execute(sa.select(sa.func.count()).select_from(outbox))
                    ).scalar_one() == 1
        assert len(echo.handled) == 1
    finally:
        await host.close()


async def test_a_failing_handler_keeps_the_event_for_redelivery(tmp_path: Path) -> None:
    host = _host(tmp_path)
    echo = host.plugin("echo")
    assert isinstance(echo, EchoPlugin)
    try:
        await host.open()
        echo.fail_handler = True
        await echo.service.add("kept")  # the change commits even though delivery fails
        assert host.events.failures == 1 and await host.events.pending() == 1
        echo.fail_handler = False
        assert await host.events.deliver_pending() == 1
        assert len(echo.handled) == 1 and await host.events.pending() == 0
        assert await host.events.deliver_pending() == 0
        # A redelivery of the same event (at least once) is recognised by its id.
        async with host.db.read() as conn:
            row = (await conn.execute(sa.select(outbox))).one()
        await echo.on_noted(Event(row.type, json.loads(row.payload), row.id, row.occurred_at))
        assert len(echo.handled) == 1
    finally:
        await host.close()


async def test_a_crash_between_commit_and_delivery_is_delivered_on_start(tmp_path: Path) -> None:
    host = _host(tmp_path)
    try:
        await host.open()
        async with host.db.begin() as conn:  # the commit happens; the process "dies" before
            await host.events.emit(conn, Event("echo.noted", {"id": 0, "text": "x"}))
            conn.info["archip.events"].clear()  # ...delivery (simulated crash)
        assert await host.events.pending() == 1
    finally:
        await host.close()
    host = _host(tmp_path)
    try:
        await host.open()
        await host.start()  # the API server's start delivers the outbox
        echo = host.plugin("echo")
        assert isinstance(echo, EchoPlugin) and len(echo.handled) == 1 and echo.started
        assert await host.events.pending() == 0
    finally:
        await host.close()
    assert not echo.started


async def test_emit_needs_a_host_transaction(tmp_path: Path) -> None:
    host = _host(tmp_path)
    try:
        await host.open()
        async with host.db.engine.begin() as conn:
            with pytest.raises(InvalidArgument):
                await host.events.emit(conn, Event("echo.noted", {}))
        async with host.db.begin() as conn:
            with pytest.raises(InvalidArgument, match="not JSON"):
                await host.events.emit(conn, Event("echo.noted", {"x": object()}))
    finally:
        await host.close()


def test_requires_and_unknown_plugins_are_config_errors(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    class Needy(Plugin):
        name = "needy"
        requires = ("echo",)

    classes = {"needy": Needy, "echo": EchoPlugin}

    def load(name: str) -> type[Plugin]:
        if name not in classes:
            raise ConfigError(f"[control] plugins names {name!r}, which is not installed")
        return classes[name]

    monkeypatch.setattr(registry, "load_class", load)
    cfg = cfgmod.load(tmp_path, overrides=['control.plugins=["needy"]'], env={})
    with pytest.raises(ConfigError, match="'needy' requires plugin 'echo'"):
        registry.enabled(cfg)
    cfg.control.plugins = ["needy", "echo"]
    assert [c.name for c in registry.enabled(cfg)] == ["echo", "needy"]  # required first
    cfg.control.plugins = ["nosuch"]
    with pytest.raises(ConfigError, match="nosuch"):
        registry.enabled(cfg)


def test_plugins_config_is_a_list_of_names(tmp_path: Path) -> None:
    assert cfgmod.load(tmp_path, env={}).control.plugins == cfgmod.Config().control.plugins
    with pytest.raises(ConfigError, match="control.plugins"):
        cfgmod.load(tmp_path, overrides=["control.plugins=identity"], env={})
    with pytest.raises(ConfigError, match="control.plugins"):
        cfgmod.load(tmp_path, overrides=["control.plugins=[1]"], env={})
    with pytest.raises(ConfigError, match="database URL"):
        Host(Instance(tmp_path), cfgmod.load(tmp_path, env={}), database_url="nonsense://")


def _api(tmp_path: Path) -> ApiServer:
    return ApiServer(tmp_path, plugins=[], plugin_classes=[EchoPlugin],
                     configure=lambda c: setattr(c, "echo", EchoConfig(greeting="hi")))


def test_api_server_mounts_plugin_apps_beside_the_gateway(tmp_path: Path) -> None:
    with _api(tmp_path) as api:
        assert requests.get(api.url + "/echo/v1").json() == {"greeting": "hi"}
        r = requests.post(api.url + "/echo/v1/notes", json={"text": "hello"})
        assert r.status_code == 201
        nid = r.json()["id"]
        assert requests.get(f"{api.url}/echo/v1/notes/{nid}").json() == {"text": "hello"}
        echo = api.host.plugin("echo")
        assert isinstance(echo, EchoPlugin) and len(echo.handled) == 1 and echo.started
        # Plugin faults are JSON in the OpenStack shape; the gateway keeps its own.
        r = requests.get(api.url + "/echo/v1/notes/999")
        assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404
        r = requests.post(api.url + "/echo/v1/notes", data=b"{not json",
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "malformed JSON" in r.json()["badRequest"]["message"]
        r = requests.post(api.url + "/echo/v1/notes", data=b"x" * (2 << 20))
        assert r.status_code == 413 and "overLimit" in r.json()
        r = requests.get(api.url + "/echo/v1/nosuch")
        assert r.status_code == 404 and "itemNotFound" in r.json()
        r = requests.delete(api.url + "/echo/v1/notes/1")
        assert r.status_code == 405 and "badMethod" in r.json()
        assert requests.get(api.url + "/info").status_code == 200
        r = requests.get(api.url + "/v1/someone")
        # Swift-style error page (text/html, as Swift answers errors), not an API JSON error.
        assert r.status_code == 401 and r.headers["Content-Type"].startswith("text/html")
        catalog = api.host.ctx.catalog("http://x", "u1")
        assert {e["type"] for e in catalog} == {"object-store", "image", "echo"}
        store = next(e for e in catalog if e["type"] == "object-store")
        assert store["endpoints"][0]["publicURL"] == "http://x/object-store/v1/u1"
    assert not echo.started


def test_cli_db_status_and_plugin_commands(tmp_path: Path) -> None:
    env = {**os.environ, "ARCHIPELAGO_DATA_DIR": str(tmp_path)}
    env.pop("ARCHIPELAGO_CONFIG", None)
    r = subprocess.run([*ARCHIP, "--json", "db", "status"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["branches"]["host"] == {"current": "host_0001", "head": "host_0001"}
    assert doc["url"].endswith("/control.db") and doc["outbox_pending"] == 0
    r = subprocess.run([*ARCHIP, "-o", 'control.plugins=["nosuch"]', "db", "upgrade"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == ConfigError.exit_code and "nosuch" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_db_copy_refuses_while_the_api_server_runs(tmp_path: Path) -> None:
    env = {**os.environ, "ARCHIPELAGO_DATA_DIR": str(tmp_path)}
    env.pop("ARCHIPELAGO_CONFIG", None)
    inst = Instance(tmp_path)
    inst.run_dir.mkdir(parents=True, exist_ok=True)
    # a live API server as `gateway start` records it (this test process stands in for it)
    (inst.run_dir / "gateway.json").write_text(json.dumps({"url": "http://x", "pid": os.getpid()}))
    target = f"sqlite+aiosqlite:///{tmp_path / 'target.db'}"
    cmd = [*ARCHIP, "db", "copy", "--to", target]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == Busy.exit_code and "is running" in r.stderr, r.stderr
    assert not (tmp_path / "target.db").exists()  # nothing was touched
    (inst.run_dir / "gateway.json").unlink()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
