"""The kvmagent's configuration (TOML + ``KVMCLOUD_*`` environment)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from agentcore.config import AgentConfig


class KvmAgentConfig(AgentConfig):
    """Config of the kvmagent: the common agent fields plus libvirt and paths."""

    libvirt_uri: str = Field(default="qemu:///system", description="the libvirtd to drive")
    domain_type: Literal["auto", "kvm", "qemu"] = Field(
        default="auto", description="kvm, qemu (TCG) or auto: kvm when the CPU and /dev/kvm can run guests",
    )
    storage_roots: list[Path] = Field(
        default_factory=lambda: [Path("/var/lib/kvmcloud")],
        description="volume and ISO files must be under one of these",
    )
    console_dir: Path = Field(
        default=Path("/var/log/kvmcloud/console"), description="serial console logs, one <vm uuid>.log per VM",
    )
    dnsmasq: str = Field(default="/usr/sbin/dnsmasq", description="dnsmasq binary for flat-network DHCP")
    dhcp_tag: str = Field(
        default="", pattern=r"^[a-z0-9]{0,3}$",
        description="for a second agent sharing this machine's kernel (a nested host): "
                    "its DHCP namespaces and veths get names of their own",
    )
    anti_spoofing: bool = Field(
        default=True,
        description="VM NICs get the kvmcloud-clean-traffic nwfilter (no MAC/IP/ARP spoofing, no DHCP server "
                    "in the guest); needs libvirt's nwfilter driver with clean-traffic",
    )
    dnsmasq_user: str = Field(
        default="dnsmasq", pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description="the unprivileged user dnsmasq drops to (nobody when this user does not exist)",
    )
    dhcp_hosts_dir: Path = Field(
        default=Path("/run/kvmcloud/dhcp"),
        description="dnsmasq's hosts files (lease sets), readable by dnsmasq's group only; "
                    "outside state_dir, which dnsmasq cannot enter once it dropped root",
    )
    stop_poll_interval: float = Field(default=0.2, gt=0, le=5)
    migration_transport: Literal["ssh", "tcp"] = Field(
        default="ssh",
        description="ssh: live migration goes to root@<dest>:<migration_ssh_port> with the migration key, "
                    "the destination's host key checked against migration_known_hosts; the guest's memory "
                    "is tunnelled through that connection. tcp: UNAUTHENTICATED, UNENCRYPTED "
                    "qemu+tcp://<dest>/system (a libvirtd with auth_tcp = \"none\"): for tests only",
    )
    migration_ssh_key: Path = Field(
        default=Path("/etc/kvmcloud/migration/id_ed25519"),
        description="private key that the destination authorizes for virt-ssh-helper only",
    )
    migration_known_hosts: Path = Field(
        default=Path("/etc/kvmcloud/migration/known_hosts"),
        description="SSH host keys of the cluster's hosts; an unknown or changed key fails the migration",
    )
    migration_ssh_port: int = Field(default=22, gt=0, lt=65536, description="sshd port of the other hosts")
