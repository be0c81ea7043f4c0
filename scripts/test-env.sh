#!/bin/bash
# Starts (up) or stops (down) every real component the tests use, by running
# each scripts/components/NN-name.sh in order (down: in reverse). Each
# component script is idempotent and writes what tests need to know
# (addresses, config paths) to $KVMCLOUD_TEST_ENV/<name>.env.
set -euo pipefail
cd "$(dirname "$0")/.."
# what the components make gets modes that do not depend on the caller's umask (secrets
# are chmod'ed explicitly): QEMU runs as libvirt-qemu and must reach the test storages
umask 022
export KVMCLOUD_TEST_ENV=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
mkdir -p "$KVMCLOUD_TEST_ENV"
action=${1:-up}
mapfile -t comps < <(ls scripts/components/*.sh 2>/dev/null | sort)
if [ "$action" = down ]; then
  for ((i=${#comps[@]}-1; i>=0; i--)); do bash "${comps[$i]}" down || true; done
  exit 0
fi
for c in "${comps[@]}"; do
  start=$(date +%s.%N)
  bash "$c" "$action"
  printf '%-40s %s %.1fs\n' "$(basename "$c")" "$action" "$(echo "$(date +%s.%N) - $start" | bc)"
done
