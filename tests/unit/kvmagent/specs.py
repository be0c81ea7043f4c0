"""Representative VM specs shared by the domain XML tests and the benchmark."""

from __future__ import annotations

from typing import Any

VM = "0f6f1a32-5b43-4c1e-9a7e-2f4b1c2d3e4f"
OWNER = "9d2c4b6a-1e3f-4a5b-8c7d-6e5f4a3b2c1d"


def vol(n: int, **extra: Any) -> dict[str, Any]:
    return {"type": "file", "volumeUuid": f"{n:08x}-0000-4000-8000-000000000000", "deviceId": n,
            "installPath": f"/var/lib/kvmcloud/ps1/volumes/v{n}.qcow2", **extra}


def rbd(n: int) -> dict[str, Any]:
    return {"type": "rbd", "volumeUuid": f"{n:08x}-0000-4000-8000-0000000000bb", "deviceId": n,
            "installPath": f"vms/volume-{n}", "monitors": [{"host": "10.0.0.1"}, {"host": "10.0.0.2", "port": 3300}],
            "authUser": "libvirt", "secretUuid": "5e0b8f0e-2d3c-4b1a-9f8e-7d6c5b4a3f2e"}


def nic(n: int, bridge: str = "br_eth0") -> dict[str, Any]:
    return {"mac": f"52:54:00:00:00:{n:02x}", "bridgeName": bridge}


def spec(**extra: Any) -> dict[str, Any]:
    return {"vmUuid": VM, "vmName": "web-1", "ownerUuid": OWNER, "cpuNum": 2, "memorySize": 512 << 20,
            "rootVolume": vol(0), **extra}


SPECS: dict[str, dict[str, Any]] = {
    "file_disks": spec(dataVolumes=[vol(1), vol(2, format="raw", cache="writeback")], vnc=None),
    "rbd_with_secret": spec(rootVolume=rbd(0), dataVolumes=[rbd(1)], nics=[nic(1)]),
    "several_nics": spec(nics=[{**nic(1), "ip": "10.20.0.11"}, nic(2, "br_vx100"),
                               {**nic(3), "model": "e1000", "deviceName": "vm1nic3", "mtu": 1450}]),
    "iso_and_vnc": spec(iso={"path": "/var/lib/kvmcloud/iso/debian.iso"}, bootOrder=["cdrom", "hd"],
                        vnc={"listen": "0.0.0.0", "password": "s3cret"}, machineType="q35"),
}


def big_spec() -> dict[str, Any]:
    """16 disks and 8 NICs (the benchmark's VM)."""
    return spec(dataVolumes=[vol(i) for i in range(1, 16)], nics=[nic(i) for i in range(1, 9)])
