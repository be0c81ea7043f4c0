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

# wait_sshd ADDRESS: wait (up to 5 s) until an sshd answers there.
wait_sshd() {
  for _ in $(seq 50); do
    ssh-keyscan -T 1 -t ed25519 "$1" >/dev/null 2>&1 && return 0; sleep 0.1
  done
  return 0
}
