"""Deploy benchmark: the kvmagent onto a bare namespace host (component
``nshost``, which shares this machine's root filesystem, so its packages are
there) through the controller's deploy seam and the real playbooks, an
idempotent re-run of the same deploy; the kvmagent onto a really bare host
(component ``chroothost``: a fresh debootstrap minbase root, no mirror), its
packages (libvirt, QEMU...) resolved, downloaded and shipped by the controller
and installed by the play; and ``make up`` (scripts/up.sh) to a running VM
whose serial console shows the guest's marker.

``make up`` is measured on this machine as it is when the benchmark runs: the
Debian packages and the venv are already installed (install-deps.sh only
checks them) and libvirtd's capability cache is warm; the time a mirror takes
to deliver the packages on a truly fresh machine is not in the number.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from controller.deploy import Deployer, DeployResult, DeploySettings, DeployTarget, Wheelhouse
from tests.bench.common import Result, write
from tests.conftest import ENV_DIR, ROOT, read_component_env
from tests.support.agents import free_port


def _stop(netns: str, root: Path) -> None:
    from tests.integration.ansible.conftest import stop_host

    stop_host(netns, root)


def _deployer(ns: dict[str, str]) -> tuple[Deployer, Path]:
    """A deployer with a fresh work directory (no cached package repository), firewalled to the bridge."""
    house = Wheelhouse.build(ROOT, ENV_DIR / "ansible-wheels")
    work = ENV_DIR / f"bench-deploy-{uuid.uuid4().hex[:8]}"
    settings = DeploySettings(work_dir=work, wheelhouse=house, controller_addresses=[ns["NSHOST_GATEWAY"]])
    return Deployer(settings), work


def _timed_deploy(deployer: Deployer, target: DeployTarget, config: dict[str, Any]) -> tuple[DeployResult, float]:
    t = time.monotonic()
    result = deployer.deploy(target, "kvmagent", config)
    seconds = time.monotonic() - t
    assert result.success, result.message
    return result, seconds


def bench_namespace_host() -> list[Result]:
    read_component_env("libvirt")
    ns = read_component_env("nshost")
    from tests.integration.ansible.conftest import host_vars

    root = Path(ns["NSHOST_1_ROOT"]) / f"b-{uuid.uuid4().hex[:8]}"
    target = DeployTarget(ns["NSHOST_1_ADDR"], key_file=Path(ns["NSHOST_KEY"]), host_vars=host_vars(root, ns, 1))
    deployer, work = _deployer(ns)
    try:
        first, first_s = _timed_deploy(deployer, target, {})
        assert first.token is not None
        again, again_s = _timed_deploy(deployer, target, {"token": first.token.get_secret_value()})
        assert again.changed == 0, again.message
    finally:
        _stop(ns["NSHOST_1_NETNS"], root)
        shutil.rmtree(work, ignore_errors=True)
    return [
        Result("deploy kvmagent to a bare namespace host", round(first_s, 2), "s", "lower"),
        Result.against("idempotent re-run of the kvmagent deploy", round(again_s, 2), "s", "lower",
                       "first deploy (same run)", round(first_s, 2)),
    ]


def bench_debootstrap_host() -> Result:
    """From a fresh copy of the pristine root, with an empty package cache on the controller:
    building the local repository (apt-get download from the controller's mirror) is in the time."""
    read_component_env("chroothost")
    subprocess.run(["bash", str(ROOT / "scripts" / "components" / "75-chroothost.sh"), "fresh"], check=True,
                   capture_output=True, timeout=600)
    env = read_component_env("chroothost")
    target = DeployTarget(env["CHROOTHOST_ADDR"], key_file=Path(env["CHROOTHOST_KEY"]), ship_packages=True)
    deployer, work = _deployer(read_component_env("nshost"))
    try:
        _, seconds = _timed_deploy(deployer, target, {})
    finally:
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["bash", str(ROOT / "scripts" / "components" / "75-chroothost.sh"), "fresh"], check=False,
                       capture_output=True, timeout=600)
    return Result("deploy kvmagent to a bare debootstrap host, packages shipped", round(seconds, 2), "s", "lower")


def bench_make_up() -> Result:
    up_dir = Path("/var/lib/kvmcloud-bench") / uuid.uuid4().hex[:8]
    env = {**os.environ, "KVMCLOUD_TEST_ENV": str(ENV_DIR), "KVMCLOUD_UP_DIR": str(up_dir),
           "KVMCLOUD_API_PORT": str(free_port()), "KVMCLOUD_UP_SSH_PORT": str(free_port()),
           "KVMCLOUD_DOWN_KEEP_LIBVIRT": "1"}
    try:
        t = time.monotonic()
        up = subprocess.run(["bash", str(ROOT / "scripts" / "up.sh")], env=env, capture_output=True, text=True,
                            timeout=1800, check=False)
        seconds = time.monotonic() - t
        if up.returncode != 0:
            raise RuntimeError(f"make up failed: {up.stdout[-3000:]}{up.stderr[-3000:]}")
        json.loads((up_dir / "summary.json").read_text())
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "down.sh")], env=env, capture_output=True, timeout=300,
                       check=False)
        if (up_dir / "cloud-id").exists():
            shutil.rmtree(Path("/var/lib/kvmcloud/storage") / f"cloud-{(up_dir / 'cloud-id').read_text()}",
                          ignore_errors=True)
        shutil.rmtree(up_dir, ignore_errors=True)
    return Result("make up to running VM", round(seconds, 1), "s", "lower")


def main() -> None:
    results = bench_namespace_host()
    results.append(bench_debootstrap_host())
    results.append(bench_make_up())
    write("deploy", results, command="BENCH=deploy .venv/bin/python -m tests.bench.run")


if __name__ == "__main__":
    main()
