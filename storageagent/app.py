"""The storageagent: config, plugins and console script."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from agentcore.config import AgentConfig
from agentcore.plugin import Plugin
from agentcore.serve import agent_main
from storageagent.plugins.cache import CachePlugin
from storageagent.plugins.snapshot import SnapshotPlugin
from storageagent.plugins.storage import StoragePlugin
from storageagent.plugins.volume import VolumePlugin
from storageagent.service import StorageService

NAME = "storageagent"


class Config(AgentConfig):
    """Config of the storageagent."""

    listen: str = Field(default="127.0.0.1:7071", description="HOST:PORT to serve on")
    storage_base_dirs: list[Path] = Field(
        default_factory=lambda: [Path("/var/lib/kvmcloud/storage"), Path("/mnt")],
        description="storage roots (mountPath) must lie under one of these",
    )
    mount_base: Path = Field(
        default=Path("/var/lib/kvmcloud/storage/nfs"),
        description="NFS exports are mounted at <mount_base>/<storageUuid>",
    )
    mount_helper: Literal["nfs", "bind"] = Field(
        default="nfs",
        description="'nfs': mount -t nfs; 'bind': bind-mount the export's directory of a "
        "local NFS server (hosts without a kernel NFS client, tests)",
    )
    qemu_img: str = "qemu-img"
    convert_timeout: float = Field(default=6 * 3600, gt=0, description="seconds for one conversion or copy")
    download_timeout: float = Field(default=6 * 3600, gt=0, description="seconds for one image download")
    http_read_timeout: float = Field(default=60, gt=0, description="seconds a download may stall")
    download_allow_local: bool = Field(
        default=False,
        description="let http(s) image downloads (and their redirects) reach loopback, link-local "
        "and metadata addresses (127.0.0.0/8, ::1, 169.254.0.0/16, fe80::/10); for single-host "
        "labs and tests whose image server runs on 127.0.0.1",
    )
    heartbeat_interval: float = Field(
        default=5.0, gt=0, le=300, description="seconds between a mounted NFS storage's heartbeat writes")
    sftp_key_file: Path | None = Field(default=None, description="private key for SFTP backup storage")
    sftp_known_hosts: Path | None = Field(default=None, description="known_hosts for SFTP backup storage")


def make_plugins(config: Config) -> list[Plugin]:
    service = StorageService(config)
    return [StoragePlugin(service), CachePlugin(service), VolumePlugin(service), SnapshotPlugin(service)]


def main(argv: Sequence[str] | None = None) -> int:
    return agent_main(NAME, Config, make_plugins, argv)


if __name__ == "__main__":
    sys.exit(main())
