#!/bin/bash
# A "separate host" for the Ansible tests: a network namespace (kcchr1,
# 10.231.7.21 on the nshost bridge kcnsh0) whose sshd runs chrooted in a
# debootstrap'ed Debian root of its own. Unlike the nshost hosts it does not
# share this machine's filesystem: what a play installs (packages, venvs,
# services) lands in that root only. It reaches no package mirror, so the
# controller has to ship the packages.
#
# The minbase root is built once (about a minute with a mirror) and kept as a
# pristine copy; every `up` starts the host from a fresh copy of it.
#   up|down|status      needs: 70-nshost (the bridge and the controller key)
set -euo pipefail
# shellcheck source=../lib/netns-host.sh
. "$(dirname "$0")/../lib/netns-host.sh"
E=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
D=$E/chroothost
ENVF=$E/chroothost.env
NS=kcchr1
VETH=kcchr1-br
BR=kcnsh0
IP=10.231.7.21
PRISTINE=$D/pristine
H=$D/root
SUITE=${CHROOTHOST_SUITE:-bookworm}
INCLUDE=openssh-server,python3,python3-apt

mirror() {
  # the first Debian mirror this machine's apt uses (deb822 or one-line format)
  local m
  m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$m" ] || m=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  echo "${CHROOTHOST_MIRROR:-${m:-http://deb.debian.org/debian}}"
}

build_pristine() {
  [ -f "$PRISTINE/.kvmcloud-built" ] && return 0
  rm -rf "$PRISTINE.tmp"
  debootstrap --variant=minbase --include=$INCLUDE "$SUITE" "$PRISTINE.tmp" "$(mirror)" >"$D/debootstrap.log" 2>&1 \
    || { tail -20 "$D/debootstrap.log" >&2; exit 1; }
  # no daemon may start inside the root while packages are installed into it
  printf '#!/bin/sh\nexit 101\n' > "$PRISTINE.tmp/usr/sbin/policy-rc.d"
  chmod 755 "$PRISTINE.tmp/usr/sbin/policy-rc.d"
  rm -f "$PRISTINE.tmp"/etc/ssh/ssh_host_*
  apt_clean "$PRISTINE.tmp"
  touch "$PRISTINE.tmp/.kvmcloud-built"
  rm -rf "$PRISTINE"
  mv "$PRISTINE.tmp" "$PRISTINE"
}

apt_clean() {
  # the host knows no mirror: only what the controller ships
  rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages* "$1"/var/lib/apt/lists/*_InRelease
}

mounted() { grep -q " $1 " /proc/mounts; }

host_down() {
  netns_host_down "$NS" "$VETH"
  for m in dev/pts dev sys proc; do
    mounted "$H/$m" && umount -l "$H/$m"
  done
  return 0
}

host_up() {
  [ -f "$E/nshost.env" ] || { echo "chroothost needs the nshost component up first" >&2; exit 1; }
  NSHOST_KEY=$(sed -n 's/^NSHOST_KEY=//p' "$E/nshost.env")
  NSHOST_GATEWAY=$(sed -n 's/^NSHOST_GATEWAY=//p' "$E/nshost.env")
  build_pristine
  if ! [ -f "$H/.kvmcloud-built" ] || ! ip netns list | grep -qw "$NS"; then
    host_down
    rm -rf --one-file-system "$H"
    cp -a "$PRISTINE" "$H"
  fi
  for m in proc sys dev dev/pts; do
    mkdir -p "$H/$m"
    mounted "$H/$m" || case $m in
      proc) mount -t proc proc "$H/proc" ;;
      sys) mount -t sysfs sys "$H/sys" ;;
      *) mount --bind "/$m" "$H/$m" ;;
    esac
  done
  netns_host "$NS" "$VETH" "$BR" "$IP/24" "$NSHOST_GATEWAY"
  root_ssh_access "$H" "$NSHOST_KEY.pub" "$IP"
  mkdir -p "$H/run/sshd"
  echo "UsePAM no" >> "$H/etc/ssh/sshd_config.d/00-kvmcloud-test.conf"
  if ! pid_alive "$H/run/sshd.pid" "-E /var/log/sshd.log"; then
    rm -f "$H/run/sshd.pid"
    chroot "$H" /usr/sbin/sshd -t
    ip netns exec "$NS" chroot "$H" /usr/sbin/sshd -E /var/log/sshd.log
  fi
  wait_sshd "$IP"
  touch "$H/.kvmcloud-built"
  host_env "$ENVF" CHROOTHOST "$NS" "$IP" "$H" "$NSHOST_KEY" "$NSHOST_GATEWAY" "SUITE=$SUITE"
}

case ${1:-status} in
  up)
    mkdir -p "$D"; chmod 700 "$D"
    host_up
    ;;
  fresh)
    # a new host from the pristine root (tests that must start from bare)
    host_down; rm -rf --one-file-system "$H"; host_up
    ;;
  down)
    host_down
    rm -rf --one-file-system "$H" "$ENVF"
    ;;
  status)
    ip netns exec "$NS" ssh-keyscan -T 1 "$IP" >/dev/null 2>&1 && echo "$NS up" || echo "$NS down"
    ;;
  *) echo "usage: $0 up|fresh|down|status" >&2; exit 2 ;;
esac
