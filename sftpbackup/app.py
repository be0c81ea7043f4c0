"""The sftpbackup agent: config, plugins and console script."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from agentcore.config import AgentConfig
from agentcore.plugin import Plugin
from agentcore.serve import agent_main
from sftpbackup.plugins.backup import BackupPlugin
from sftpbackup.plugins.images import ImagePlugin
from sftpbackup.service import BackupService

NAME = "sftpbackup"


class Config(AgentConfig):
    """Config of the sftpbackup agent."""

    listen: str = Field(default="127.0.0.1:7171", description="HOST:PORT to serve on")
    sftp_key_file: Path | None = Field(
        default=None, description="private key for sftp:// URLs and push/pull to other stores",
    )
    sftp_known_hosts: Path | None = Field(
        default=None, description="known_hosts file the other stores' host keys are checked against",
    )
    file_url_roots: list[Path] = Field(
        default_factory=list, description="directories file:// URLs may read from (none: file:// refused)",
    )
    download_allow_local: bool = Field(
        default=False,
        description="let http(s) image URLs and their redirects reach loopback, link-local and "
                    "metadata addresses (refused by default; for single-host labs and tests)",
    )


def make_plugins(config: Config) -> list[Plugin]:
    service = BackupService(config.sftp_key_file, config.sftp_known_hosts, config.file_url_roots,
                            config.download_allow_local)
    return [BackupPlugin(service), ImagePlugin(service)]


def main(argv: Sequence[str] | None = None) -> int:
    return agent_main(NAME, Config, make_plugins, argv)


if __name__ == "__main__":
    sys.exit(main())
