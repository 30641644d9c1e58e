#!/usr/bin/env bash
# Build a tiny Linux test guest from Debian 12 packages: OUT/vmlinuz + OUT/initrd.gz.
# No network beyond the Debian archive, no root image, no loop devices.
#
#   tests/guest/build.sh OUT_DIR        (idempotent; ~20 s the first time)
#
# The guest (busybox /init) loads virtio-blk and virtio-net, then on the serial
# console (ttyS0) it:
#   1. prints  GUEST-BOOTED <kernel release>
#   2. prints  GUEST-DISKS <names of /sys/block entries, space separated>
#   3. for each virtio disk vdX: prints  GUEST-READ vdX <first 64 bytes of the
#      disk, NULs removed>  (an image can carry a marker there)
#   4. writes to the first disk (vda), at byte offset 4096, one 4 KiB block that
#      starts with  "GUEST-WROTE <random uuid>"  (written with fsync, then read
#      back with O_DIRECT) and prints  GUEST-WROTE <uuid>
#   5. if it has a NIC (eth0): brings it up, asks DHCP for an address (busybox
#      udhcpc), prints  GUEST-IP <addr/len or nothing>, and for each address in
#      archip.ping=A,B on the kernel command line prints  GUEST-PING A ok|failed
#   6. if the kernel command line has archip.hold=SECONDS, waits that long
#      (time to snapshot or hot-plug while it runs; it prints GUEST-DISKS again
#      afterwards), then prints  GUEST-DONE  and powers off.
# qemu: -kernel OUT/vmlinuz -initrd OUT/initrd.gz -append "console=ttyS0 panic=-1"
#       -no-reboot -nographic (or -serial file:LOG) -drive file=nbd+unix:///VOL?socket=S,format=raw,if=virtio
# Acceleration: KVM where it works, else TCG (-accel tcg). On these 2-core test
# machines /dev/kvm opens but a KVM guest hangs at "Booting from ROM"; under TCG
# the guest reaches GUEST-DONE in about 6-8 s.
set -euo pipefail
OUT=${1:?usage: build.sh OUT_DIR}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
[[ -s $OUT/vmlinuz && -s $OUT/initrd.gz ]] && { echo "$OUT"; exit 0; }
need=()
for p in busybox-static cpio; do dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -q installed || need+=("$p"); done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null; apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
fi
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[[ -n $kpkg ]] || { apt-get update -q >/dev/null; kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); }
(cd "$W" && apt-get download "$kpkg" >/dev/null)
dpkg-deb -x "$W"/linux-image-*.deb "$W/k"
rel=$(ls "$W/k/lib/modules")
M=$W/k/lib/modules/$rel/kernel/drivers
mkdir -p "$W/ir/bin" "$W/ir/mod" "$W/ir/proc" "$W/ir/sys" "$W/ir/dev"
cp /usr/bin/busybox "$W/ir/bin/"
for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_modern_dev virtio/virtio_pci_legacy_dev \
         virtio/virtio_pci block/virtio_blk net/net_failover net/virtio_net; do
  f=$(ls "$M/$m.ko"* 2>/dev/null | head -1) || true
  [[ -n ${f:-} ]] && cp "$f" "$W/ir/mod/"
done
find "$W/k/lib/modules/$rel" -name 'failover.ko*' -exec cp {} "$W/ir/mod/" \;
cat > "$W/ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# insmod in passes: a module whose dependency is not loaded yet fails and is retried
for pass in 1 2 3 4; do for m in /mod/*.ko; do insmod "$m" 2>/dev/null; done; done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /dev/vda ] && break; sleep 0.3; done
echo "GUEST-BOOTED $(uname -r)"
echo "GUEST-DISKS $(ls /sys/block | grep -v -e loop -e ram | tr '\n' ' ')"
for d in /sys/block/vd*; do [ -e "$d" ] || continue; n=${d##*/}
  echo "GUEST-READ $n $(dd if=/dev/$n bs=64 count=1 2>/dev/null | tr -d '\0')"; done
if [ -e /dev/vda ]; then
  u=$(cat /proc/sys/kernel/random/uuid)
  echo "GUEST-WROTE $u" > /wrote
  dd if=/wrote of=/dev/vda bs=4096 seek=1 conv=sync,fsync 2>/dev/null
  got=$(dd if=/dev/vda bs=4096 skip=1 count=1 iflag=direct 2>/dev/null | tr -d '\0')
  [ "$got" = "GUEST-WROTE $u" ] && echo "GUEST-WROTE $u" || echo "GUEST-WRITE-FAILED"
fi
if [ -e /sys/class/net/eth0 ]; then
  ip link set lo up; ip link set eth0 up
  mkdir -p /usr/share/udhcpc
  printf '#!/bin/sh\n[ "$1" = bound ] && /bin/ip addr add "$ip/${mask:-24}" dev "$interface"\n' > /usr/share/udhcpc/default.script
  chmod +x /usr/share/udhcpc/default.script
  udhcpc -n -q -t 5 -T 1 -i eth0 -s /usr/share/udhcpc/default.script >/dev/null 2>&1
  echo "GUEST-IP $(ip -4 -o addr show eth0 | awk '{print $4}')"
  for t in $(sed -n 's/.*archip\.ping=\([0-9.,]*\).*/\1/p' /proc/cmdline | tr ',' ' '); do
    if ping -c 2 -W 2 "$t" >/dev/null 2>&1; then echo "GUEST-PING $t ok"; else echo "GUEST-PING $t failed"; fi
  done
fi
hold=$(sed -n 's/.*archip\.hold=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$hold" ]; then sleep "$hold"; echo "GUEST-DISKS $(ls /sys/block | grep -v -e loop -e ram | tr '\n' ' ')"; fi
echo "GUEST-DONE"
poweroff -f
INIT
chmod +x "$W/ir/init"
(cd "$W/ir" && find . | cpio -o -H newc 2>/dev/null | gzip -9 > "$OUT/initrd.gz")
cp "$W/k/boot/vmlinuz-$rel" "$OUT/vmlinuz"
echo "$OUT"
