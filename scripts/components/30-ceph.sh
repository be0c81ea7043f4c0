#!/bin/bash
# A throwaway single-node Ceph cluster for the tests: one monitor, one OSD on
# memstore (data in RAM), cephx, and a mgr (the monitors learn pool and
# cluster usage, which capacity reports, only from a mgr). Two clients besides the admin:
#   client.agent       the cephagent's least-privilege user: RBD on every pool,
#                      plus the two monitor commands pool initialisation needs;
#   client.agent-weak  deliberately under-privileged (read-only RBD), for the
#                      capability test.
# Usage: 30-ceph.sh up|down|status. State in $KVMCLOUD_TEST_ENV/ceph/, facts in
# $KVMCLOUD_TEST_ENV/ceph.env. Monitor ports 3300/6789 are fixed: one cluster
# per machine. Daemons are stopped by their pid files.
set -euo pipefail
ENV_ROOT=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
C="$ENV_ROOT/ceph"
ENV_FILE="$ENV_ROOT/ceph.env"
MON_ADDR="127.0.0.1:6789"
action=${1:-up}

# shellcheck source=../lib/pidfile.sh
. "$(dirname "$0")/../lib/pidfile.sh"

status() {
  pid_alive "$C/run/mon.a.pid" ceph-mon && pid_alive "$C/run/osd.0.pid" ceph-osd && pid_alive "$C/run/mgr.x.pid" ceph-mgr \
    && CEPH_CONF="$C/ceph.conf" timeout 10 ceph osd stat 2>/dev/null | grep -q "1 up"
}

down() {
  local pids=() f pid
  for f in "$C"/run/*.pid; do
    pid=$(pid_of "$f" ceph-) && pids+=("$pid")
  done
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$C" "$ENV_FILE"
}

up() {
  if status; then
    [ -s "$ENV_FILE" ] || { echo "ceph is up but $ENV_FILE is missing; run down first" >&2; exit 1; }
    return 0
  fi
  down
  mkdir -p "$C"/{mon-a,osd-0,mgr-x,run,log}
  local fsid; fsid=$(cat /proc/sys/kernel/random/uuid)
  cat > "$C/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:3300,v1:$MON_ADDR]
mon initial members = a
public network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $C/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
auth allow insecure global id reclaim = false
run dir = $C/run
admin socket = $C/run/\$name.asok
log file = $C/log/\$name.log
pid file = $C/run/\$name.pid
[mon]
mon data = $C/mon-\$id
[osd]
osd data = $C/osd-\$id
keyring = $C/osd-\$id/keyring
osd objectstore = memstore
memstore device bytes = 2147483648
osd memory target = 939524096
[mgr]
mgr data = $C/mgr-\$id
keyring = $C/mgr-\$id/keyring
CONF
  export CEPH_CONF="$C/ceph.conf"
  ceph-authtool --create-keyring "$C/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$C/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  monmaptool --create --addv a "[v2:127.0.0.1:3300,v1:$MON_ADDR]" --fsid "$fsid" "$C/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$C/monmap" --keyring "$C/keyring"
  ceph-mon -i a
  for _ in $(seq 300); do timeout 5 ceph -s >/dev/null 2>&1 && break; sleep 0.2; done
  local uuid id; uuid=$(cat /proc/sys/kernel/random/uuid); id=$(ceph osd new "$uuid")
  ceph auth get-or-create "osd.$id" mon 'allow profile osd' mgr 'allow profile osd' osd 'allow *' \
    -o "$C/osd-$id/keyring"
  ceph-osd -i "$id" --mkfs --osd-uuid "$uuid" 2>>"$C/log/osd-mkfs.log" >/dev/null
  ceph-osd -i "$id" 2>>"$C/log/osd-start.log"
  for _ in $(seq 300); do ceph osd stat 2>/dev/null | grep -q "1 up" && break; sleep 0.2; done
  ceph osd stat | grep -q "1 up"
  ceph auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$C/mgr-x/keyring"
  ceph-mgr -i x
  for _ in $(seq 300); do ceph mgr stat 2>/dev/null | grep -q '"available": true' && break; sleep 0.2; done
  ceph auth get-or-create client.agent \
    mon 'profile rbd, allow command "osd pool create", allow command "osd pool application enable"' \
    osd 'profile rbd' -o "$C/client.agent.keyring"
  ceph auth get-or-create client.agent-weak mon 'profile rbd' osd 'profile rbd-read-only' \
    -o "$C/client.agent-weak.keyring"
  ceph auth get-key client.agent > "$C/client.agent.key"
  chmod 600 "$C"/*.keyring "$C"/*.key "$C/keyring"
  cat > "$ENV_FILE" <<ENV
CEPH_DIR=$C
CEPH_CONF=$C/ceph.conf
CEPH_FSID=$fsid
CEPH_MON_HOST=$MON_ADDR
CEPH_MONITORS=$MON_ADDR
CEPH_ADMIN_USER=admin
CEPH_ADMIN_KEYRING=$C/keyring
CEPH_AGENT_USER=agent
CEPH_AGENT_KEYRING=$C/client.agent.keyring
CEPH_AGENT_KEY_FILE=$C/client.agent.key
CEPH_WEAK_USER=agent-weak
CEPH_WEAK_KEYRING=$C/client.agent-weak.keyring
CEPH_MON_PID_FILE=$C/run/mon.a.pid
CEPH_OSD_PID_FILE=$C/run/osd.0.pid
ENV
}

case "$action" in
  up) up ;;
  down) down ;;
  status) if status; then echo "ceph: up"; else echo "ceph: down"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
