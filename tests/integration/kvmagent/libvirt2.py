"""A second libvirtd on this machine, standing in for a second host.

It runs in a private mount namespace whose /run/libvirt, /var/lib/libvirt,
/var/cache/libvirt, /var/log/libvirt and /etc/libvirt are bind mounts of its
own directories, with its own host UUID, so libvirt treats it as another host
(live migration refuses a migration to the same host UUID). Clients reach it
through its unix socket, which lives in its directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path


class SecondLibvirtd:
    def __init__(self, base: Path, tcp_addr: str | None = None,
                 virtlogd_conf: dict[str, str] | None = None) -> None:
        self.base = base
        self.virtlogd_conf = virtlogd_conf or {}  # settings of its virtlogd.conf (e.g. a small max_size)
        self.uri = f"qemu+unix:///system?socket={base}/run/libvirt-sock"
        # with an address, it also listens on <addr>:16509 (plain TCP, no auth), so the
        # default migration URI qemu+tcp://<addr>/system reaches it as it would a real host
        self.tcp_addr = tcp_addr

    def start(self, timeout: float = 60) -> SecondLibvirtd:
        b = self.base
        for d in ("run", "lib/qemu", "lib/images", "cache", "log", "etc"):
            (b / d).mkdir(parents=True, exist_ok=True)
        shutil.copytree("/etc/libvirt", b / "etc", dirs_exist_ok=True)
        for f in (b / "etc" / "qemu").glob("*.xml"):
            f.unlink()
        with open(b / "etc" / "libvirtd.conf", "a") as conf:
            conf.write(f'\nhost_uuid = "{uuid.uuid4()}"\n')
            if self.tcp_addr:
                conf.write(f'listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "{self.tcp_addr}"\n'
                        'auth_tcp = "none"\n')
        if self.virtlogd_conf:  # replace the settings: libvirt reads the first line of a key
            conf = b / "etc" / "virtlogd.conf"
            keep = [line for line in conf.read_text().splitlines()
                    if line.partition("=")[0].strip() not in self.virtlogd_conf]
            conf.write_text("\n".join(keep + [f"{k} = {v}" for k, v in self.virtlogd_conf.items()]) + "\n")
        shutil.chown(b / "lib" / "qemu", "libvirt-qemu", "libvirt-qemu")
        if Path("/var/cache/libvirt").exists():  # reuse the QEMU capability cache: starts in 0.2 s
            shutil.copytree("/var/cache/libvirt", b / "cache", dirs_exist_ok=True)
        script = b / "start.sh"
        script.write_text(
            "set -e\n"
            f"mount --bind {b}/run /run/libvirt\n"
            f"mount --bind {b}/lib /var/lib/libvirt\n"
            f"mount --bind {b}/cache /var/cache/libvirt\n"
            f"mount --bind {b}/log /var/log/libvirt\n"
            f"mount --bind {b}/etc /etc/libvirt\n"
            f"virtlogd -d -p {b}/virtlogd.pid\n"
            f"libvirtd -d {'-l ' if self.tcp_addr else ''}-p {b}/libvirtd.pid\n"
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

    def stop(self) -> None:
        r = subprocess.run(["virsh", "-c", self.uri, "list", "--name"], capture_output=True, text=True, timeout=10)
        for name in r.stdout.split():
            subprocess.run(["virsh", "-c", self.uri, "destroy", name], capture_output=True, timeout=30)
        for name in ("libvirtd.pid", "virtlogd.pid"):
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
