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
