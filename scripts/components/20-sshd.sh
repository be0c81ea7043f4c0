#!/bin/bash
# An OpenSSH sshd on 127.0.0.1 serving SFTP only, chrooted to a store directory.
#
#   20-sshd.sh up|down|status
#
# State: $KVMCLOUD_TEST_ENV/sshd/ (host key, client key pair, known_hosts,
# sshd_config, pid file, log) and the store data in $KVMCLOUD_TEST_ENV/sshd/store.
# sshd demands that every component of a ChrootDirectory be root-owned and not
# group/world-writable, which /var/tmp is not; so the store is bind-mounted on
# /run/kvmcloud-sftp/<id> and that is the chroot.
#
# The client key is restricted twice: sshd_config forces internal-sftp inside
# the chroot for every login, and its authorized_keys line carries
# `restrict,command="internal-sftp"`.
#
# Facts written to $KVMCLOUD_TEST_ENV/sshd.env:
#   SSHD_HOST, SSHD_PORT, SSHD_USER, SSHD_KEY (private key of "hosts"),
#   SSHD_KNOWN_HOSTS, SSHD_STORE_DIR (the chroot's real directory: a path P
#   in it is /P over SFTP), SSHD_CHROOT (the chroot path sshd uses).
set -euo pipefail
ENV_DIR=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
S=$ENV_DIR/sshd
PORT=${KVMCLOUD_SSHD_PORT:-2231}
HOST=127.0.0.1
ID=$(printf '%s' "$S" | sha256sum | cut -c1-12)
CHROOT=/run/kvmcloud-sftp/$ID
PIDFILE=$S/sshd.pid

# shellcheck source=../lib/pidfile.sh
. "$(dirname "$0")/../lib/pidfile.sh"
running() { pid_alive "$PIDFILE" "$S/sshd_config"; }

mounted() {
  grep -qs " $CHROOT " /proc/self/mounts
}

write_env() {
  cat > "$ENV_DIR/sshd.env.tmp" <<EOF
SSHD_HOST=$HOST
SSHD_PORT=$PORT
SSHD_USER=root
SSHD_KEY=$S/id_ed25519
SSHD_KNOWN_HOSTS=$S/known_hosts
SSHD_STORE_DIR=$S/store
SSHD_CHROOT=$CHROOT
EOF
  mv "$ENV_DIR/sshd.env.tmp" "$ENV_DIR/sshd.env"
}

check() {
  # a real SFTP round trip with the client key and strict host key checking
  echo "pwd" | timeout 20 sftp -q -b - -P "$PORT" -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes \
    -o "IdentityFile=$S/id_ed25519" -o "UserKnownHostsFile=$S/known_hosts" \
    -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes "root@$HOST" >/dev/null
}

up() {
  mkdir -p "$S" /run/sshd
  chmod 700 "$S"
  [ -f "$S/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C kvmcloud-test-host -f "$S/host_ed25519"
  [ -f "$S/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C kvmcloud-test-client -f "$S/id_ed25519"
  echo "restrict,command=\"internal-sftp\" $(cat "$S/id_ed25519.pub")" > "$S/authorized_keys"
  chmod 600 "$S/authorized_keys"
  echo "[$HOST]:$PORT $(cut -d' ' -f1,2 "$S/host_ed25519.pub")" > "$S/known_hosts"
  mkdir -p "$S/store"
  chown root:root "$S/store"
  chmod 755 "$S/store"
  mkdir -p "$CHROOT"
  chmod 755 /run/kvmcloud-sftp "$CHROOT"
  mounted || mount --bind "$S/store" "$CHROOT"
  cat > "$S/sshd_config" <<EOF
Port $PORT
ListenAddress $HOST
HostKey $S/host_ed25519
PidFile $PIDFILE
AuthorizedKeysFile $S/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
AllowTcpForwarding no
X11Forwarding no
PermitTunnel no
AllowAgentForwarding no
MaxSessions 32
MaxStartups 64:30:128
Subsystem sftp internal-sftp
ChrootDirectory $CHROOT
ForceCommand internal-sftp
EOF
  if ! running; then
    /usr/sbin/sshd -t -f "$S/sshd_config"
    /usr/sbin/sshd -f "$S/sshd_config" -E "$S/sshd.log"
    for _ in $(seq 100); do running && break; sleep 0.05; done
  fi
  for _ in $(seq 100); do check && break; sleep 0.1; done
  check
  write_env
}

down() {
  if running; then
    kill "$(pid_of "$PIDFILE" "$S/sshd_config")"
    for _ in $(seq 100); do running || break; sleep 0.05; done
  fi
  rm -f "$PIDFILE"
  if mounted; then umount "$CHROOT"; fi
  rmdir "$CHROOT" 2>/dev/null || true
  rm -f "$ENV_DIR/sshd.env"
}

status() {
  if running && check; then echo "sshd: running on $HOST:$PORT (pid $(cat "$PIDFILE"))"; else echo "sshd: stopped"; return 1; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
