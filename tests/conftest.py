"""Fixtures shared by every test: the real components' environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV_DIR = Path(os.environ.get("KVMCLOUD_TEST_ENV", "/var/tmp/kvmcloud-test"))

# The fixtures stand in for an operator's directories (NFS exports, mount bases, a second
# libvirtd's tree) that QEMU, running as libvirt-qemu, must reach: they are made as under a
# usual umask whatever the caller's. The project's own modes do not rely on it and are tested
# under umask 077 (tests/unit/agentcore/test_fsmode.py, the storage layout test, and
# tests/e2e/test_make_up.py, which runs make up under umask 077).
os.umask(0o022)


def read_component_env(name: str) -> dict[str, str]:
    """What ``scripts/components/NN-<name>.sh up`` wrote; starts it if needed."""
    env_file = ENV_DIR / f"{name}.env"
    if not env_file.exists():
        scripts = sorted((ROOT / "scripts" / "components").glob(f"*-{name}.sh"))
        if not scripts:
            raise RuntimeError(f"no component script for {name}")
        subprocess.run(["bash", str(scripts[0]), "up"], check=True, timeout=600,
                       env={**os.environ, "KVMCLOUD_TEST_ENV": str(ENV_DIR)})
    values: dict[str, str] = {}
    for line in env_file.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            values[k.strip()] = v.strip()
    return values


@pytest.fixture(scope="session")
def component_env():  # type: ignore[no-untyped-def]
    """``component_env("ceph")`` gives the ceph component's KEY=VALUE facts."""
    cache: dict[str, dict[str, str]] = {}

    def get(name: str) -> dict[str, str]:
        if name not in cache:
            cache[name] = read_component_env(name)
        return cache[name]

    return get
