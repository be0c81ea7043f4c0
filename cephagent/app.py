"""The cephagent: config, plugins and console script."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from agentcore.config import AgentConfig
from agentcore.plugin import Plugin
from agentcore.serve import agent_main
from cephagent.connection import CallRunner, ConnectionPool, Credentials, Limits
from cephagent.plugins.base import CephContext
from cephagent.plugins.cluster import ClusterPlugin
from cephagent.plugins.images import ImagePlugin
from cephagent.plugins.snapshots import SnapshotPlugin
from cephagent.plugins.volumes import VolumePlugin

NAME = "cephagent"


class Config(AgentConfig):
    """Config of the cephagent."""

    keyring_dirs: list[Path] = Field(
        default_factory=lambda: [Path("/etc/ceph")],
        description="directories a command's cluster.keyring may name a file in",
    )
    secrets_dir: Path | None = Field(
        default=None, description="directory of bare cephx key files named by cluster.keyRef",
    )
    allow_admin_user: bool = Field(default=False, description="accept client.admin credentials")
    op_timeout: float = Field(default=30.0, gt=0, le=3600, description="bound of one rados/rbd call")
    connect_timeout: float = Field(default=10.0, gt=0, le=600)
    long_op_timeout: float = Field(default=6 * 3600.0, gt=0, description="bound of flatten/copy/import")
    ceph_threads: int = Field(default=64, ge=4, le=1024, description="threads for binding calls")
    work_dir: Path | None = Field(default=None, description="scratch space for image conversion")
    download_timeout: float = Field(default=60.0, gt=0, description="HTTP connect/read timeout")
    download_allow_local: bool = Field(
        default=False,
        description="let http(s) image downloads (and their redirects) reach loopback, link-local "
        "and metadata addresses (127.0.0.0/8, ::1, 169.254.0.0/16, fe80::/10); for single-host "
        "labs and tests whose image server runs on 127.0.0.1",
    )
    sftp_key_file: Path | None = None
    sftp_known_hosts: Path | None = None


def make_context(config: Config) -> CephContext:
    limits = Limits(op_timeout=config.op_timeout, connect_timeout=config.connect_timeout,
                    long_op_timeout=config.long_op_timeout)
    runner = CallRunner(limits, max_threads=config.ceph_threads)
    creds = Credentials(config.keyring_dirs, config.secrets_dir, config.allow_admin_user)
    return CephContext(pool=ConnectionPool(creds, runner),
                       work_dir=config.work_dir or config.state_dir / "work",
                       download_timeout=config.download_timeout,
                       download_allow_local=config.download_allow_local,
                       sftp_key_file=config.sftp_key_file,
                       sftp_known_hosts=config.sftp_known_hosts)


def make_plugins(config: Config) -> list[Plugin]:
    ceph = make_context(config)
    return [ClusterPlugin(ceph), VolumePlugin(ceph), SnapshotPlugin(ceph), ImagePlugin(ceph)]


def main(argv: Sequence[str] | None = None) -> int:
    return agent_main(NAME, Config, make_plugins, argv)


if __name__ == "__main__":
    sys.exit(main())
