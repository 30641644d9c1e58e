#!/bin/bash
# README command (1): install, then start archipelago on its embedded default (file
# backend in the default instance directory) and show it working.
# ARCHIPELAGO_DATA_DIR (or the first argument) selects another instance directory.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh
if [ $# -gt 0 ]; then export ARCHIPELAGO_DATA_DIR="$1"; fi

archip=(.venv/bin/archip)
py=.venv/bin/python
die() { echo "!! $*" >&2; exit 1; }
"${archip[@]}" --version
"${archip[@]}" config paths
"${archip[@]}" selftest

# The daemon (issue 6): start it on the file backend (with nbdkit on DIR/nbd.sock), create a
# volume, import a small generated disk image, snapshot and clone it. The daemon is LEFT
# RUNNING so the volumes stay usable (archip volume list, archip nbd uri VOL); stop it with
# `archip daemon stop`.
#
# The control plane (identity, compute, billing, ui) runs in the daemon's API server when
# [control] plugins names them. A fresh instance gets DIR/archipelago.toml saying so (the
# instance's own file, nothing system-wide); an existing file is never edited: when it does
# not enable them, every command below passes them with -o instead.
plugins='["identity","compute","billing","ui"]'
data_dir=$("${archip[@]}" --json config paths | $py -c 'import json,sys; print(json.load(sys.stdin)["data_dir"])')
conf="$data_dir/archipelago.toml"
if [ ! -e "$conf" ]; then
    echo "== write $conf: [control] plugins = $plugins"
    (umask 077; mkdir -p "$data_dir" && printf '[control]\nplugins = %s\n' "$plugins" > "$conf")
fi
has_plugins() {  # the effective config enables all four
    "${archip[@]}" --json config show | $py -c 'import json,sys
p = json.load(sys.stdin)["control"]["plugins"]
sys.exit(0 if {"identity", "compute", "billing", "ui"} <= set(p) else 1)'
}
if ! has_plugins; then
    echo "== $conf does not enable them: the demo passes -o control.plugins=$plugins"
    archip+=(-o "control.plugins=$plugins")
fi
if "${archip[@]}" daemon status >/dev/null 2>&1; then
    echo "== daemon already running"
else
    echo "== archip daemon start --gateway"
    "${archip[@]}" daemon start --gateway
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
"${archip[@]}" volume create "demo-empty-$run" --size 1G
echo "== archip import (generated 64 MiB image) demo-$run"
"${archip[@]}" import --no-progress "$img" "demo-$run"
echo "== archip import the same image again (every data block deduplicated)"
"${archip[@]}" import --no-progress "$img" "demo-again-$run"
echo "== archip volume snapshot demo-$run demo-$run-snap"
"${archip[@]}" volume snapshot "demo-$run" "demo-$run-snap"
echo "== archip volume clone demo-$run-snap demo-$run-clone --size 128M"
"${archip[@]}" volume clone "demo-$run-snap" "demo-$run-clone" --size 128M
out=$(mktemp --suffix=.raw)
"${archip[@]}" export --no-progress "demo-$run-clone" "$out"
if cmp -s -n $((64 << 20)) "$img" "$out"; then echo "== the clone reads back the imported image byte for byte"; fi
rm -f "$out"

# The Pithos+/Swift gateway (issue 9): a child of the daemon on 127.0.0.1 ([gateway] listen,
# default 127.0.0.1:8080), storing objects as content blocks through the blocker peers. A demo
# user uploads a small disk image with the Swift API, registers it as a Plankton image, and a
# volume is made from it as a thin clone (no block copied), read back over NBD.
if ! "${archip[@]}" gateway status >/dev/null 2>&1; then
    echo "== archip gateway start (the running daemon was started without --gateway)"
    "${archip[@]}" gateway start
fi
gateway_url() {  # wait (bounded) for the gateway to answer and print its URL
    local url=""
    for _ in $(seq 1 150); do
        url=$("${archip[@]}" --json gateway status 2>/dev/null | $py -c \
            'import json,sys; print(json.load(sys.stdin)["url"] or "")' || true)
        [ -n "$url" ] && break
        sleep 0.2
    done
    [ -n "$url" ] || die "the gateway did not come up (see $("${archip[@]}" config paths | head -1))"
    echo "$url"
}
serves_plugins() {  # the running API server lists compute, billing and ui in its catalog
    $py - "$1" "$data_dir/admin.json" <<'PY'
import json, sys, urllib.request
url, admin = sys.argv[1], json.load(open(sys.argv[2]))
body = json.dumps({"auth": {"passwordCredentials": {
    "username": admin["name"], "password": admin["password"]}}}).encode()
req = urllib.request.Request(f"{url}/identity/v2.0/tokens", data=body, method="POST",
                             headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    types = {e["type"] for e in json.load(r)["access"]["serviceCatalog"]}
sys.exit(0 if {"compute", "billing", "ui"} <= types else 1)
PY
}
gw=$(gateway_url)
if ! serves_plugins "$gw" 2>/dev/null; then
    # The daemon was started before the plugins were enabled: restart its API server (the
    # gateway child) or, when the daemon owns it, the daemon. Its VMs, if any, stop too.
    if "${archip[@]}" gateway stop >/dev/null 2>&1; then
        echo "== archip gateway start (the running gateway did not run the plugins)"
        "${archip[@]}" gateway start
    else
        echo "== archip daemon stop; archip daemon start --gateway (the running daemon did not run the plugins)"
        "${archip[@]}" daemon stop
        "${archip[@]}" daemon start --gateway
    fi
    gw=$(gateway_url)
    serves_plugins "$gw" || die "the API server at $gw does not run the plugins $plugins"
fi
echo "== archip gateway status"
"${archip[@]}" gateway status
echo "== archip gateway user add demo$run"
key=$("${archip[@]}" gateway user add "demo$run")
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
"${archip[@]}" volume create --from-image "$image_id" "demo-$run-from-image"
uri=$("${archip[@]}" nbd uri "demo-$run-from-image")
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
"${archip[@]}" volume list
echo "== archip daemon status"
"${archip[@]}" daemon status
# A user (identity): the instance's admin credentials are in DIR/admin.json (0600); a demo
# user gets a token and uses Swift with it.
echo "== the admin's credentials: $data_dir/admin.json"
$py - "$data_dir/admin.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
print(f"   admin {a['name']} ({a['uuid']}); its password is in the file (mode 0600)")
PY
user="demo-$run"
password=$($py -c 'import secrets; print(secrets.token_urlsafe(12))')
echo "== archip user add $user --password-stdin"
user_json=$("${archip[@]}" --json user add "$user" --password-stdin <<< "$password")
read -r uuid token < <($py -c 'import json,sys; u = json.load(sys.stdin); print(u["uuid"], u["token"])' <<< "$user_json")
echo "   user $user: uuid $uuid, token ${token:0:8}... (valid [identity] token_lifetime)"
echo "== Swift API with the token: create a container, upload an object, list them"
$py - "$gw" "$uuid" "$token" <<'PY' || die "the Swift calls with the user's token failed"
import sys, urllib.request
url, account, token = sys.argv[1:]
base = f"{url}/object-store/v1/{account}"
def call(method, u, body=None):
    req = urllib.request.Request(u, data=body, method=method, headers={"X-Auth-Token": token})
    with urllib.request.urlopen(req, timeout=60) as r:
        print(f"   {method} {u.replace(url, '')} -> {r.status}")
        return r.read()
call("PUT", f"{base}/docs")
call("PUT", f"{base}/docs/hello.txt", b"hello from the demo\n")
print("   objects: " + call("GET", f"{base}/docs").decode().strip())
PY

# A VM from an image (compute): the test guest (tests/guest: a Debian kernel and a busybox
# initramfs that prints GUEST-* lines on its console and powers off), uploaded as kernel
# (aki), ramdisk (ari) and a raw disk naming both; [compute] accel = auto uses KVM when a
# probe guest runs under it, else TCG.
digest=$(sha256sum tests/guest/build.sh | cut -c1-12)
guest=${ARCHIPELAGO_GUEST_CACHE:-${TMPDIR:-/tmp}/archipelago-guest-$digest}
if [ ! -f "$guest/vmlinuz" ] || [ ! -f "$guest/initrd.gz" ]; then
    echo "== bash tests/guest/build.sh $guest (once per machine)"
    build=$(mktemp -d "${TMPDIR:-/tmp}/archipelago-guest-build-XXXXXX")
    bash tests/guest/build.sh "$build" >"$build.log" 2>&1 || die "building the test guest failed (see $build.log)"
    mv -T "$build" "$guest" 2>/dev/null || rm -rf "$build"  # a concurrent build won: same files
    rm -f "$build.log"
fi
disk=$(mktemp --suffix=.raw)
trap 'rm -f "$img" "$small" "$back" "$disk"' EXIT
$py - "$disk" "DEMO-DISK-$run" <<'PY'
import sys
# 64 MiB sparse disk: a marker the guest reads back (GUEST-READ vda ...), holes elsewhere.
with open(sys.argv[1], "wb") as f:
    f.truncate(64 << 20)
    f.write(sys.argv[2].encode())
PY
echo "== archip image upload (kernel aki, ramdisk ari, disk raw with kernel_id/ramdisk_id) --user $user"
id_of() { $py -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
kernel=$("${archip[@]}" --json image upload "$guest/vmlinuz" --name "demo-vmlinuz-$run" --disk-format aki --user "$user" | id_of)
ramdisk=$("${archip[@]}" --json image upload "$guest/initrd.gz" --name "demo-initrd-$run" --disk-format ari --user "$user" | id_of)
image=$("${archip[@]}" --json image upload "$disk" --name "demo-disk-$run" --disk-format raw \
    --property "kernel_id=$kernel" --property "ramdisk_id=$ramdisk" --user "$user" | id_of)
echo "   kernel $kernel, ramdisk $ramdisk, disk image $image"
echo "== archip flavor create demo-tiny-$run --vcpus 1 --ram 256 --disk 1"
"${archip[@]}" flavor create "demo-tiny-$run" --vcpus 1 --ram 256 --disk 1
echo "== archip server create demo-vm-$run --image $image --flavor demo-tiny-$run --user $user"
"${archip[@]}" server create "demo-vm-$run" --image "$image" --flavor "demo-tiny-$run" --user "$user"
echo "== archip server console demo-vm-$run (wait up to 300 s for GUEST-DONE)"
console=""
for _ in $(seq 1 300); do
    console=$("${archip[@]}" server console "demo-vm-$run" 2>/dev/null || true)
    grep -q '^GUEST-DONE' <<< "${console//$'\r'/}" && break
    sleep 1
done
grep '^GUEST-' <<< "${console//$'\r'/}" | sed 's/^/   /' || true
grep -q '^GUEST-DONE' <<< "${console//$'\r'/}" \
    || die "the VM did not print GUEST-DONE within 300 s (see archip server console demo-vm-$run)"
grep -q "^GUEST-READ vda DEMO-DISK-$run" <<< "${console//$'\r'/}" \
    || die "the VM did not read the image's marker from its disk"
echo "== archip server list"
"${archip[@]}" server list
echo "== archip server delete demo-vm-$run"
"${archip[@]}" server delete "demo-vm-$run"

# Billing: the user's wallet (credits added minus charges at [billing] prices) and this
# month's bill (the VM's time, the stored bytes).
echo "== archip billing credit $user 100"
"${archip[@]}" billing credit "$user" 100
echo "== archip billing balance $user"
"${archip[@]}" billing balance "$user"
echo "== archip billing bill $user"
"${archip[@]}" billing bill "$user"

# The web UI: the same API server serves it.
echo "== the web UI: $gw/ui/ (log in as $user with password $password, or as the admin"
echo "   with the name and password in $data_dir/admin.json)"

# Name the instance: a shell without ARCHIPELAGO_DATA_DIR would stop the default one.
if [ "${#archip[@]}" -gt 1 ]; then
    echo "(This instance's config does not enable the plugins: give other archip commands -o control.plugins='$plugins' too.)"
fi
echo "The daemon is still running, with its API server at $gw (stop both with: $archip${ARCHIPELAGO_DATA_DIR:+ --data-dir $ARCHIPELAGO_DATA_DIR} daemon stop)."
