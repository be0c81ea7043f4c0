# shellcheck shell=bash
# shellcheck source=pidfile.sh
. "$(dirname "${BASH_SOURCE[0]}")/pidfile.sh"
# Sourced by the component scripts whose "hosts" are network namespaces on a bridge.

# netns_host NS VETH BRIDGE ADDRESS/PREFIX GATEWAY: the namespace NS with eth0 (the
# peer of VETH, a port of BRIDGE) holding ADDRESS and a default route via GATEWAY.
netns_host() {
  local ns=$1 veth=$2 br=$3 addr=$4 gw=$5
  ip netns list | grep -qw "$ns" || ip netns add "$ns"
  if ! ip link show "$veth" >/dev/null 2>&1; then
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$br" up
  fi
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip -4 addr show dev eth0 | grep -q "$addr" || ip netns exec "$ns" ip addr add "$addr" dev eth0
  ip netns exec "$ns" ip route replace default via "$gw"
}

# netns_host_down NS VETH: stop every process in NS (TERM, then KILL), drop NS and VETH.
netns_host_down() {
  local ns=$1 veth=$2 pid
  if ip netns list | grep -qw "$ns"; then
    for pid in $(ip netns pids "$ns"); do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do [ -z "$(ip netns pids "$ns")" ] && break; sleep 0.1; done
    for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns"
  fi
  ip link del "$veth" 2>/dev/null || true
}

# wait_sshd ADDRESS: wait (up to 10 s) until an sshd answers there; fail when none does.
wait_sshd() {
  for _ in $(seq 100); do
    ssh-keyscan -T 1 -t ed25519 "$1" 2>/dev/null | grep -q . && return 0; sleep 0.1
  done
  echo "no sshd answers on $1:22" >&2
  return 1
}

# root_ssh_access ROOT PUBKEY ADDRESS: in the root filesystem ROOT, root logs in with
# PUBKEY only, and sshd listens on ADDRESS only (host key made once).
root_ssh_access() {
  local root=$1 pub=$2 addr=$3
  [ -f "$root/etc/ssh/ssh_host_ed25519_key" ] || chroot "$root" ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
  mkdir -p "$root/root/.ssh"
  chmod 700 "$root/root/.ssh"
  cp "$pub" "$root/root/.ssh/authorized_keys"
  chmod 600 "$root/root/.ssh/authorized_keys"
  cat > "$root/etc/ssh/sshd_config.d/00-kvmcloud-test.conf" <<CONF
ListenAddress $addr
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
CONF
}

# host_env FILE PREFIX NETNS ADDRESS ROOT KEY GATEWAY [EXTRA=VALUE...]: the facts tests read.
host_env() {
  local f=$1 p=$2
  {
    echo "${p}_ADDR=$4"
    echo "${p}_NETNS=$3"
    echo "${p}_ROOT=$5"
    echo "${p}_SSH_PORT=22"
    echo "${p}_KEY=$6"
    echo "${p}_GATEWAY=$7"
    shift 7
    for kv in "$@"; do echo "${p}_$kv"; done
  } > "$f.tmp"
  mv "$f.tmp" "$f"
}
