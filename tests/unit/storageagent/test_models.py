"""Wire models: what a bad body is refused for, before anything runs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from storageagent.models import (
    MAX_SIZE,
    CacheImageCmd,
    CreateEmptyVolumeCmd,
    CreateRootVolumeCmd,
    MountCmd,
    SftpSource,
    VolumeInfoCmd,
)

REF = {"storageUuid": "ps-1", "mountPath": "/mnt/ps-1"}


def fields(e: ValidationError) -> set[str]:
    return {".".join(str(p) for p in err["loc"]) for err in e.errors()}


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/abs", "a//b", "./a", "a/", "", "a\\b", "a\x00b"])
def test_install_path_must_be_a_normal_relative_path(path: str) -> None:
    with pytest.raises(ValidationError) as e:
        VolumeInfoCmd.model_validate({**REF, "installPath": path})
    assert "installPath" in fields(e.value)


@pytest.mark.parametrize("mount", ["relative", "/", "/a/../b", "/a/./b", "/a/"])
def test_mount_path_must_be_a_normal_absolute_path(mount: str) -> None:
    with pytest.raises(ValidationError) as e:
        VolumeInfoCmd.model_validate({"storageUuid": "ps-1", "mountPath": mount, "installPath": "v"})
    assert "mountPath" in fields(e.value)


@pytest.mark.parametrize("size", [-1, 0, MAX_SIZE + 1, "big"])
def test_sizes_are_positive_and_bounded(size: object) -> None:
    with pytest.raises(ValidationError) as e:
        CreateEmptyVolumeCmd.model_validate({**REF, "installPath": "v.qcow2", "size": size})
    assert "size" in fields(e.value)


def test_wire_names_are_camel_case_and_unknown_fields_refused() -> None:
    cmd = CreateRootVolumeCmd.model_validate({**REF, "imageId": "img", "installPath": "v/r.qcow2", "size": 10})
    assert cmd.install_path == "v/r.qcow2"
    assert cmd.wire()["installPath"] == "v/r.qcow2"
    with pytest.raises(ValidationError) as e:
        CreateRootVolumeCmd.model_validate({**REF, "imageId": "img", "installPath": "v", "install_path": "w"})
    assert "install_path" in fields(e.value)


def test_cache_source_is_chosen_by_kind() -> None:
    body = {**REF, "imageId": "img", "digest": "sha256:" + "0" * 64,
            "source": {"kind": "sftp", "host": "10.0.0.2", "user": "root", "storeRoot": "/store",
                       "imageId": "img"}}
    cmd = CacheImageCmd.model_validate(body)
    assert isinstance(cmd.source, SftpSource) and cmd.source.port == 22
    with pytest.raises(ValidationError):
        CacheImageCmd.model_validate({**body, "source": {**body["source"], "keyFile": "/root/.ssh/id"}})


@pytest.mark.parametrize("url", ["server", "server:relative", "a b:/x", "h:/x;rm -rf /"])
def test_nfs_url_is_server_colon_absolute_path(url: str) -> None:
    with pytest.raises(ValidationError):
        MountCmd.model_validate({"storageUuid": "ps-1", "url": url})


def test_mount_options_cannot_smuggle_more_options() -> None:
    with pytest.raises(ValidationError):
        MountCmd.model_validate({"storageUuid": "ps-1", "url": "h:/x", "options": ["ro,nosuid"]})
    ok = MountCmd.model_validate({"storageUuid": "ps-1", "url": "h:/x", "options": ["soft", "timeo=50"]})
    assert ok.options == ["soft", "timeo=50"]
