"""kill -9 of the API server between a commission's accept and billing's handling of its
event: after a restart the usage event exists exactly once.

The server is a real process (control.host.apiserver) whose event bus SIGKILLs it at
the chosen point; the upload goes through the gateway with a real HTTP client.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from archipelago import config as cfgmod
from archipelago.instance import Instance
from control.billing import tables
from control.host.events import outbox
from control.host.host import Host

KILLER = textwrap.dedent("""
    import os, signal, sys
    from control.host import events as ev

    mode = os.environ["BILLING_CRASH_AT"]
    real = ev.EventBus.deliver

    async def deliver(self, events):
        if any(e.type == "identity.commission.accepted" for e in events):
            if mode == "after-billing":
                # billing records the usage (its own commit), then the process dies
                # before the outbox row is marked delivered
                for e in events:
                    for _owner, handler in self._handlers.get(e.type, []):
                        await handler(e)
            os.kill(os.getpid(), signal.SIGKILL)
        return await real(self, events)

    ev.EventBus.deliver = deliver
    from control.host.apiserver import main
    sys.exit(main(sys.argv[1:]))
""")


class Server:
    """An API server process over ``data_dir`` (optionally with the killer installed)."""

    def __init__(self, data_dir: Path, crash_at: str | None = None) -> None:
        self.state = data_dir / "run" / "gateway.json"
        self.state.unlink(missing_ok=True)
        code = ["-c", KILLER] if crash_at else ["-m", "control.host.apiserver"]
        env = {**os.environ, "BILLING_CRASH_AT": crash_at or ""}
        self.log = (data_dir / f"server-{crash_at or 'plain'}.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, *code, "--data-dir", str(data_dir),
                                      "--listen", "127.0.0.1:0"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.state.exists():
            assert self.proc.poll() is None, "the API server exited at start"
            assert time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.05)
        self.url = json.loads(self.state.read_text())["url"]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit (never leave one running)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def _config(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "archipelago.toml").write_text(
        '[control]\nplugins = ["identity", "billing"]\n[blocker.file]\nfsync = false\n')


def _host_call(data_dir: Path, fn: Any) -> Any:
    async def run() -> Any:
        inst = Instance(data_dir).ensure()
        host = Host(inst, cfgmod.load(inst.data_dir, env={}))
        try:
            await host.open()
            return await fn(host)
        finally:
            await host.close()

    return asyncio.run(run())


async def _setup(host: Host) -> tuple[str, str]:
    user, token = await host.ctx.service("identity").add_user("kim")
    await host.plugin("billing").service.set_price("pithos.diskspace", "1")  # type: ignore[attr-defined]
    return user.uuid, token


async def _rows(host: Host) -> tuple[int, int, int]:
    async with host.db.read() as conn:
        usage = (await conn.execute(sa.select(sa.func.count()).select_from(tables.events).where(
            tables.events.c.type == "identity.commission.accepted"))).scalar_one()
        accepted = (await conn.execute(sa.select(sa.func.count()).select_from(outbox).where(
            outbox.c.type == "identity.commission.accepted"))).scalar_one()
        undelivered = (await conn.execute(sa.select(sa.func.count()).select_from(outbox).where(
            outbox.c.delivered_at.is_(None)))).scalar_one()
    return int(usage), int(accepted), int(undelivered)


@pytest.mark.parametrize("crash_at", ["before-billing", "after-billing"])
def test_kill_9_between_accept_and_its_event_bills_exactly_once(tmp_path: Path, crash_at: str) -> None:
    d = tmp_path / "inst"
    _config(d)
    uuid, token = _host_call(d, _setup)
    h = {"X-Auth-Token": token}
    srv = Server(d, crash_at)
    try:
        base = f"{srv.url}/v1/{uuid}"
        assert requests.put(base + "/c", headers=h, timeout=30).status_code == 201
        with pytest.raises(requests.ConnectionError):
            requests.put(base + "/c/obj", headers=h, data=b"x" * 5000, timeout=60)
        assert srv.proc.wait(30) == -signal.SIGKILL
    finally:
        srv.stop()
    # Dead: the accept and its event are committed; billing has 0 or 1 usage event; the
    # outbox row is not marked delivered.
    usage, accepted, undelivered = _host_call(d, _rows)
    assert (usage, accepted, undelivered) == (0 if crash_at == "before-billing" else 1, 1, 1)
    srv = Server(d)                      # the restart delivers the outbox before it listens
    try:
        r = requests.get(f"{srv.url}/billing/v1/events", headers=h, timeout=30)
        (ev,) = [e for e in r.json()["events"] if e["resource"] == "pithos.diskspace"]
        assert ev["value"] == "5000" and ev["user"] == uuid
        bill = requests.get(f"{srv.url}/billing/v1/bills", headers=h, timeout=30).json()
        assert [line["resource"] for line in bill["lines"]] == ["pithos.diskspace"]
        # The restart's delivery recorded the event (killed before billing) or found it a
        # duplicate (killed after billing, before the outbox row was marked delivered).
        admin = json.loads((d / "admin.json").read_text())
        r = requests.post(f"{srv.url}/identity/v2.0/tokens", timeout=30, json={"auth": {
            "passwordCredentials": {"username": admin["name"], "password": admin["password"]}}})
        status = requests.get(f"{srv.url}/billing/v1/status", timeout=30,
                              headers={"X-Auth-Token": r.json()["access"]["token"]["id"]}).json()
        assert (status["recorded"], status["duplicates"]) == \
            ((1, 0) if crash_at == "before-billing" else (0, 1))
    finally:
        srv.stop()
    assert _host_call(d, _rows) == (1, 1, 0)
    report = _host_call(d, lambda host: host.plugin("billing").service.replay(check=True))
    assert report.to_dict()["ok"]
