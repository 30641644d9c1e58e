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
    echo "== archip daemon start --gateway"
    $archip daemon start --gateway
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

# The Pithos+/Swift gateway (issue 9): a child of the daemon on 127.0.0.1 ([gateway] listen,
# default 127.0.0.1:8080), storing objects as content blocks through the blocker peers. A demo
# user uploads a small disk image with the Swift API, registers it as a Plankton image, and a
# volume is made from it as a thin clone (no block copied), read back over NBD.
if ! $archip gateway status >/dev/null 2>&1; then
    echo "== archip gateway start (the running daemon was started without --gateway)"
    $archip gateway start
fi
gw=""
for _ in $(seq 1 150); do
    gw=$($archip --json gateway status 2>/dev/null | .venv/bin/python -c \
        'import json,sys; print(json.load(sys.stdin)["url"] or "")' || true)
    [ -n "$gw" ] && break
    sleep 0.2
done
if [ -z "$gw" ]; then echo "the gateway did not come up (see $($archip config paths | head -1))"; exit 1; fi
echo "== archip gateway status"
$archip gateway status
echo "== archip gateway user add demo$run"
key=$($archip gateway user add "demo$run")
small=$(mktemp --suffix=.raw)
back=$(mktemp --suffix=.raw)
trap 'rm -f "$img" "$small" "$back"' EXIT
image_id=$(.venv/bin/python - "$gw" "demo$run" "$key" "$small" <<'PY'
import hashlib, json, random, sys, urllib.request
url, user, key, path = sys.argv[1:]
# A small "disk": a boot sector, 5 MiB of data, 1 MiB of zeros (the zero block is never stored).
r = random.Random(9)
data = (b"\xeb\x63\x90ARCHIPELAGO IMAGE".ljust(510, b"\0") + b"\x55\xaa"
        + r.randbytes(5 << 20) + bytes(1 << 20))
open(path, "wb").write(data)

def call(method, u, body=None, headers={}):
    req = urllib.request.Request(u, data=body, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=60) as resp:
        print(f"   {method} {u.replace(url, '')} -> {resp.status}", file=sys.stderr)
        return resp.headers, resp.read()

print("== Swift API: authenticate, create a container, upload the image", file=sys.stderr)
h, _ = call("GET", f"{url}/auth/v1.0", headers={"X-Auth-User": user, "X-Auth-Key": key})
storage, tok = h["X-Storage-Url"], {"X-Auth-Token": h["X-Auth-Token"]}
call("PUT", f"{storage}/images", headers=tok)
h, _ = call("PUT", f"{storage}/images/disk.raw", data, tok)
assert h["ETag"] == hashlib.md5(data).hexdigest()
print(f"   ETag {h['ETag']} (MD5), X-Object-Hash {h.get('X-Object-Hash', '-')}", file=sys.stderr)
print("== Plankton: register the object as an image (no data moves)", file=sys.stderr)
_, body = call("POST", f"{url}/image/v1.0/images", headers={
    **tok, "X-Image-Meta-Name": "demo-image", "X-Image-Meta-Disk-Format": "raw",
    "X-Image-Meta-Location": f"pithos://{storage.rsplit('/', 1)[1]}/images/disk.raw"})
img = json.loads(body)["image"]
print(f"   image {img['id']}: {img['size']} bytes, checksum {img['checksum'][:16]}...",
      file=sys.stderr)
print(img["id"])
PY
)
echo "== archip volume create --from-image $image_id demo-$run-from-image"
$archip volume create --from-image "$image_id" "demo-$run-from-image"
uri=$($archip nbd uri "demo-$run-from-image")
if command -v nbdcopy >/dev/null; then
    echo "== nbdcopy $uri (read the volume back over NBD)"
    nbdcopy "$uri" "$back"
else
    echo "== qemu-img convert $uri (read the volume back over NBD)"
    qemu-img convert -f raw -O raw "$uri" "$back"
fi
if cmp -s -n "$(stat -c %s "$small")" "$small" "$back"; then
    echo "== the volume made from the gateway image reads back the uploaded file byte for byte"
else
    echo "!! the volume does not read back the uploaded file"; exit 1
fi
echo "== archip volume list"
$archip volume list
echo "== archip daemon status"
$archip daemon status
# Name the instance: a shell without ARCHIPELAGO_DATA_DIR would stop the default one.
echo "The daemon is still running (stop it with: $archip${ARCHIPELAGO_DATA_DIR:+ --data-dir $ARCHIPELAGO_DATA_DIR} daemon stop)."
