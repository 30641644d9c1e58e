#!/bin/bash
# Run OpenStack Swift's own functional tests (test/functional of the swift sdist on PyPI)
# against a freshly started archipelago gateway, as a new user of the Swift API would.
#
#   bash scripts/swift-functional.sh [pytest args...]
#
# - Downloads swift==$SWIFT_VERSION (sdist) into a cache ($SWIFT_FUNCTIONAL_CACHE, default
#   ~/.cache/archipelago/swift-functional) and builds the tests' venv there once.
# - Starts `archip gateway start` on a throwaway data dir (identity plugin, as installed)
#   with two users (test, test2), writes the tests' test.conf (v1 auth) and runs the files
#   in $SWIFT_FUNCTIONAL_FILES, deselecting tests/swift_functional_deselect.txt (one test
#   per line, each with the reason after '#').
# - The last line is "swift-functional: N passed, N failed" followed by the deselected and
#   skipped counts and the pass rate (passed / (passed + failed + deselected)).
# - $SWIFT_FUNCTIONAL_DATABASE_URL, when set, puts the gateway's metadata in that empty
#   database ([database] url, e.g. PostgreSQL) instead of the instance's SQLite file.
# Exit status: pytest's (non-zero when any test that is not deselected fails); 1 when the
# run printed no counts (it proved nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

SWIFT_VERSION=${SWIFT_VERSION:-2.38.1}
cache=${SWIFT_FUNCTIONAL_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/archipelago/swift-functional}
files=${SWIFT_FUNCTIONAL_FILES:-"test_account.py test_container.py test_object.py tests.py test_protocol.py test_slo.py test_dlo.py test_tempurl.py"}
archip=$root/.venv/bin/archip
[ -x "$archip" ] || bash scripts/install.sh

# 1. The swift sdist and the tests' venv (cached; rebuilt only when missing).
src=$cache/swift-$SWIFT_VERSION
venv=$cache/venv-$SWIFT_VERSION
mkdir -p "$cache"
if [ ! -f "$src/test/functional/__init__.py" ]; then
  "$root/.venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
    --no-binary :all: -d "$cache" "swift==$SWIFT_VERSION"
  tar -xzf "$cache/swift-$SWIFT_VERSION.tar.gz" -C "$cache"
fi
if [ ! -f "$venv/.ready" ]; then
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    "swift==$SWIFT_VERSION" python-swiftclient pytest
  touch "$venv/.ready"
fi

# 2. A gateway on a throwaway instance, two users.
data=$(mktemp -d /tmp/archip-swiftfunc.XXXXXX)
cleanup() {
  "$archip" --data-dir "$data" gateway stop >/dev/null 2>&1 || true
  # The gateway's log of the last run stays in the cache, for a failing test's server side.
  cp "$data/log/gateway.log" "$cache/last-gateway.log" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A max object size of 64 MiB (in /info) keeps the large-object tests small.
# The gateway's own v1 users (no control-plane plugin): account = user name, so the
# tests' ACLs ("test2:tester2") name accounts as they do on Swift's tempauth.
cat >"$data/archipelago.toml" <<EOF
[control]
plugins = []
[gateway]
max_file_size = $((64 << 20))
EOF
# SWIFT_FUNCTIONAL_DATABASE_URL: the gateway's metadata in that (empty) database instead
# of the instance's SQLite file, e.g. a PostgreSQL database of tests/pg_cluster.py.
if [ -n "${SWIFT_FUNCTIONAL_DATABASE_URL:-}" ]; then
  printf '[database]\nurl = "%s"\n' "$SWIFT_FUNCTIONAL_DATABASE_URL" >>"$data/archipelago.toml"
fi
"$archip" --data-dir "$data" gateway start --listen 127.0.0.1:0 >/dev/null
url=$("$archip" --data-dir "$data" --json gateway status | "$root/.venv/bin/python" -c \
  'import json,sys; print(json.load(sys.stdin)["url"])')
key1=$("$archip" --data-dir "$data" gateway user add test)
key2=$("$archip" --data-dir "$data" gateway user add test2)

conf=$data/test.conf
cat >"$conf" <<EOF
[func_test]
auth_uri = $url/auth/v1.0
auth_version = 1
account = test
username = tester
password = $key1
account2 = test2
username2 = tester2
password2 = $key2
collate = C
EOF

# 3. The deselect list: "path::Class::test  # reason" (a line without a reason is an error).
deselect=()
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  id=${line%%#*}
  id=${id//[[:space:]]/}
  reason=${line#*#}
  if [ "$reason" = "$line" ] || [ -z "${reason//[[:space:]]/}" ]; then
    echo "swift-functional: no reason given for '$id' in tests/swift_functional_deselect.txt" >&2
    exit 2
  fi
  deselect+=(--deselect "$id")
done < "$root/tests/swift_functional_deselect.txt"

paths=()
for f in $files; do paths+=("test/functional/$f"); done
log=$data/pytest.log
set +e
(cd "$src" && SWIFT_TEST_CONFIG_FILE=$conf nice -n 5 "$venv/bin/python" -m pytest -q -rf \
  -p no:cacheprovider -o addopts= "${paths[@]}" "${deselect[@]}" "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# 4. The summary line.
sum_rc=0
"$root/.venv/bin/python" - "$log" <<'EOF' || sum_rc=$?
import re, sys
text = open(sys.argv[1], errors="replace").read().splitlines()
last = next((ln for ln in reversed(text)
             if re.search(r"\d+ (passed|failed|deselected|errors?)\b", ln)), "")
n = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|deselected|skipped|error)", last)}
p, f, d, s, e = (n.get(k, 0) for k in ("passed", "failed", "deselected", "skipped", "error"))
total = p + f + d + e
rate = 100.0 * p / total if total else 0.0
print(f"swift-functional: {p} passed, {f + e} failed, {s} skipped "
      f"({d} deselected; {rate:.1f}% of {total} pass)")
sys.exit(0 if total else 1)  # no count found: the run proved nothing
EOF
[ "$rc" -ne 0 ] || rc=$sum_rc
exit "$rc"
