#!/bin/bash
# A userspace NFS server: nfs-ganesha (VFS FSAL) plus rpcbind, exporting one
# directory to 127.0.0.1 over NFSv3 and v4 (the pseudo path equals the real
# path, so server:/path names the export in both versions).
#
#   40-nfs.sh up|down|status
#
# State: $KVMCLOUD_TEST_ENV/nfs/ (ganesha.conf, log, pid files, the exported
# directory export/, and mnt/ where tests put their mount points).
# This kernel has no NFS client, so tests cannot `mount -t nfs`: the storage
# agent's mount step is a seam, and tests bind-mount NFS_EXPORT_DIR (the very
# directory ganesha exports) under NFS_MOUNT_BASE instead; protocol-level
# checks go through libnfs (nfs-ls, nfs-cat).
#
# Facts written to $KVMCLOUD_TEST_ENV/nfs.env:
#   NFS_SERVER, NFS_PORT, NFS_EXPORT (path on the server), NFS_URL (server:/path),
#   NFS_LIBNFS_URL (nfs://server/path), NFS_EXPORT_DIR (the exported directory
#   on this host), NFS_MOUNT_BASE (where mount stand-ins go), NFS_GANESHA_PIDFILE.
set -euo pipefail
ENV_DIR=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
D=$ENV_DIR/nfs
HOST=127.0.0.1
PORT=2049
EXPORT=$D/export
PIDFILE=$D/ganesha.pid
RPCBIND_PIDFILE=$D/rpcbind.pid

# shellcheck source=../lib/pidfile.sh
. "$(dirname "$0")/../lib/pidfile.sh"
running() { pid_alive "$PIDFILE" "$D/ganesha.conf"; }

rpcbind_up() {
  rpcinfo -p "$HOST" >/dev/null 2>&1
}

check() {
  timeout 10 nfs-ls "nfs://$HOST$EXPORT" >/dev/null 2>&1 &&
    timeout 10 nfs-ls "nfs://$HOST$EXPORT?version=4" >/dev/null 2>&1
}

write_env() {
  {
    echo "NFS_SERVER=$HOST"
    echo "NFS_PORT=$PORT"
    echo "NFS_EXPORT=$EXPORT"
    echo "NFS_URL=$HOST:$EXPORT"
    echo "NFS_LIBNFS_URL=nfs://$HOST$EXPORT"
    echo "NFS_EXPORT_DIR=$EXPORT"
    echo "NFS_MOUNT_BASE=$D/mnt"
    echo "NFS_GANESHA_PIDFILE=$PIDFILE"
  } > "$ENV_DIR/nfs.env.tmp"
  mv "$ENV_DIR/nfs.env.tmp" "$ENV_DIR/nfs.env"
}

write_conf() {
  {
    echo "NFS_CORE_PARAM { Protocols = 3, 4; Bind_addr = $HOST; NFS_Port = $PORT; MNT_Port = 20048;"
    echo "                 Enable_NLM = false; Enable_RQUOTA = false; }"
    echo "NFS_KRB5 { Active_krb5 = false; }"
    echo "NFSV4 { Graceless = true; RecoveryBackend = fs; }"
    # the tests also change the exported tree directly (the bind mount standing in
    # for the kernel client): do not cache attributes or directory entries
    echo "MDCACHE { Dir_Chunk = 0; }"
    echo "EXPORT { Export_Id = 1; Path = $EXPORT; Pseudo = $EXPORT; Protocols = 3, 4; Transports = TCP;"
    echo "         Attr_Expiration_Time = 0;"
    echo "         Access_Type = RW; Squash = No_Root_Squash; SecType = sys; FSAL { Name = VFS; }"
    echo "         CLIENT { Clients = $HOST; Access_Type = RW; } }"
    echo "LOG { Default_Log_Level = EVENT; }"
  } > "$D/ganesha.conf"
}

up() {
  mkdir -p "$EXPORT" "$D/mnt" /var/run/ganesha
  chmod 755 "$D" "$EXPORT" "$D/mnt"   # QEMU (libvirt-qemu) reaches volumes mounted below mnt
  write_conf
  if ! rpcbind_up; then
    # -f keeps rpcbind in the foreground so that $! is its pid (it writes no pid file)
    setsid rpcbind -f -w </dev/null >"$D/rpcbind.log" 2>&1 &
    echo $! > "$RPCBIND_PIDFILE"
    for _ in $(seq 100); do rpcbind_up && break; sleep 0.05; done
  fi
  if ! running; then
    ganesha.nfsd -f "$D/ganesha.conf" -L "$D/ganesha.log" -p "$PIDFILE" -N NIV_EVENT
    for _ in $(seq 100); do running && break; sleep 0.05; done
  fi
  for _ in $(seq 100); do check && break; sleep 0.1; done
  check
  write_env
}

down() {
  # mount stand-ins a crashed test left behind (only ours: under $D/mnt)
  awk -v base="$D/mnt/" 'index($2, base) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount "$m" || true
  done
  if running; then
    kill "$(pid_of "$PIDFILE" "$D/ganesha.conf")"
    for _ in $(seq 100); do running || break; sleep 0.05; done
  fi
  rm -f "$PIDFILE"
  # stop rpcbind only if this script started it
  if pid_alive "$RPCBIND_PIDFILE" rpcbind; then
    kill "$(pid_of "$RPCBIND_PIDFILE" rpcbind)"
  fi
  rm -f "$RPCBIND_PIDFILE" "$ENV_DIR/nfs.env"
}

status() {
  if running && check; then
    echo "nfs: ganesha running on $HOST:$PORT (pid $(cat "$PIDFILE")), export $EXPORT"
  else
    echo "nfs: stopped"
    return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
