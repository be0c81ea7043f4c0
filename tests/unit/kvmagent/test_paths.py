"""Confinement of volume and ISO paths to the storage roots."""

from __future__ import annotations

import pytest

from kvmagent.paths import check_file_path, set_storage_roots


@pytest.mark.parametrize("path", ["relative/v.qcow2", "/a/../etc/shadow", "/a//b", "/a/./b", "/a/b\x00"])
def test_malformed_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        check_file_path(path)


def test_paths_must_be_under_a_root_once_roots_are_set() -> None:
    assert check_file_path("/etc/shadow") == "/etc/shadow"  # no roots: only the shape is checked
    set_storage_roots(["/var/lib/kvmcloud", "/mnt/ps1/"])
    assert check_file_path("/mnt/ps1/vol/v.qcow2")
    for bad in ("/etc/shadow", "/mnt/ps10/v.qcow2", "/var/lib/kvmcloudx/v"):
        with pytest.raises(ValueError, match="outside the storage roots"):
            check_file_path(bad)
