"""The import contract of docs/design.md §2: dependencies point one way.

Every first-party import (top level or inside a function) is checked against RULES: the
most specific rule for the importing module lists the packages it may import. A new
import that breaks the direction fails this test; a known one that cannot move yet is
in EXCEPTIONS with the reason. The checker itself is tested on a synthetic tree below.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Top-level packages this repository owns (imports of anything else are not checked).
FIRST_PARTY = ("archipelago", "control", "pithos_gw", "benchmarks", "testbed", "tests")

#: Foundation modules of the core: anything in the repository may import them.
_BASE = ("archipelago.errors", "archipelago.hashing", "archipelago.config",
         "archipelago.instance", "archipelago.metrics", "archipelago.native",
         "archipelago._native", "archipelago.wire", "archipelago.db")
_PLUGINS = ("control.identity", "control.billing", "control.compute", "control.ui")

#: tests/ modules that are not test modules (helpers, conftest, subprocess scripts).
_HELPERS = "tests.<not test_*>"

#: importer prefix -> import prefixes it may use (its own package too, except for tests).
#: The longest matching importer prefix wins; "archipelago" alone is the package root.
RULES: dict[str, tuple[str, ...]] = {
    "archipelago": ("archipelago",),  # archipelago/__init__.py re-exports nothing but a version
    "archipelago.errors": (),
    "archipelago.config": ("archipelago.errors",),
    "archipelago.hashing": ("archipelago.errors", "archipelago.native"),
    "archipelago.instance": ("archipelago.config", "archipelago.errors"),
    "archipelago.metrics": ("archipelago.errors",),
    "archipelago.native": ("archipelago.errors", "archipelago.hashing", "archipelago._native"),
    "archipelago.wire": ("archipelago.errors",),
    # The metadata databases' engine (SQLAlchemy), shared by the gateway and the control plane.
    "archipelago.db": ("archipelago.errors",),
    # Object stores: only the foundation (blocker/__init__ says so).
    "archipelago.blocker": _BASE,
    # Segment, rings, ports, client API: the foundation only (design: peers -> native).
    "archipelago.peers": _BASE,
    # Maps and volume operations over the blocker contract.
    "archipelago.mapper": (*_BASE, "archipelago.blocker"),
    # The client library talks to the daemon's mapper peer over the segment.
    "archipelago.client": (*_BASE, "archipelago.peers"),
    # Direct block access (docs/fastpath.md): object files of the file blocker, the map
    # format to read entries; used by the mapper peer and by NBD clients alike.
    "archipelago.blockaccess": (*_BASE, "archipelago.blocker", "archipelago.mapper.format"),
    # nbd -> peers (client side); the direct backend is the exception (see EXCEPTIONS).
    "archipelago.nbd": (*_BASE, "archipelago.peers", "archipelago.client",
                        "archipelago.blockaccess"),
    # GC, scrub, diffs: offline work over a blocker and its maps.
    "archipelago.upkeep": (*_BASE, "archipelago.blocker", "archipelago.mapper"),
    # The running daemon's peers: everything in the core but the CLI-facing supervisor module.
    "archipelago.service": (*_BASE, "archipelago.peers", "archipelago.mapper",
                            "archipelago.blocker", "archipelago.upkeep", "archipelago.blockaccess"),
    # The supervisor entry module: the whole core, never pithos_gw/control (started as commands).
    "archipelago.daemon": ("archipelago",),
    # The gateway: the core's client side and blocker contract; never the supervisor
    # module, the daemon's peers, the mapper internals or the CLI.
    "pithos_gw": (*_BASE, "archipelago.blocker", "archipelago.peers", "archipelago.client"),
    # The CLI and the plugin host: everything in the core, and the gateway's process
    # entry points (app, server, handle); never its storage (meta*, plankton, store).
    "control": ("archipelago", "control", "pithos_gw.app", "pithos_gw.server", "pithos_gw.handle"),
    # A plugin: the core, the host's interfaces and its own package (others: EXCEPTIONS).
    **{p: ("archipelago", "control.host", "control.context", "control.volume_fmt") for p in _PLUGINS},
    # Benchmarks: anything shipped plus the shared test bed; never tests/.
    "benchmarks": ("archipelago", "pithos_gw", "control", "testbed"),
    # The throwaway Ceph cluster and RADOS helpers shared by tests and benchmarks.
    "testbed": ("archipelago",),
    # Tests: anything shipped, the test bed and tests/*_helpers.py (+ conftest), not
    # another test module and not benchmarks (see EXCEPTIONS).
    "tests": ("archipelago", "pithos_gw", "control", "testbed", _HELPERS),
}

#: (importer, imported) pairs allowed against RULES, each with the reason it stays.
#: Match is by prefix on both sides. Keep this list short; remove rows as code moves.
EXCEPTIONS: dict[tuple[str, str], str] = {
    # The direct NBD backend runs the mapper (and its blocker) inside nbdkit, like qemu-nbd
    # on a file: the one place nbd may use the mapper library (nbd/__init__.py says so).
    ("archipelago.nbd.backend", "archipelago.mapper"): "direct backend: the mapper in-process",
    ("archipelago.nbd.backend", "archipelago.blocker"): "direct backend: the mapper in-process",
    ("archipelago.nbd.direct_store", "archipelago.blocker"): "direct backend: builds its blocker",
    # The map cache's fence holds (PathFences) live beside FenceFiles, whose lock protocol
    # they share (docs/fencing.md).
    ("archipelago.nbd.peer_cache", "archipelago.blocker.fence"): "fence holds of in-place writers",
    # The plugin's shared code sweeps scratch clones of dead nbdkits (a pid check).
    ("archipelago.nbd.exports", "archipelago.blocker.base"): "pid_alive: scratch clones of dead nbdkits",
    # Compute quotas are identity resources (design §8: plugins talk through small interfaces).
    ("control.compute.quota", "control.identity.quotas"): "identity's quota interface (Resource, provisions)",
    # Plankton images as ExtStorage disks: the compute plugin reads the gateway's registry.
    ("control.compute.extstorage", "pithos_gw"): "ExtStorage image disks (issue 22 area)",
    ("control.identity.service", "pithos_gw.hooks"): "the gateway's quota hook resource name",
    # Still to move (issue 19); each row says what replaces it.
    # `volume create --from-image` reads the image's hashmap from the gateway's database. As
    # a gateway operation it needs a local admin channel to the gateway (the CLI has no
    # gateway credentials without the identity plugin): not built yet.
    ("control.cmd_volume", "pithos_gw.plankton"): "image -> volume should be a gateway operation",
    # `archip gateway user ...` administers the gateway's users in its database, offline.
    ("control.cmd_gateway", "pithos_gw.meta"): "offline gateway user administration",
    # Test modules that re-run another module's tests under a different setup: pytest collects
    # the imported test functions again (the blocker contract over the segment; the fast-peer
    # scenarios behind the C filter).
    ("tests.test_peers_remote", "tests.test_blocker_contract"): "the contract over RemoteBlocker",
    ("tests.test_nbd_cfilter", "tests.test_fastpeer"): "the fast-peer scenarios behind the filter",
    # A test may import the code it tests: this one is the unit test of benchmarks' report.
    ("tests.test_bench_report", "benchmarks"): "unit test of benchmarks/report.py and plots.py",
}


@dataclass(frozen=True)
class Import:
    """One first-party import: who, what, where."""

    importer: str
    imported: str
    path: str
    line: int


def module_name(root: Path, path: Path) -> str:
    """Dotted name of a source file under ``root`` (tests/ files are ``tests.<stem>``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: Path, dotted: str) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _resolve(root: Path, importer: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    if not node.level:
        base = node.module or ""
    else:
        pkg = importer.split(".") if is_pkg else importer.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    # ``from pkg import mod`` imports the submodule mod; ``from mod import name`` imports mod.
    subs = [f"{base}.{a.name}" for a in node.names if _is_module(root, f"{base}.{a.name}")]
    return subs if subs and len(subs) == len(node.names) else [base, *subs]


def imports_of(root: Path, local_top: set[str]) -> list[Import]:
    """Every first-party import in the repository at ``root``.

    ``local_top`` are the module names tests import bare (tests/ is on sys.path there):
    ``from daemon_helpers import X`` in tests/ is read as ``tests.daemon_helpers``.
    """
    found: dict[tuple[str, str], Import] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] not in FIRST_PARTY:
            continue
        importer = module_name(root, path)
        in_tests = rel.parts[0] == "tests"
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = _resolve(root, importer, path.name == "__init__.py", node)
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if in_tests and top in local_top:
                    name = f"tests.{name}"
                elif top not in FIRST_PARTY:
                    continue
                found.setdefault((importer, name), Import(importer, name, str(rel), node.lineno))
    return list(found.values())


