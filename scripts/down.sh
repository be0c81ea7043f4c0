#!/bin/bash
# make down: stop what `make up` started (VMs, agents, controller, sshd, the
# flat network's veth, the agents' firewall rules, libvirtd). Installed files
# and the database stay; `make up` starts again from them.
# KVMCLOUD_DOWN_KEEP_LIBVIRT=1 leaves libvirtd running (tests share it).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
UP=${KVMCLOUD_UP_DIR:-/var/lib/kvmcloud-up}
RUN=${KVMCLOUD_AGENT_RUN_DIR:-/run/kvmcloud}
export KVMCLOUD_TEST_ENV=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
# shellcheck source=lib/pidfile.sh
. scripts/lib/pidfile.sh
# stop_pidfile PIDFILE NEEDLE: stop the daemon of PIDFILE if its PID still names it (its
# command line holds NEEDLE: a stale file's PID may belong to another process by now)
stop_pidfile() {
  local pid
  if pid=$(pid_of "$1" "$2"); then
    start-stop-daemon --stop --oknodo --pid "$pid" --retry TERM/15/KILL/5 >/dev/null
  fi
  rm -f "$1"
}

# the VM make up created (its QEMU would outlive libvirtd)
if [ -f "$UP/summary.json" ]; then
  vm=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["vm"])' "$UP/summary.json")
  virsh -c qemu:///system destroy "$vm" >/dev/null 2>&1 && echo "destroyed VM $vm"
fi
for a in kvmagent storageagent sftpbackup cephagent; do   # supervisor loops, then agents
  stop_pidfile "$RUN/$a.pid" "$a"; stop_pidfile "$RUN/$a.agent.pid" "$a"
done
# the kvmagent's DHCP servers for flat networks (dnsmasq in a namespace per L3 network)
for d in /var/lib/kvmcloud/kvmagent/dhcp/*/; do
  [ -d "$d" ] || continue
  stop_pidfile "$d/dnsmasq.pid" dnsmasq
  id=$(basename "$d"); ip netns del "kvmcloud-dhcp-${id:0:12}" 2>/dev/null || true
done
stop_pidfile "$UP/controller.pid" "controller.cli serve"
stop_pidfile "$UP/ssh/sshd.pid" "$UP/ssh/sshd_config"
# the rules the roles added (comment "kvmcloud <agent>")
for n in $(iptables -L INPUT -n --line-numbers 2>/dev/null | awk '/\/\* kvmcloud /{print $1}' | sort -rn); do
  iptables -D INPUT "$n"
done
ip link del kcup0 2>/dev/null || true
if [ "${KVMCLOUD_DOWN_KEEP_LIBVIRT:-0}" != 1 ]; then
  bash scripts/components/10-libvirt.sh down
fi
echo "kvmcloud is down (state kept in $UP)"
