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

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

domain_type() {
  # /dev/kvm may exist without hardware virtualisation (e.g. a PVM host): require vmx/svm too
  if [ -c /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then echo kvm; else echo qemu; fi
}

up() {
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
      pid=$(cat "$f"); kill "$pid"
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
