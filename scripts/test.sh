#!/bin/bash
# README command (2): install everything, start a throwaway Ceph, run every test and ruff.
# Exits non-zero on any failure, including "no tests collected" (pytest exit code 5).
# Extra arguments go to pytest (e.g. scripts/test.sh tests/test_config.py -x).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh

ceph_dir=""
pg_dir=""
cleanup() {
  if [ -n "$ceph_dir" ]; then
    .venv/bin/python tests/ceph_cluster.py down "$ceph_dir" >&2 || true
    rm -rf "$ceph_dir"
  fi
  if [ -n "$pg_dir" ]; then
    .venv/bin/python tests/pg_cluster.py down "$pg_dir" >&2 || true
    rm -rf "$pg_dir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -f tests/ceph_cluster.py ]; then
  ceph_dir=$(mktemp -d /tmp/archipelago-ceph.XXXXXX)
  # --watch-pid: a watchdog tears the cluster down even if this shell is killed.
  conf=$(.venv/bin/python tests/ceph_cluster.py up "$ceph_dir" --watch-pid $$ | tail -n 1)
  if [ ! -f "$conf" ]; then
    echo "test.sh: ceph_cluster.py up did not print a ceph.conf path (got '$conf')" >&2
    exit 1
  fi
  export ARCHIPELAGO_CEPH_CONF="$conf"
else
  echo "test.sh: tests/ceph_cluster.py absent: RADOS tests will be skipped" >&2
fi

if [ -f tests/pg_cluster.py ]; then
  pg_dir=$(mktemp -d /tmp/archipelago-pg.XXXXXX)
  # A throwaway PostgreSQL (unix socket only) for the tests of the shared metadata store.
  pg_url=$(.venv/bin/python tests/pg_cluster.py up "$pg_dir" --watch-pid $$ | tail -n 1)
  case "$pg_url" in
    postgresql*) export ARCHIPELAGO_PG_URL="$pg_url" ;;
    *) echo "test.sh: pg_cluster.py up did not print a URL (got '$pg_url')" >&2; exit 1 ;;
  esac
fi

# OpenStack Swift's own functional tests against a started gateway (about 2 minutes;
# the swift sdist and its test venv are cached under ~/.cache/archipelago).
sf_rc=0
bash scripts/swift-functional.sh || sf_rc=$?

rc=0
# -X faulthandler: a crash (even at interpreter exit) prints the Python stacks.
# --durations: the slowest tests, to keep the suite inside its ~20-minute budget.
.venv/bin/python -X faulthandler -m pytest -q -p no:cacheprovider --durations=25 "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: failing" >&2
  rc=1
fi
ruff_rc=0
.venv/bin/ruff check --no-cache . || ruff_rc=$?
if [ "$rc" -ne 0 ] || [ "$ruff_rc" -ne 0 ] || [ "$sf_rc" -ne 0 ]; then
  echo "test.sh: FAILED (pytest exit $rc, ruff exit $ruff_rc, swift-functional exit $sf_rc)" >&2
  exit 1
fi
echo "test.sh: all tests and ruff passed" >&2
