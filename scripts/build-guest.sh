#!/bin/bash
# Builds kvmcloud's tiny bootable guest disk from Debian packages, without
# mounting anything: an MBR disk with one FAT16 partition holding SYSLINUX, the
# Debian cloud kernel and a busybox initramfs. The guest prints a marker line on
# ttyS0 once booted, asks for an address by DHCP (udhcpc) on every NIC, reports
# the block devices it sees (hot-plug) and powers off on ACPI shutdown.
#
#   build-guest.sh OUT_DIR        -> OUT_DIR/guest.qcow2 (and guest.raw)
set -euo pipefail
OUT=$(realpath -m "${1:?usage: build-guest.sh OUT_DIR}")
KERNEL_PKG=${GUEST_KERNEL_PKG:-$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')}
MARKER=KVMCLOUD-GUEST-BOOTED
W=$OUT/build
mkdir -p "$W" && chmod 755 "$OUT"
cd "$W"

# 1. packages (kept in OUT/debs so a rebuild needs no mirror)
mkdir -p "$OUT/debs"
if ! ls "$OUT"/debs/"$KERNEL_PKG"_*.deb >/dev/null 2>&1; then
  (cd "$OUT/debs" && timeout 300 apt-get download -q -o APT::Sandbox::User=root "$KERNEL_PKG" >/dev/null)
fi
rm -rf k ir && mkdir k
dpkg -x "$(ls "$OUT"/debs/"$KERNEL_PKG"_*.deb | head -1)" k
M=$(echo k/lib/modules/*/kernel)

# 2. initramfs
mkdir -p ir/{bin,proc,sys,dev,tmp,run,lib/modules,etc/acpi/PWRF,usr/share/udhcpc}
cp /bin/busybox ir/bin/busybox
for f in drivers/virtio/{virtio_ring,virtio,virtio_pci_legacy_dev,virtio_pci_modern_dev,virtio_pci}.ko \
         drivers/block/virtio_blk.ko net/core/failover.ko drivers/net/{net_failover,virtio_net}.ko \
         drivers/acpi/button.ko drivers/input/evdev.ko; do
  [ -e "$M/$f" ] && cp "$M/$f" ir/lib/modules/
done
cat > ir/usr/share/udhcpc/default.script <<'EOF'
#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface"
    echo "KVMCLOUD-GUEST-IP $interface $ip" >/dev/ttyS0 ;;
esac
exit 0
EOF
cat > ir/etc/acpi/PWRF/00000080 <<'EOF'
#!/bin/sh
echo KVMCLOUD-GUEST-POWEROFF >/dev/ttyS0
/bin/poweroff -f
EOF
cat > ir/init <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net button evdev; do
  [ -e /lib/modules/\$m.ko ] && insmod /lib/modules/\$m.ko 2>/dev/null
done
chmod +x /etc/acpi/PWRF/00000080 /usr/share/udhcpc/default.script
(acpid -d -c /etc/acpi >/dev/null 2>&1 &)   # foreground acpid: ACPI power button -> poweroff
echo "$MARKER kernel=\$(uname -r)" >/dev/ttyS0
for n in /sys/class/net/eth*; do
  [ -e "\$n" ] || continue; i=\${n##*/}
  (udhcpc -i "\$i" -t 20 -T 1 -A 2 -b -s /usr/share/udhcpc/default.script >/dev/null 2>&1 &)
done
last=""
while true; do   # report block devices (hot-plug) and NICs
  d=\$(awk 'NR>2{printf "%s ",\$4}' /proc/partitions)
  [ "\$d" != "\$last" ] && echo "KVMCLOUD-GUEST-DISKS: \$d" >/dev/ttyS0 && last="\$d"
  sleep 1
done
EOF
chmod +x ir/init ir/usr/share/udhcpc/default.script ir/etc/acpi/PWRF/00000080
(cd ir && find . | cpio -o -H newc 2>/dev/null | gzip -1 > ../initrd.gz)
cp k/boot/vmlinuz-* vmlinuz

# 3. disk: MBR + FAT16 partition at 1 MiB, SYSLINUX boot loader, no mount
cat > syslinux.cfg <<'EOF'
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 panic=-1 quiet
EOF
SIZE_MB=32
rm -f disk.raw && truncate -s ${SIZE_MB}M disk.raw
echo 'start=2048, type=6, bootable' | sfdisk -q disk.raw >/dev/null
mkfs.fat -F 16 -n KVMCLOUD --offset 2048 disk.raw $(( (SIZE_MB * 1024 - 1024) )) >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i disk.raw@@1M vmlinuz initrd.gz syslinux.cfg ::/
syslinux --install --offset $((2048 * 512)) disk.raw
dd if=/usr/lib/syslinux/mbr/mbr.bin of=disk.raw bs=440 count=1 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 disk.raw "$OUT/guest.qcow2.tmp"
mv "$OUT/guest.qcow2.tmp" "$OUT/guest.qcow2"
chmod 644 "$OUT/guest.qcow2"
cd "$OUT" && rm -rf "$W"
echo "$OUT/guest.qcow2"
