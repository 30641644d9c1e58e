#!/bin/bash
# Install what archipelago needs on Debian 12 (as root), then build .venv with the
# project installed editable. Idempotent: when everything is present it only checks
# (dpkg-query) and re-runs the editable pip install, which is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-venv python3-dev python3-pip build-essential pkg-config libssl-dev
  nbdkit nbdkit-plugin-python nbdkit-plugin-dev libnbd-bin python3-libnbd qemu-utils
  ceph-mon ceph-osd ceph-common python3-rados python3-rbd uuid-runtime jq
  fio procps python3-matplotlib memcached
  qemu-system-x86 busybox-static cpio
  chromium chromium-driver python3-selenium
  dnsmasq-base nftables
  postgresql-15 python3-asyncpg
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: missing Debian packages (run as root): ${missing[*]}" >&2
    exit 1
  fi
  echo "install.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [[ " ${missing[*]} " == *" postgresql-15 "* ]] && pg_lsclusters -h 2>/dev/null | grep -q '^15 main '; then
    # Debian creates (and may start) a default cluster on localhost:5432; tests and
    # benchmarks run their own throwaway clusters (testbed/pg_cluster.py), so drop the
    # one this install just created: nothing listens that nobody asked for.
    pg_dropcluster --stop 15 main
  fi
fi

# The venv sees Debian's python3-rados/rbd/libnbd through --system-site-packages.
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi

# Skip the (slower) pip run when the editable install is newer than its inputs.
stamp=.venv/.archipelago-installed
inputs=(pyproject.toml)
[ -f setup.py ] && inputs+=(setup.py)
# (the nbdkit filter is built below, not by pip; native/build holds build outputs)
[ -d native ] && while IFS= read -r f; do inputs+=("$f"); done < <(find native -path native/build -prune -o -type f \( -name '*.c' -o -name '*.h' -o -name '*.py' \) ! -name 'nbdkit_filter*' -print)
need_pip=1
probe='import archipelago, control'
# The cffi extension is built by the editable install: it must import too.
[ -f native/build_native.py ] && probe="$probe, archipelago._native"
if [ -f "$stamp" ] && .venv/bin/python -c "$probe" 2>/dev/null; then
  need_pip=0
  for f in "${inputs[@]}"; do
    if [ "$f" -nt "$stamp" ]; then need_pip=1; break; fi
  done
fi
if [ "$need_pip" -eq 1 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
# The C nbdkit filter archip-fast (native/nbdkit_filter_archip.c -> native/build/archip-fast.so):
# the daemon's nbdkit puts it in front of the Python plugin when it is built.
.venv/bin/python -m archipelago.nbd.cfilter build >/dev/null
echo "install.sh: ready ($(.venv/bin/archip --version))" >&2
