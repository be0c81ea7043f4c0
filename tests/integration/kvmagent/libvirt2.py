"""A second libvirtd on this machine, standing in for a second host.

It runs in a private mount namespace whose /run/libvirt, /var/lib/libvirt,
/var/cache/libvirt, /var/log/libvirt and /etc/libvirt are bind mounts of its
own directories, with its own host UUID, so libvirt treats it as another host
(live migration refuses a migration to the same host UUID). Clients reach it
through its unix socket, which lives in its directory.

For migration over SSH, :meth:`SecondLibvirtd.start_sshd` runs an sshd in that
mount namespace, set up as the kvmagent Ansible role sets up a host: the
migration key is authorized for root with ``restrict`` and a forced
``virt-ssh-helper qemu:///system``, so it reaches this libvirtd and nothing else.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from agentcore.fsmode import SHARED, make_dirs

# the kvmagent role authorizes the migration key with these options (ansible/roles/kvmagent)
MIGRATION_KEY_OPTIONS = 'restrict,command="virt-ssh-helper qemu:///system"'


@dataclass
class MigrationSshd:
    """An sshd in front of a second libvirtd: where it listens and what a client needs."""

    addr: str
    port: int
    key: Path
    """the migration private key the sshd authorizes"""
    known_hosts: Path
    """the sshd's host key, as the kvmagent role ships a cluster's known_hosts"""


class SecondLibvirtd:
    def __init__(self, base: Path, virtlogd_conf: dict[str, str] | None = None) -> None:
        self.base = base
        self.virtlogd_conf = virtlogd_conf or {}  # settings of its virtlogd.conf (e.g. a small max_size)
        self.uri = f"qemu+unix:///system?socket={base}/run/libvirt-sock"
        # no TCP listener: other "hosts" reach it over SSH only (start_sshd)
        self.sshd: MigrationSshd | None = None

    def start(self, timeout: float = 60) -> SecondLibvirtd:
        b = self.base
        for d in ("run", "lib/qemu", "lib/images", "cache", "log", "etc"):
            # QEMU (libvirt-qemu) passes through these, whatever the test run's umask
            make_dirs(b / d, SHARED)
        shutil.copytree("/etc/libvirt", b / "etc", dirs_exist_ok=True)
        for f in (b / "etc" / "qemu").glob("*.xml"):
            f.unlink()
        with open(b / "etc" / "libvirtd.conf", "a") as conf:
            conf.write(f'\nhost_uuid = "{uuid.uuid4()}"\n')
        if self.virtlogd_conf:  # replace the settings: libvirt reads the first line of a key
            logd_conf = b / "etc" / "virtlogd.conf"
            keep = [line for line in logd_conf.read_text().splitlines()
                    if line.partition("=")[0].strip() not in self.virtlogd_conf]
            logd_conf.write_text("\n".join(keep + [f"{k} = {v}" for k, v in self.virtlogd_conf.items()]) + "\n")
        shutil.chown(b / "lib" / "qemu", "libvirt-qemu", "libvirt-qemu")
        if Path("/var/cache/libvirt").exists():  # reuse the QEMU capability cache: starts in 0.2 s
            shutil.copytree("/var/cache/libvirt", b / "cache", dirs_exist_ok=True)
        script = b / "start.sh"
        script.write_text(
            "set -e\n"
            "umask 022\n"  # the daemons' own files: as the system libvirtd makes them
            f"mount --bind {b}/run /run/libvirt\n"
            f"mount --bind {b}/lib /var/lib/libvirt\n"
            f"mount --bind {b}/cache /var/cache/libvirt\n"
            f"mount --bind {b}/log /var/log/libvirt\n"
            f"mount --bind {b}/etc /etc/libvirt\n"
            f"virtlogd -d -p {b}/virtlogd.pid\n"
            f"libvirtd -d -p {b}/libvirtd.pid\n"
        )
        subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", str(script)],
                       check=True, timeout=60)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = subprocess.run(["virsh", "-c", self.uri, "version"], capture_output=True, timeout=10)
            if r.returncode == 0:
                return self
            time.sleep(0.2)
        raise AssertionError("the second libvirtd did not come up")

    def start_sshd(self, addr: str, port: int, client_dir: Path | None = None,
                   timeout: float = 30) -> MigrationSshd:
        """An sshd on ``addr:port`` in this libvirtd's mount namespace (see the module's doc);
        the migration key and a known_hosts with its host key go to ``client_dir``."""
        d = self.base / "sshd"
        client = client_dir or d
        for where in (d, client):
            where.mkdir(mode=0o700, exist_ok=True)
        _keygen(d / "host_ed25519", "host")
        _keygen(client / "id_ed25519", "kvmcloud-migration")
        pub = (client / "id_ed25519.pub").read_text().strip()
        (d / "authorized_keys").write_text(f"{MIGRATION_KEY_OPTIONS} {pub}\n")
        host_key = " ".join((d / "host_ed25519.pub").read_text().split()[:2])
        (client / "known_hosts").write_text(f"[{addr}]:{port} {host_key}\n")
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress {addr}\nHostKey {d}/host_ed25519\nPidFile {self.base}/sshd.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n")
        logd = _pid(self.base / "virtlogd.pid")
        assert logd is not None, "start the libvirtd first"
        subprocess.run(["nsenter", f"--mount=/proc/{logd}/ns/mnt", "/usr/sbin/sshd", "-f", str(d / "sshd_config"),
                        "-E", str(d / "sshd.log")], check=True, timeout=30)
        end = time.monotonic() + timeout
        while _pid(self.base / "sshd.pid") is None:
            if time.monotonic() > end:
                raise AssertionError("the second libvirtd's sshd did not come up")
            time.sleep(0.1)
        self.sshd = MigrationSshd(addr, port, client / "id_ed25519", client / "known_hosts")
        return self.sshd

    def stop(self) -> None:
        r = subprocess.run(["virsh", "-c", self.uri, "list", "--name"], capture_output=True, text=True, timeout=10)
        for name in r.stdout.split():
            subprocess.run(["virsh", "-c", self.uri, "destroy", name], capture_output=True, timeout=30)
        for name in ("sshd.pid", "libvirtd.pid", "virtlogd.pid"):
            pid_file = self.base / name
            if not pid_file.exists():
                continue
            pid = int(pid_file.read_text().strip())
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)


def _keygen(path: Path, comment: str) -> None:
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, capture_output=True, timeout=30)


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def kill_libvirtd(lv: SecondLibvirtd, sig: int = signal.SIGKILL) -> None:
    """Kill the second libvirtd (its guests live on, as with a real libvirtd)."""
    pid = _pid(lv.base / "libvirtd.pid")
    assert pid is not None
    os.kill(pid, sig)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def restart_libvirtd(lv: SecondLibvirtd) -> None:
    """Start libvirtd again inside the second libvirtd's mount namespace."""
    logd = _pid(lv.base / "virtlogd.pid")
    assert logd is not None
    (lv.base / "libvirtd.pid").unlink(missing_ok=True)
    subprocess.run(["nsenter", f"--mount=/proc/{logd}/ns/mnt", "libvirtd", "-d", "-p", str(lv.base / "libvirtd.pid")],
                   check=True, timeout=30)
