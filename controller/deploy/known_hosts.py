"""The controller's own known_hosts file.

On first contact with a host the controller records its SSH host key with
``ssh-keyscan`` (trust on first use, recorded once); every later connection
checks the key against that record with ``StrictHostKeyChecking=yes``, so a
changed host key fails the deploy instead of being accepted silently. An
operator who re-installed a host removes the old record with :meth:`forget`.
"""

from __future__ import annotations

import fcntl
import logging
import subprocess
from pathlib import Path

from controller.deploy.errors import DeployError

log = logging.getLogger(__name__)

KEY_TYPES = "ed25519,ecdsa,rsa"


def host_pattern(address: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts."""
    return address if port == 22 else f"[{address}]:{port}"


class KnownHosts:
    """A known_hosts file that only the controller writes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def knows(self, address: str, port: int) -> bool:
        if not self.path.exists():
            return False
        proc = subprocess.run(
            ["ssh-keygen", "-F", host_pattern(address, port), "-f", str(self.path)],
            capture_output=True, text=True, timeout=10, check=False,
        )
        return proc.returncode == 0 and bool(proc.stdout.strip())

    def ensure(self, address: str, port: int, timeout: float = 5.0) -> bool:
        """Record the host's key unless known; True when it was recorded now."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.knows(address, port):
                return False
            keys = self.scan(address, port, timeout)
            with open(self.path, "a") as f:
                f.write(keys)
            self.path.chmod(0o600)
            log.warning("recorded SSH host key of %s:%s on first contact (trust on first use)", address, port)
            return True

    @staticmethod
    def scan(address: str, port: int, timeout: float) -> str:
        try:
            proc = subprocess.run(
                ["ssh-keyscan", "-p", str(port), "-T", str(max(1, int(timeout))), "-t", KEY_TYPES,
                 "--", address],  # "--": an address can never be read as an option
                capture_output=True, text=True, timeout=timeout + 10, check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeployError(f"cannot reach SSH on {address}:{port}: ssh-keyscan timed out") from None
        keys = "".join(line + "\n" for line in proc.stdout.splitlines() if line and not line.startswith("#"))
        if not keys:
            reason = proc.stderr.strip().splitlines()[-1:] or ["no answer"]
            raise DeployError(f"cannot reach SSH on {address}:{port}: {reason[0]}")
        return keys

    def forget(self, address: str, port: int) -> None:
        """Drop a host's recorded key (after an operator re-installed it)."""
        if self.path.exists():
            subprocess.run(
                ["ssh-keygen", "-R", host_pattern(address, port), "-f", str(self.path)],
                capture_output=True, timeout=10, check=False,
            )
            self.path.with_suffix(self.path.suffix + ".old").unlink(missing_ok=True)
