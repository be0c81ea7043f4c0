#!/bin/bash
# The tiny bootable guest image (scripts/build-guest.sh): built once, kept.
# Writes guest.env:
#   GUEST_IMAGE      qcow2 disk (SYSLINUX + Debian cloud kernel + busybox initramfs);
#                    boot it from a linked clone (qemu-img create -b GUEST_IMAGE -F qcow2)
#   GUEST_FORMAT     qcow2
#   GUEST_MARKER     line printed on ttyS0 (the first serial port) once booted
#   GUEST_IP_MARKER  prefix of "KVMCLOUD-GUEST-IP <iface> <addr>" printed after a DHCP lease
#   GUEST_DISKS_MARKER prefix of the block device list printed at boot and on every hot-plug
#   GUEST_POWEROFF_MARKER printed when the guest powers off on ACPI shutdown
set -euo pipefail
umask 022   # libvirtd and the guest image: reached by QEMU as libvirt-qemu, whatever the caller's umask
cd "$(dirname "$0")/../.."
ENV_DIR=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
DIR=$ENV_DIR/guest
ENV_FILE=$ENV_DIR/guest.env
mkdir -p "$ENV_DIR"; chmod 755 "$ENV_DIR"

up() {
  if [ ! -s "$DIR/guest.qcow2" ] || [ scripts/build-guest.sh -nt "$DIR/guest.qcow2" ]; then
    bash scripts/build-guest.sh "$DIR" >/dev/null
  fi
  cat > "$ENV_FILE.tmp" <<ENV
GUEST_IMAGE=$DIR/guest.qcow2
GUEST_FORMAT=qcow2
GUEST_MARKER=KVMCLOUD-GUEST-BOOTED
GUEST_IP_MARKER=KVMCLOUD-GUEST-IP
GUEST_DISKS_MARKER=KVMCLOUD-GUEST-DISKS:
GUEST_POWEROFF_MARKER=KVMCLOUD-GUEST-POWEROFF
ENV
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

down() { rm -f "$ENV_FILE"; }   # the image is kept: it is a build product, not a daemon

status() { [ -s "$DIR/guest.qcow2" ] && echo built || { echo missing; return 1; }; }

case "${1:-up}" in
  up) up ;; down) down ;; status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
