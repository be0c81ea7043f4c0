"""Validation of the sftpbackup wire models: bad input is refused before anything runs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sftpbackup.models import AddImageCmd, SftpEndpoint, TransferImageCmd, VerifyCmd, check_image_id

BASE = {"backupStorageUuid": "bs-1", "root": "/srv/store", "imageUuid": "img-1"}


@pytest.mark.parametrize("good", ["a", "img-1", "A.b_c-9", "x" * 128])
def test_good_image_ids(good: str) -> None:
    assert check_image_id(good) == good


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../x", "x..y", ".hidden", "-x", "x" * 129, "a b", "é"])
def test_bad_image_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        check_image_id(bad)


@pytest.mark.parametrize("url", [
    "http://h/x.img", "https://h/x.img", "sftp://root@h:22/x.img", "file:///srv/x.img", "HTTP://h/x",
])
def test_supported_url_schemes(url: str) -> None:
    assert AddImageCmd.model_validate({**BASE, "url": url}).url == url


@pytest.mark.parametrize("url", ["ftp://h/x.img", "nfs://h/x", "/srv/x.img", "data:,abc"])
def test_unsupported_url_schemes(url: str) -> None:
    with pytest.raises(ValidationError, match="url"):
        AddImageCmd.model_validate({**BASE, "url": url})


@pytest.mark.parametrize("root", ["/", "relative", "/a/../b", "/a/./b", "/a//b", '/a"b', "/a\\b"])
def test_bad_roots(root: str) -> None:
    with pytest.raises(ValidationError, match="root"):
        AddImageCmd.model_validate({**BASE, "root": root, "url": "http://h/x"})


def test_root_trailing_slash_is_normalised() -> None:
    assert AddImageCmd.model_validate({**BASE, "root": "/srv/store/", "url": "http://h/x"}).root == "/srv/store"


def test_unknown_fields_and_bad_digests_are_refused() -> None:
    with pytest.raises(ValidationError, match="sshKey"):
        AddImageCmd.model_validate({**BASE, "url": "http://h/x", "sshKey": "-----BEGIN"})
    with pytest.raises(ValidationError, match="sha256"):
        AddImageCmd.model_validate({**BASE, "url": "http://h/x", "sha256": "abc"})
    with pytest.raises(ValidationError, match="size"):
        AddImageCmd.model_validate({**BASE, "url": "http://h/x", "size": -1})


def test_remote_endpoint_has_no_room_for_a_key() -> None:
    cmd = TransferImageCmd.model_validate({**BASE, "remote": {"host": "10.0.0.2", "storeRoot": "/bs"}})
    assert cmd.remote == SftpEndpoint(host="10.0.0.2", port=22, user="root", store_root="/bs")
    with pytest.raises(ValidationError, match="privateKey"):
        TransferImageCmd.model_validate({**BASE, "remote": {"host": "h", "privateKey": "k"}})
    with pytest.raises(ValidationError, match="host"):
        TransferImageCmd.model_validate({**BASE, "remote": {"host": "h;rm -rf /"}})


def test_verify_checks_each_image_id() -> None:
    base = {"backupStorageUuid": "bs-1", "root": "/srv/store"}
    assert VerifyCmd.model_validate({**base, "imageUuids": ["a", "b"]}).image_uuids == ["a", "b"]
    with pytest.raises(ValidationError, match="imageUuids"):
        VerifyCmd.model_validate({**base, "imageUuids": ["../x"]})
