"""The controller's SSH key, and its one-time installation with a password.

A host can be added with a password instead of a key: the password is used
once, over SFTP with the host key checked against the controller's
known_hosts, to append the controller's public key to the user's
``~/.ssh/authorized_keys``. It is not stored and never reaches Ansible.
"""

from __future__ import annotations

import logging
import stat
import subprocess
from pathlib import Path

import paramiko

from controller.deploy.errors import DeployError
from controller.deploy.known_hosts import KnownHosts

log = logging.getLogger(__name__)


def ensure_controller_key(path: Path, comment: str = "kvmcloud-controller") -> Path:
    """The controller's ed25519 key at ``path`` (created once); returns the public key path."""
    pub = path.with_name(path.name + ".pub")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True, capture_output=True, timeout=30,
        )
    return pub


def install_public_key(
    address: str, port: int, user: str, password: str, public_key: str, known_hosts: KnownHosts,
    timeout: float = 15.0,
) -> bool:
    """Append ``public_key`` to the user's authorized_keys; True if it was added."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts.path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(address, port=port, username=user, password=password, timeout=timeout,
                       allow_agent=False, look_for_keys=False, auth_timeout=timeout)
    except paramiko.AuthenticationException:
        raise DeployError(f"SSH password authentication failed for {user}@{address}:{port}") from None
    except paramiko.SSHException as e:
        raise DeployError(f"SSH to {user}@{address}:{port} failed: {e}") from None
    except OSError as e:
        raise DeployError(f"cannot reach SSH on {address}:{port}: {e}") from None
    try:
        with client.open_sftp() as sftp:
            try:
                sftp.mkdir(".ssh", 0o700)
            except OSError:
                pass
            sftp.chmod(".ssh", 0o700)
            path = ".ssh/authorized_keys"
            try:
                with sftp.open(path, "r") as f:
                    existing = f.read().decode()
            except FileNotFoundError:
                existing = ""
            key = public_key.strip()
            if key in (line.strip() for line in existing.splitlines()):
                return False
            with sftp.open(path, "a") as f:
                f.write(("" if not existing or existing.endswith("\n") else "\n") + key + "\n")
            sftp.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
            log.info("installed the controller's key for %s@%s:%s", user, address, port)
            return True
    finally:
        client.close()
