#!/bin/bash
# A host whose PID 1 is systemd, for the deploy tests of the agents' systemd units
# (this machine's PID 1 is not systemd): the chroothost's pristine Debian root plus
# systemd, booted by systemd-nspawn inside network namespace kcsysd1 (10.231.7.22
# on the nshost bridge). Like the chroot host it reaches no package mirror.
#   up|fresh|down|status      needs: 70-nshost, 75-chroothost (its pristine root)
set -euo pipefail
# shellcheck source=../lib/netns-host.sh
. "$(dirname "$0")/../lib/netns-host.sh"
E=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
D=$E/systemdhost
ENVF=$E/systemdhost.env
NS=kcsysd1
VETH=kcsysd1-br
BR=kcnsh0
IP=10.231.7.22
BASE=$E/chroothost/pristine
PRISTINE=$D/pristine
H=$D/root
PIDF=$D/nspawn.pid

build_pristine() {
  [ -f "$PRISTINE/.kvmcloud-built" ] && return 0
  [ -f "$BASE/.kvmcloud-built" ] || { echo "systemdhost needs the chroothost component's root" >&2; exit 1; }
  rm -rf --one-file-system "$PRISTINE.tmp"
  cp -a "$BASE" "$PRISTINE.tmp"
  mount -t proc proc "$PRISTINE.tmp/proc"
  # installed from this machine's side (the namespace reaches no mirror); nothing starts (policy-rc.d)
  if ! chroot "$PRISTINE.tmp" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd systemd-sysv dbus' >"$D/build.log" 2>&1; then
    umount "$PRISTINE.tmp/proc"; tail -20 "$D/build.log" >&2; exit 1
  fi
  umount "$PRISTINE.tmp/proc"
  rm -f "$PRISTINE.tmp/usr/sbin/policy-rc.d"   # systemd starts what is enabled, as on a real host
  rm -f "$PRISTINE.tmp"/var/cache/apt/archives/*.deb "$PRISTINE.tmp"/var/lib/apt/lists/*_Packages* \
    "$PRISTINE.tmp"/var/lib/apt/lists/*_InRelease
  touch "$PRISTINE.tmp/.kvmcloud-built"
  rm -rf --one-file-system "$PRISTINE"
  mv "$PRISTINE.tmp" "$PRISTINE"
}

running() { pid_alive "$PIDF" systemd-nspawn; }

host_down() {
  if running; then
    kill -TERM "$(pid_of "$PIDF" systemd-nspawn)" 2>/dev/null || true   # nspawn asks the container's systemd to power off
    for _ in $(seq 100); do running || break; sleep 0.1; done
    running && kill -KILL "$(pid_of "$PIDF" systemd-nspawn)" 2>/dev/null || true
  fi
  rm -f "$PIDF"
  netns_host_down "$NS" "$VETH"
}

host_up() {
  [ -f "$E/nshost.env" ] || { echo "systemdhost needs the nshost component up first" >&2; exit 1; }
  NSHOST_KEY=$(sed -n 's/^NSHOST_KEY=//p' "$E/nshost.env")
  NSHOST_GATEWAY=$(sed -n 's/^NSHOST_GATEWAY=//p' "$E/nshost.env")
  build_pristine
  if ! [ -f "$H/.kvmcloud-built" ] || ! running; then
    host_down
    rm -rf --one-file-system "$H"
    cp -a "$PRISTINE" "$H"
  fi
  netns_host "$NS" "$VETH" "$BR" "$IP/24" "$NSHOST_GATEWAY"
  root_ssh_access "$H" "$NSHOST_KEY.pub" "$IP"
  if ! running; then
    # --register=no --keep-unit: this machine has no systemd for nspawn to register with
    # CAP_NET_ADMIN: the play writes iptables rules (the container has its own network namespace)
    setsid systemd-nspawn -D "$H" --boot --register=no --keep-unit --console=read-only -M "$NS" \
      --capability=CAP_NET_ADMIN \
      --network-namespace-path="/run/netns/$NS" >"$D/console.log" 2>&1 < /dev/null &
    echo $! > "$PIDF"
  fi
  for _ in $(seq 300); do
    ssh-keyscan -T 1 -t ed25519 "$IP" >/dev/null 2>&1 && break
    running || { tail -20 "$D/console.log" >&2; exit 1; }
    sleep 0.1
  done
  touch "$H/.kvmcloud-built"
  host_env "$ENVF" SYSTEMDHOST "$NS" "$IP" "$H" "$NSHOST_KEY" "$NSHOST_GATEWAY" "MACHINE=$NS"
}

case ${1:-status} in
  up)
    mkdir -p "$D"; chmod 700 "$D"
    host_up
    ;;
  fresh)
    mkdir -p "$D"
    host_down; rm -rf --one-file-system "$H"; host_up
    ;;
  down)
    host_down
    rm -rf --one-file-system "$H" "$ENVF"
    ;;
  status)
    running && ip netns exec "$NS" ssh-keyscan -T 1 "$IP" >/dev/null 2>&1 && echo "$NS up" || echo "$NS down"
    ;;
  *) echo "usage: $0 up|fresh|down|status" >&2; exit 2 ;;
esac
