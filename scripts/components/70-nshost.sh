#!/bin/bash
# "Bare hosts" for the Ansible tests: network namespaces kcnsh1..N, each with its
# own sshd on 10.231.7.1N:22, reached from the root namespace over the bridge
# kcnsh0 (10.231.7.254). They share this machine's root filesystem, so every
# path a test deploys to lives under the host's own directory ($D/hN/root).
# No route leads outside: what the hosts need is shipped by the controller.
#   up|down|status      env: NSHOST_COUNT (default 2)
set -euo pipefail
# shellcheck source=../lib/netns-host.sh
. "$(dirname "$0")/../lib/netns-host.sh"
E=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
D=$E/nshost
ENVF=$E/nshost.env
N=${NSHOST_COUNT:-2}
BR=kcnsh0
NET=10.231.7
PWUSER=kcnshpw

host_up() {
  local i=$1 ns=kcnsh$1 h=$D/h$1 ip=$NET.1$1
  mkdir -p "$h/root"
  netns_host "$ns" "kcnsh$i-br" $BR "$ip/24" $NET.254
  [ -f "$h/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$h/ssh_host_ed25519_key"
  cp "$D/id_ed25519.pub" "$h/authorized_keys"; chmod 600 "$h/authorized_keys"
  mkdir -p "$h/root/etc/ssh/sshd_config.d"
  cat > "$h/sshd_config" <<CONF
Port 22
ListenAddress $ip
HostKey $h/ssh_host_ed25519_key
PidFile $h/sshd.pid
AuthorizedKeysFile $h/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
Include $h/root/etc/ssh/sshd_config.d/*.conf
# the one user that may log in with a password: tests of the one-time key installation
Match User $PWUSER
    PasswordAuthentication yes
    AuthorizedKeysFile .ssh/authorized_keys
CONF
  if ! pid_alive "$h/sshd.pid" "$h/sshd_config"; then
    rm -f "$h/sshd.pid"
    mkdir -p /run/sshd
    /usr/sbin/sshd -t -f "$h/sshd_config"
    ip netns exec "$ns" /usr/sbin/sshd -f "$h/sshd_config" -E "$h/sshd.log"
  else
    kill -HUP "$(pid_of "$h/sshd.pid" "$h/sshd_config")"   # re-read the config written above
  fi
  wait_sshd "$ip"
  {
    echo "NSHOST_${i}_ADDR=$ip"
    echo "NSHOST_${i}_NETNS=$ns"
    echo "NSHOST_${i}_ROOT=$h/root"
    echo "NSHOST_${i}_SSHD_PIDFILE=$h/sshd.pid"
    echo "NSHOST_${i}_SSHD_CONFIG_DIR=$h/root/etc/ssh/sshd_config.d"
    echo "NSHOST_${i}_HOST_KEY=$(cut -d' ' -f1,2 "$h/ssh_host_ed25519_key.pub")"
  } >> "$ENVF.tmp"
}

host_down() {
  local i=$1 ns=kcnsh$1 h=$D/h$1
  # every process started inside the namespace (sshd, deployed agents and their loops)
  netns_host_down "$ns" "kcnsh$i-br"
  rm -f "$h/sshd.pid"
}

case ${1:-status} in
  up)
    mkdir -p "$D"; chmod 700 "$D"
    # a user with a password (never root's): the controller uses such a password once to install its key
    id "$PWUSER" >/dev/null 2>&1 || useradd -m -s /bin/sh "$PWUSER"
    [ -s "$D/password" ] || (umask 077; head -c 18 /dev/urandom | base64 > "$D/password")
    echo "$PWUSER:$(cat "$D/password")" | chpasswd
    [ -f "$D/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C kvmcloud-test-controller -f "$D/id_ed25519"
    ip link show $BR >/dev/null 2>&1 || ip link add $BR type bridge
    ip link set $BR up
    ip -4 addr show dev $BR | grep -q "$NET.254/" || ip addr add $NET.254/24 dev $BR
    {
      echo "NSHOST_COUNT=$N"
      echo "NSHOST_KEY=$D/id_ed25519"
      echo "NSHOST_GATEWAY=$NET.254"
      echo "NSHOST_SSH_PORT=22"
      echo "NSHOST_PASSWORD_USER=$PWUSER"
      echo "NSHOST_PASSWORD_FILE=$D/password"
    } > "$ENVF.tmp"
    for i in $(seq "$N"); do host_up "$i"; done
    mv "$ENVF.tmp" "$ENVF"
    ;;
  down)
    for i in $(seq 9); do host_down "$i"; done
    ip link del $BR 2>/dev/null || true
    rm -rf "$ENVF" "$D"
    ;;
  status)
    for i in $(seq "$N"); do
      ip netns exec "kcnsh$i" ssh-keyscan -T 1 "$NET.1$i" >/dev/null 2>&1 && echo "kcnsh$i up" || echo "kcnsh$i down"
    done
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
