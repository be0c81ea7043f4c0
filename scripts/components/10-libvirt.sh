#!/bin/bash
# libvirtd + virtlogd (monolithic libvirtd, started by hand: no systemd here).
# up: starts virtlogd then libvirtd if their pid files name no live process,
# waits until qemu:///system answers, and writes libvirt.env:
#   LIBVIRT_URI, LIBVIRT_DOMAIN_TYPE (kvm when /dev/kvm can run guests, else qemu),
#   LIBVIRT_PIDFILE, LIBVIRT_SCHEMA_DIR
set -euo pipefail
umask 022   # libvirtd and the guest image: reached by QEMU as libvirt-qemu, whatever the caller's umask
ENV_DIR=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
ENV_FILE=$ENV_DIR/libvirt.env
LIBVIRTD_PID=/run/libvirtd.pid
VIRTLOGD_PID=/run/virtlogd.pid
mkdir -p "$ENV_DIR"

# shellcheck source=../lib/pidfile.sh
. "$(dirname "$0")/../lib/pidfile.sh"
# alive PIDFILE: its daemon (libvirtd or virtlogd, the file's own name) runs
alive() { pid_alive "$1" "$(basename "$1" .pid)"; }

domain_type() {
  # /dev/kvm may exist without hardware virtualisation (e.g. a PVM host): require vmx/svm too
  if [ -c /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then echo kvm; else echo qemu; fi
}

# set_conf FILE KEY VALUE: "KEY = VALUE" in FILE (replacing a commented or older KEY line);
# prints KEY when the file changed
set_conf() {
  local file=$1 key=$2 value=$3
  grep -qxF "$key = $value" "$file" && return 0
  if grep -qE "^#?[[:space:]]*${key}[[:space:]]*=" "$file"; then
    sed -i -E "s|^#?[[:space:]]*${key}[[:space:]]*=.*|$key = $value|" "$file"
  else
    echo "$key = $value" >> "$file"
  fi
  echo "$key"
}

# what the Ansible kvmagent role sets too: virtlogd writes VM console logs and rotates them
# (2 MiB x 4 files per VM at most), so a guest cannot fill the disk through its serial port.
# The values are libvirt's defaults: daemons already running need no restart for them.
configure() {
  local changed
  changed=$(set_conf /etc/libvirt/virtlogd.conf max_size 2097152; set_conf /etc/libvirt/virtlogd.conf max_backups 3
            set_conf /etc/libvirt/qemu.conf stdio_handler '"logd"')
  [ -z "$changed" ] || echo "10-libvirt: set ${changed//$'\n'/ } in /etc/libvirt" >&2
}

# VM NICs reference kvmcloud-clean-traffic, which the kvmagent defines on top of libvirt's
# clean-traffic (package libvirt-daemon-config-nwfilter)
check_nwfilter() {
  timeout 10 virsh -q -c qemu:///system nwfilter-dumpxml clean-traffic >/dev/null || {
    echo "10-libvirt: libvirtd has no clean-traffic nwfilter (install libvirt-daemon-config-nwfilter)" >&2
    return 1
  }
}

up() {
  configure
  if [ -c /dev/kvm ]; then
    # with a root-only /dev/kvm every TCG start spends ~4 s re-probing; see docs/kvmagent.md
    chgrp kvm /dev/kvm 2>/dev/null || true; chmod 660 /dev/kvm
  fi
  mkdir -p /run/libvirt
  alive "$VIRTLOGD_PID" || virtlogd -d -p "$VIRTLOGD_PID"
  alive "$LIBVIRTD_PID" || libvirtd -d -p "$LIBVIRTD_PID"
  for _ in $(seq 1 600); do
    timeout 5 virsh -q -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.1
  done
  timeout 5 virsh -q -c qemu:///system version >/dev/null
  check_nwfilter
  cat > "$ENV_FILE.tmp" <<ENV
LIBVIRT_URI=qemu:///system
LIBVIRT_DOMAIN_TYPE=$(domain_type)
LIBVIRT_PIDFILE=$LIBVIRTD_PID
VIRTLOGD_PIDFILE=$VIRTLOGD_PID
LIBVIRT_SCHEMA_DIR=/usr/share/libvirt/schemas
ENV
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

down() {
  # guests outlive libvirtd as orphaned QEMUs: destroy every guest first
  if alive "$LIBVIRTD_PID"; then
    for d in $(timeout 10 virsh -q -c qemu:///system list --name 2>/dev/null || true); do
      timeout 10 virsh -q -c qemu:///system destroy "$d" >/dev/null 2>&1 || true
    done
  fi
  for f in "$LIBVIRTD_PID" "$VIRTLOGD_PID"; do
    if alive "$f"; then
      pid=$(pid_of "$f" "$(basename "$f" .pid)"); kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  rm -f "$ENV_FILE"
}

status() { alive "$LIBVIRTD_PID" && alive "$VIRTLOGD_PID" && echo running || { echo stopped; return 1; }; }

case "${1:-up}" in
  up) up ;; down) down ;; status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
