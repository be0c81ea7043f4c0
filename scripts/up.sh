#!/bin/bash
# make up: the all-in-one kvmcloud on this machine, from a fresh Debian 12.
#
#  1. Debian packages and the venv (scripts/install-deps.sh, idempotent);
#  2. libvirtd and the tiny guest image (scripts/components/10-libvirt.sh, 15-guest.sh);
#  3. an sshd on 127.0.0.1 that the deploys go through, trusting the controller's key;
#  4. the controller (kvmcloud serve, SQLite), with fresh API and agent tokens;
#  5. controller/deploy/allinone.py, all through the API: zone/cluster/primary
#     storage registered, the SFTP backup storage added with deploy (the
#     controller deploys the sftpbackup agent over SSH by the playbooks and
#     connects it), the guest image added from a file:// URL (the store's agent
#     copies it in), network/offering registered, this machine added as a host
#     (the controller deploys kvmagent and storageagent through the same
#     playbooks), a VM created and watched
#     until its serial console shows the guest's marker.
#
# State: $KVMCLOUD_UP_DIR (default /var/lib/kvmcloud-up). `make down` stops it all.
# Env: KVMCLOUD_API_PORT (8080), KVMCLOUD_UP_SSH_PORT (2202).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
UP=${KVMCLOUD_UP_DIR:-/var/lib/kvmcloud-up}
API_PORT=${KVMCLOUD_API_PORT:-8080}
SSH_PORT=${KVMCLOUD_UP_SSH_PORT:-2202}
API=http://127.0.0.1:$API_PORT
export KVMCLOUD_TEST_ENV=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
IFACE=kcup0
T0=$(date +%s.%N)
step() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
# shellcheck source=lib/pidfile.sh
. "$(dirname "$0")/lib/pidfile.sh"
running() { pid_alive "$@"; }   # running PIDFILE NEEDLE

step "installing Debian packages and the venv"
bash scripts/install-deps.sh
PY=$REPO/.venv/bin/python

step "starting libvirtd and building the tiny guest"
bash scripts/components/10-libvirt.sh up
bash scripts/components/15-guest.sh up
# shellcheck disable=SC1091
source "$KVMCLOUD_TEST_ENV/guest.env"

# parents made here must be searchable whatever the caller's umask (the store user reads below $UP)
(umask 022 && mkdir -p "$UP"/{ssh/sshd_config.d,deploy})
# $UP stays traversable: the store user's sshd reads $UP/store/.ssh/authorized_keys as that user
chmod 755 "$UP"; chmod 700 "$UP/ssh" "$UP/deploy"
# this cloud's id names its primary storage directory (a new state dir is a new cloud)
[ -s "$UP/cloud-id" ] || head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$UP/cloud-id"
for t in api-token agent-token; do
  [ -s "$UP/$t" ] || (umask 077; "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$UP/$t")
done

step "starting sshd on 127.0.0.1:$SSH_PORT for the deploys"
[ -f "$UP/ssh/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$UP/ssh/host_ed25519"
[ -f "$UP/deploy/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C kvmcloud-controller -f "$UP/deploy/id_ed25519"
cp "$UP/deploy/id_ed25519.pub" "$UP/ssh/authorized_keys"
cat > "$UP/ssh/sshd_config" <<CONF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $UP/ssh/host_ed25519
PidFile $UP/ssh/sshd.pid
AuthorizedKeysFile $UP/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
Subsystem sftp internal-sftp
Include $UP/ssh/sshd_config.d/*.conf
CONF
if ! running "$UP/ssh/sshd.pid" "$UP/ssh/sshd_config"; then
  mkdir -p /run/sshd
  /usr/sbin/sshd -t -f "$UP/ssh/sshd_config"
  /usr/sbin/sshd -f "$UP/ssh/sshd_config" -E "$UP/ssh/sshd.log"
fi

# the flat network's bridge enslaves one end of a veth pair, never eth0
ip link show $IFACE >/dev/null 2>&1 || ip link add $IFACE type veth peer name ${IFACE}p
ip link set $IFACE up; ip link set ${IFACE}p up

step "starting the controller on $API"
export KVMCLOUD_DEPLOY_DIR=$UP/deploy
export KVMCLOUD_CONTROLLER_ADDRESSES=127.0.0.1
# this cloud's SFTP store (a chroot: root-owned all the way up) and the sshd that serves it
# the sftpbackup agent may read the guest image from its directory (file:// URLs)
GUEST_DIR=$(dirname "$GUEST_IMAGE")
export KVMCLOUD_DEPLOY_AGENT_CONFIG="{\"sftpbackup\": {\"file_url_roots\": [\"$GUEST_DIR\"]}}"
export KVMCLOUD_DEPLOY_HOST_VARS="{\"sftpbackup_store_root\": \"$UP/store\", \"sftpbackup_sshd_config_dir\": \"$UP/ssh/sshd_config.d\", \"sftpbackup_sshd_pidfile\": \"$UP/ssh/sshd.pid\"}"
if ! running "$UP/controller.pid" "controller.cli serve"; then
  (
    umask 077   # the database and the log are the controller's only (this subshell's umask)
    KVMCLOUD_API_TOKENS=$(cat "$UP/api-token") KVMCLOUD_AGENT_TOKEN=$(cat "$UP/agent-token") \
      setsid "$PY" -m controller.cli serve --listen "127.0.0.1:$API_PORT" --db "sqlite:///$UP/kvmcloud.db" \
      --setting "db_backup_dir=$UP/db-backups" >>"$UP/controller.log" 2>&1 </dev/null &
    echo $! > "$UP/controller.pid"
  )
fi
for _ in $(seq 300); do
  curl -sf -o /dev/null -H "Authorization: Bearer $(cat "$UP/api-token")" "$API/v1/zones" && break
  running "$UP/controller.pid" "controller.cli serve" || { tail -20 "$UP/controller.log"; echo "the controller exited" >&2; exit 1; }
  sleep 0.2
done

"$PY" -m controller.deploy.allinone --api "$API" --api-token-file "$UP/api-token" \
  --ssh-port "$SSH_PORT" --guest-image "$GUEST_IMAGE" \
  --marker "$GUEST_MARKER" --interface $IFACE \
  --primary-storage "/var/lib/kvmcloud/storage/cloud-$(cat "$UP/cloud-id")" \
  --summary "$UP/summary.json"

VM=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vm"])' "$UP/summary.json")
CONSOLE=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["console"])' "$UP/summary.json")
step "kvmcloud is up"
cat <<MSG

  API        $API   (token: $UP/api-token)
  CLI        export KVMCLOUD_URL=$API KVMCLOUD_TOKEN=\$(cat $UP/api-token)
             .venv/bin/kvmcloud vm list
  curl       curl -H "Authorization: Bearer \$(cat $UP/api-token)" $API/v1/vms
  VM         $VM (Running)
  console    $CONSOLE
  logs       $UP/controller.log, /var/log/kvmcloud/<agent>.log
  stop       make down
MSG