def _under(name: str, prefix: str) -> bool:
    if prefix == _HELPERS:
        parts = name.split(".")
        return parts[0] == "tests" and len(parts) > 1 and not parts[1].startswith("test_")
    return name == prefix or name.startswith(prefix + ".")


def _rule_for(importer: str, rules: dict[str, tuple[str, ...]]) -> str | None:
    best = None
    for prefix in rules:
        if _under(importer, prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def violations(found: list[Import], rules: dict[str, tuple[str, ...]],
               exceptions: dict[tuple[str, str], str]) -> list[str]:
    """Imports no rule allows and no exception lists, one line each."""
    bad = []
    for imp in found:
        rule = _rule_for(imp.importer, rules)
        if rule is None:
            bad.append(f"{imp.path}:{imp.line}: {imp.importer} has no rule in RULES")
            continue
        # A package may import itself, except tests/: a test module imports helpers only.
        allowed = rules[rule] if rule == "tests" else (*rules[rule], rule)
        if any(_under(imp.imported, a) for a in allowed):
            continue
        if any(_under(imp.importer, a) and _under(imp.imported, b) for a, b in exceptions):
            continue
        bad.append(f"{imp.path}:{imp.line}: {imp.importer} imports {imp.imported} (rule {rule!r})")
    return bad


def _tests_local(root: Path) -> set[str]:
    tests = root / "tests"
    return {p.stem for p in tests.glob("*.py")} | {p.name for p in tests.iterdir()
                                                  if (p / "__init__.py").exists()}


def test_imports_follow_the_design() -> None:
    found = imports_of(ROOT, _tests_local(ROOT))
    assert len(found) > 500  # the walk saw the repository
    bad = violations(found, RULES, EXCEPTIONS)
    assert not bad, "imports against docs/design.md §2:\n" + "\n".join(bad)


def test_every_exception_is_still_used() -> None:
    found = imports_of(ROOT, _tests_local(ROOT))
    unused = [pair for pair in EXCEPTIONS
              if not any(_under(i.importer, pair[0]) and _under(i.imported, pair[1]) for i in found)]
    assert not unused, f"remove these EXCEPTIONS rows, nothing needs them any more: {unused}"


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_checker_flags_a_new_violation(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "archipelago/__init__.py": "",
        "archipelago/errors.py": "",
        "archipelago/peers/__init__.py": "from archipelago.errors import X\n",
        "archipelago/peers/bad.py": "def f():\n    from archipelago.blocker import base\n",
        "archipelago/peers/rel.py": "from ..mapper import m\n",
        "archipelago/blocker/__init__.py": "",
        "archipelago/mapper/m.py": "from archipelago.blocker.base import Blocker\n",
        "pithos_gw/server.py": "import archipelago.daemon\n",
        "tests/test_a.py": "from test_b import strategy\nfrom x_helpers import y\nimport conftest\n",
        "tests/conftest.py": "",
        "tests/test_b.py": "",
        "tests/x_helpers.py": "",
        "benchmarks/b.py": "from tests.x_helpers import y\n",
    })
    found = imports_of(tmp_path, {"test_a", "test_b", "x_helpers", "conftest"})
    bad = violations(found, RULES, {})
    text = "\n".join(bad)
    assert "archipelago.peers.bad imports archipelago.blocker" in text  # lazy import seen
    assert "archipelago.peers.rel imports archipelago.mapper" in text  # relative import resolved
    assert "pithos_gw.server imports archipelago.daemon" in text
    assert "tests.test_a imports tests.test_b" in text
    assert "benchmarks.b imports tests.x_helpers" in text
    assert "x_helpers" not in text.replace("benchmarks.b imports tests.x_helpers", "")
    assert "conftest" not in text
    assert "archipelago.mapper.m imports" not in text and "archipelago.peers imports" not in text
    # An exception row silences exactly its pair.
    allowed = violations(found, RULES, {("pithos_gw.server", "archipelago.daemon"): "why"})
    assert len(allowed) == len(bad) - 1


def test_benchmarks_do_not_run_files_of_tests() -> None:
    # An import is not the only coupling: running tests/ceph_cluster.py by path is one too.
    bad = []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value == "tests" or node.value.startswith("tests/")):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not bad, "benchmarks use files of tests/ (move them to testbed/):\n" + "\n".join(bad)
