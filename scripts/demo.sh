#!/bin/bash
# README command (1): install, then start archipelago on its embedded default (file
# backend in the default instance directory) and show it working.
# ARCHIPELAGO_DATA_DIR (or the first argument) selects another instance directory.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh
if [ $# -gt 0 ]; then export ARCHIPELAGO_DATA_DIR="$1"; fi

archip=.venv/bin/archip
$archip --version
$archip config paths
$archip selftest

# The daemon (issue 6): start it on the file backend (with nbdkit on DIR/nbd.sock), create a
# volume, import a small generated disk image, snapshot and clone it. The daemon is LEFT
# RUNNING so the volumes stay usable (archip volume list, archip nbd uri VOL); stop it with
# `archip daemon stop`.
if $archip daemon status >/dev/null 2>&1; then
    echo "== daemon already running"
else
    echo "== archip daemon start"
    $archip daemon start
fi
run=$(date +%H%M%S)
img=$(mktemp --suffix=.raw)
trap 'rm -f "$img"' EXIT
.venv/bin/python - "$img" <<'PY'
import os, random, sys
# 64 MiB sparse image: a "boot sector", some random data blocks, a zero-filled block, holes.
r = random.Random(42)
with open(sys.argv[1], "wb") as f:
    f.truncate(64 << 20)
    f.write(b"\xeb\x63\x90ARCHIPELAGO DEMO".ljust(510, b"\0") + b"\x55\xaa")
    for blk in (2, 3, 9):
        os.pwrite(f.fileno(), r.randbytes(3 << 20), blk * (4 << 20) + 4096)
    os.pwrite(f.fileno(), bytes(4 << 20), 12 * (4 << 20))
PY
echo "== archip volume create demo-empty-$run --size 1G"
$archip volume create "demo-empty-$run" --size 1G
echo "== archip import (generated 64 MiB image) demo-$run"
$archip import --no-progress "$img" "demo-$run"
echo "== archip import the same image again (every data block deduplicated)"
$archip import --no-progress "$img" "demo-again-$run"
echo "== archip volume snapshot demo-$run demo-$run-snap"
$archip volume snapshot "demo-$run" "demo-$run-snap"
echo "== archip volume clone demo-$run-snap demo-$run-clone --size 128M"
$archip volume clone "demo-$run-snap" "demo-$run-clone" --size 128M
out=$(mktemp --suffix=.raw)
$archip export --no-progress "demo-$run-clone" "$out"
if cmp -s -n $((64 << 20)) "$img" "$out"; then echo "== the clone reads back the imported image byte for byte"; fi
rm -f "$out"
echo "== archip volume list"
$archip volume list
echo "== archip daemon status"
$archip daemon status
echo "The daemon is still running (stop it with: $archip daemon stop)."
