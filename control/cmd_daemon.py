"""`archip daemon start|stop|status`: the supervised mapper and blocker peers of an instance."""

from __future__ import annotations

import argparse
import json
import os
import time

from archipelago import daemon
from archipelago.errors import InvalidArgument, NotRunning
from control.context import get_config, get_instance, print_json, wants_json


def backend_overrides(args: argparse.Namespace) -> list[str]:
    """`-o` overrides for --backend/--ceph-conf/--pool/--namespace (rados keys imply rados)."""
    rados = {"conffile": getattr(args, "ceph_conf", None), "pool": getattr(args, "pool", None),
             "namespace": getattr(args, "namespace", None)}
    rados = {k: v for k, v in rados.items() if v is not None}
    backend = getattr(args, "backend", None) or ("rados" if rados else None)
    if rados and backend != "rados":
        raise InvalidArgument(f"--ceph-conf/--pool/--namespace need --backend rados, "
                              f"not --backend {backend}")
    if "conffile" in rados:
        rados["conffile"] = os.path.abspath(rados["conffile"])  # children may chdir
    # JSON strings are TOML basic strings: a pool named "123" stays a string.
    out = [f"blocker.backend={json.dumps(backend)}"] if backend else []
    return out + [f"blocker.rados.{k}={json.dumps(v)}" for k, v in rados.items()]


def _start(args: argparse.Namespace) -> int:
    inst = get_instance(args).ensure()
    # Flags become config overrides, so every child process (peers, nbdkit) sees them.
    args.overrides = [*(getattr(args, "overrides", None) or []), *backend_overrides(args)]
    cfg = get_config(args, inst)
    overrides = getattr(args, "overrides", None) or []
    config_file = getattr(args, "config", None)
    if args.foreground:
        daemon.check_backend(cfg)  # (the background start() checks in daemon.start)
        return daemon.run_foreground(inst, cfg, config_file, overrides, True, not args.no_nbd,
                                     args.gateway)
    st = daemon.start(inst, config_file, overrides, nbd=not args.no_nbd, gateway=args.gateway)
    if wants_json(args):
        print_json(st)
    else:
        kids = ", ".join(f"{c['name']}:{c['pid']}" for c in st.get("children", []))
        print(f"archipelago daemon started for {inst.data_dir} (pid {st['pid']}; "
              f"{cfg.blocker.backend} backend; {kids})")
    return 0


def _stop(args: argparse.Namespace) -> int:
    inst = get_instance(args)
    t0 = time.monotonic()
    pid = daemon.stop(inst)
    if wants_json(args):
        print_json({"stopped": pid is not None, "pid": pid})
    elif pid is None:
        print(f"archipelago daemon is not running for {inst.data_dir}: nothing to stop")
    else:
        print(f"archipelago daemon (pid {pid}) stopped in {time.monotonic() - t0:.1f}s")
    return 0


def _fmt_status(st: dict) -> str:
    lines = [f"archipelago daemon pid {st.get('pid')} for {st.get('data_dir')} "
             f"({st.get('backend')} backend, {'ready' if st.get('ready') else 'starting'})",
             f"segment {st.get('segment')} ({st.get('segment_committed_bytes', 0) >> 20} of "
             f"{st.get('segment_bytes', 0) >> 20} MiB committed)  registry {st.get('registry')}",
             f"metrics {st.get('metrics_url') or 'off'}",
             f"{'PEER':<12} {'PID':>8} {'PORT':>5} {'RESTARTS':>8}  STATE"]
    for c in st.get("children", []):
        port = "-" if c.get("port") is None else str(c["port"])
        lines.append(f"{c['name']:<12} {c.get('pid') or '-':>8} {port:>5} {c['restarts']:>8}  "
                     f"{'running' if c.get('alive') else 'restarting'}")
    m = st.get("mapper", {})
    if "error" in m:
        lines.append(f"mapper: {m['error']}")
    else:
        inflight = m.get("inflight", 0) + sum(b["inflight"] for b in m.get("blockers", []))
        lines.append(f"requests in flight: {inflight}  served: {m.get('served', 0)}  "
                     f"re-issued after a peer died: {m.get('reissued', 0)}")
        vols = m.get("open_volumes", [])
        lines.append("open volumes: " + (", ".join(
            f"{v['name']} ({v['handles']} handle{'s' if v['handles'] != 1 else ''})"
            for v in vols) or "none"))
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    inst = get_instance(args)
    st = daemon.status(inst)
    if wants_json(args):
        print_json(st)
    elif not st["running"]:
        print(f"archipelago daemon is not running for {inst.data_dir} "
              f"(start it with: archip --data-dir {inst.data_dir} daemon start)")
    else:
        print(_fmt_status(st))
    return 0 if st["running"] else NotRunning.exit_code


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `archip daemon`."""
    p = subparsers.add_parser("daemon", help="start, stop or inspect the archipelago daemon")
    sub = p.add_subparsers(title="daemon commands", metavar="ACTION")
    s = sub.add_parser("start", help="start the supervisor, mapper and blocker peers")
    s.add_argument("--foreground", action="store_true", help="stay attached, log to stderr too")
    s.add_argument("--no-nbd", action="store_true", help="do not run nbdkit on DIR/nbd.sock")
    s.add_argument("--gateway", action="store_true",
                   help="also run the Pithos+/Swift gateway ([gateway] listen)")
    s.add_argument("--backend", choices=("file", "memory", "rados"), default=None,
                   help="object store ([blocker] backend; default from the config: file)")
    s.add_argument("--ceph-conf", metavar="PATH", default=None,
                   help="rados: the cluster's ceph.conf ([blocker.rados] conffile)")
    s.add_argument("--pool", metavar="NAME", default=None,
                   help="rados: pool holding blocks and maps ([blocker.rados] pool)")
    s.add_argument("--namespace", metavar="NS", default=None,
                   help="rados: namespace inside the pool ([blocker.rados] namespace)")
    s.set_defaults(func=_start)
    s = sub.add_parser("stop", help="drain, flush, release locks and stop")
    s.set_defaults(func=_stop)
    s = sub.add_parser("status", help="peers, pids, ports, open volumes, requests in flight")
    s.set_defaults(func=_status)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
