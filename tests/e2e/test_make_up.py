"""``make up``'s path on this machine: deps, libvirtd, the guest, an sshd, the
controller, the agents deployed over SSH by the real playbooks (sftpbackup by
the controller's add-backup-storage, kvmagent and storageagent by its add-host),
every resource (the guest image too, from a file:// URL) added through the API,
and a VM whose serial console shows
the guest's marker. ``make down`` stops it all (libvirtd stays: other tests share it).
It runs as a new user's first ``make up`` may: under ``umask 077``, with a 0700
``/var/lib/kvmcloud`` left behind."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ENV_DIR, ROOT
from tests.support.agents import free_port

pytestmark = [pytest.mark.ansible, pytest.mark.libvirt, pytest.mark.sftp, pytest.mark.slow]


@pytest.fixture
def up_env() -> Iterator[dict[str, str]]:
    # the chroot of the SFTP store wants root-owned parents; /var/tmp is world-writable
    up_dir = Path("/var/lib/kvmcloud-e2e") / uuid.uuid4().hex[:8]
    up_dir.parent.mkdir(exist_ok=True)
    os.chmod(up_dir.parent, 0o755)  # the store user's sshd reads keys below it
    env = {**os.environ, "KVMCLOUD_TEST_ENV": str(ENV_DIR), "KVMCLOUD_UP_DIR": str(up_dir),
           "KVMCLOUD_API_PORT": str(free_port()), "KVMCLOUD_UP_SSH_PORT": str(free_port()),
           "KVMCLOUD_DOWN_KEEP_LIBVIRT": "1"}
    yield env
    down = subprocess.run(["bash", str(ROOT / "scripts" / "down.sh")], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert down.returncode == 0, down.stderr
    if (up_dir / "cloud-id").exists():
        shutil.rmtree(Path("/var/lib/kvmcloud/storage") / f"cloud-{(up_dir / 'cloud-id').read_text()}",
                      ignore_errors=True)
    shutil.rmtree(up_dir, ignore_errors=True)


@pytest.fixture
def private_state_root() -> Iterator[Path]:
    """``/var/lib/kvmcloud`` as a strict umask leaves it: 0700 (made so when missing)."""
    root = Path("/var/lib/kvmcloud")
    existed = root.exists()
    before = stat.S_IMODE(root.stat().st_mode) if existed else None
    root.mkdir(exist_ok=True)
    os.chmod(root, 0o700)
    yield root
    if before is not None:
        os.chmod(root, before)


def test_make_up_boots_a_vm_through_the_controller(up_env: dict[str, str], private_state_root: Path) -> None:
    # a new user's shell may have umask 077, and an earlier run may have left a 0700 state root:
    # QEMU (libvirt-qemu) must still reach the volumes below it
    up = subprocess.run(["bash", "-c", 'umask 077 && exec bash "$0"', str(ROOT / "scripts" / "up.sh")],
                        env=up_env, capture_output=True, text=True, timeout=900, check=False)
    assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
    assert stat.S_IMODE(private_state_root.stat().st_mode) == 0o711  # the role opened it for QEMU
    up_dir = Path(up_env["KVMCLOUD_UP_DIR"])
    summary = json.loads((up_dir / "summary.json").read_text())
    guest = dict(line.split("=", 1) for line in (ENV_DIR / "guest.env").read_text().split())
    assert guest["GUEST_MARKER"] in Path(summary["console"]).read_text(errors="replace")
    token = (up_dir / "api-token").read_text().strip()
    api = httpx.Client(base_url=summary["api"], headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert api.get(f"/v1/vms/{summary['vm']}").json()["state"] == "Running"
    host = api.get(f"/v1/hosts/{summary['host']}").json()
    assert host["status"] == "Connected"
    assert "kvmcloud is up" in up.stdout and summary["console"] in up.stdout
    assert api.get("/v1/vms", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # the controller took its first scheduled database backup at start, with its manifest
    backups = sorted((up_dir / "db-backups").glob("kvmcloud-db-*.sqlite3"))
    assert backups and (backups[0].parent / (backups[0].name + ".json")).exists(), backups
