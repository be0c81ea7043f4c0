"""Wire models: what the agent refuses before anything runs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kvmagent.models import (
    AttachVolumeCmd,
    MergeSnapshotCmd,
    MigrateVmCmd,
    NicSpec,
    RbdVolume,
    SetCephSecretCmd,
    StartVmCmd,
)
from tests.unit.kvmagent.specs import VM, nic, rbd, spec, vol


def error_locs(model: Any, body: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as e:
        model.model_validate(body)
    return {".".join(str(p) for p in err["loc"]) for err in e.value.errors()}


def test_a_valid_spec_round_trips_through_the_wire() -> None:
    cmd = StartVmCmd.model_validate(spec(dataVolumes=[vol(1), rbd(2)], nics=[nic(1)]))
    assert StartVmCmd.model_validate(cmd.wire()) == cmd


@pytest.mark.parametrize(("body", "loc"), [
    (spec(memorySize=-1), "memorySize"),
    (spec(memorySize=(1 << 20) + 1), "memorySize"),
    (spec(rootVolume={**vol(0), "type": "nfs"}), "rootVolume"),
    (spec(nics=[{**nic(1), "mac": "52:54:00:00:00"}]), "nics.0.mac"),
    (spec(nics=[{**nic(1), "deviceName": "vnet7"}]), "nics.0.deviceName"),
    (spec(vmUuid="not-a-uuid"), "vmUuid"),
    (spec(bootOrder=["floppy"]), "bootOrder.0"),
])
def test_bad_fields_are_named(body: dict[str, Any], loc: str) -> None:
    assert loc in error_locs(StartVmCmd, body)


@pytest.mark.parametrize("body", [
    spec(rootVolume=vol(1)),  # the root volume is device 0
    spec(dataVolumes=[vol(1), vol(1)]),
    spec(nics=[nic(1), nic(1)]),
])
def test_inconsistent_specs_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        StartVmCmd.model_validate(body)


def test_rbd_auth_user_and_secret_go_together() -> None:
    with pytest.raises(ValidationError, match="authUser and secretUuid"):
        RbdVolume.model_validate({**rbd(1), "secretUuid": None})


def test_the_root_volume_cannot_be_hot_plugged() -> None:
    with pytest.raises(ValidationError, match="root volume"):
        AttachVolumeCmd.model_validate({"vmUuid": VM, "volume": vol(0)})


def test_commit_needs_a_base() -> None:
    with pytest.raises(ValidationError, match="baseInstallPath"):
        MergeSnapshotCmd.model_validate({"vmUuid": VM, "volume": vol(1), "mode": "commit"})
    assert MergeSnapshotCmd.model_validate({"vmUuid": VM, "volume": vol(1), "mode": "pull"}).base_install_path is None


@pytest.mark.parametrize("uri", ["http://x/system", "qemu+tcp://h/system; rm -rf /", "file:///etc"])
def test_migration_destinations_are_libvirt_uris(uri: str) -> None:
    assert "destUri" in error_locs(MigrateVmCmd, {"vmUuid": VM, "destHostIp": "10.0.0.2", "destUri": uri})


def test_nic_macs_are_normalised_and_unicast() -> None:
    assert NicSpec.model_validate({"mac": "52:54:00:AA:BB:CC", "bridgeName": "br0"}).mac == "52:54:00:aa:bb:cc"
    assert "mac" in error_locs(NicSpec, {"mac": "ff:ff:ff:ff:ff:ff", "bridgeName": "br0"})


def test_ceph_keys_are_base64_only() -> None:
    assert "userKey" in error_locs(SetCephSecretCmd, {"secretUuid": VM, "userName": "u", "userKey": "$(reboot)"})
