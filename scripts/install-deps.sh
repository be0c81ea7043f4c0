#!/bin/bash
# Installs everything kvmcloud's tests and demo need on a fresh Debian 12 machine:
# the Debian packages (libvirt/QEMU, Ceph, nfs-ganesha, OpenSSH, ...) and the
# project's venv (.venv, made from Debian's python3 so that the python3-libvirt,
# python3-rados and python3-rbd bindings are importable), with kvmcloud installed
# editable. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# MariaDB: the -core packages (mariadbd, mariadb-install-db, the client) and
# mariadb-client (mariadb-dump, for `kvmcloud db backup`), which
# ship no init script or systemd unit, so installing them starts no system server;
# scripts/components/55-mariadb.sh runs its own.
APT_PACKAGES=(
  python3 python3-venv python3-dev build-essential
  libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils qemu-block-extra
  python3-libvirt libvirt-dev pkg-config dnsmasq-base cpio busybox-static
  syslinux syslinux-common mtools dosfstools fdisk
  ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd
  nfs-ganesha nfs-ganesha-vfs libnfs-utils rpcbind nfs-common
  openssh-server openssh-client openssh-sftp-server
  bc iproute2 iptables iputils-ping curl xz-utils libxml2-utils procps psmisc
  debootstrap systemd-container dpkg-dev postgresql mariadb-server-core mariadb-client-core mariadb-client
  shellcheck
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV=${KVMCLOUD_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum setup.cfg | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip setuptools wheel
  "$VENV/bin/pip" install -q -e '.[test,dev,postgres,mysql]'
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
"$VENV/bin/python" -c "import libvirt, rados, rbd, agentcore"
