"""The wire models refuse bad names, sizes and credentials before anything runs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cephagent.models import (
    AddImageCmd,
    ClusterRef,
    CreateVolumeCmd,
    CreateVolumeFromImageCmd,
    ExportToSftpCmd,
    InitPoolsCmd,
)

CLUSTER = {"monitors": ["127.0.0.1:6789", "[::1]:3300", "mon-a"], "user": "client.agent",
           "keyring": "/etc/ceph/ceph.client.agent.keyring"}


def fields_of(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}


def test_cluster_ref_user_and_wire_names() -> None:
    ref = ClusterRef.model_validate({**CLUSTER, "fsid": "12f1232f-03b9-45d4-8c15-83e5b9008655"})
    assert ref.user_id == "agent"
    assert ClusterRef.model_validate({**CLUSTER, "user": "agent"}).user_id == "agent"
    wire = CreateVolumeCmd(cluster=ref, pool="p", name="v", size=1).wire()
    assert wire["cluster"]["keyRef"] is None and wire["skipIfExisting"] is False


@pytest.mark.parametrize("change", [
    {"keyRef": "k"},                              # both keyring and keyRef
    {"keyring": None},                            # neither
    {"keyring": "relative/keyring"},
    {"monitors": []},
    {"monitors": ["127.0.0.1:6789;rm"]},
    {"user": "client.agent/../x"},
    {"fsid": "not-a-uuid"},
])
def test_cluster_ref_refusals(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ClusterRef.model_validate({**CLUSTER, **change})


@pytest.mark.parametrize(("field", "value"), [
    ("pool", "a/b"), ("pool", "a@b"), ("pool", ""), ("pool", "x" * 65), ("name", "img@snap"),
    ("name", "../etc"), ("name", ".hidden"), ("name", "sp ace"), ("size", -1), ("size", 0),
    ("size", 1 << 51), ("features", ["journaling"]),
])
def test_volume_fields(field: str, value: Any) -> None:
    body = {"cluster": CLUSTER, "pool": "vols", "name": "v1", "size": 1024, field: value}
    with pytest.raises(ValidationError) as e:
        CreateVolumeCmd.model_validate(body)
    assert {f.split(".")[0] for f in fields_of(e.value)} == {field}


def test_clone_source_fields_and_defaults() -> None:
    cmd = CreateVolumeFromImageCmd.model_validate(
        {"cluster": CLUSTER, "pool": "vols", "name": "root", "srcPool": "images", "srcName": "img"})
    assert cmd.src_snapshot == "kvmcloud-base" and cmd.features == ["layering"]
    assert cmd.install_path == "vols/root"
    with pytest.raises(ValidationError) as e:
        CreateVolumeFromImageCmd.model_validate(
            {"cluster": CLUSTER, "pool": "vols", "name": "root", "srcPool": "images",
             "srcName": "img", "srcSnapshot": "a@b"})
    assert fields_of(e.value) == {"srcSnapshot"}


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError) as e:
        CreateVolumeCmd.model_validate({"cluster": CLUSTER, "pool": "p", "name": "v", "size": 1, "sise": 2})
    assert fields_of(e.value) == {"sise"}


def test_add_image_url_and_digest() -> None:
    base = {"cluster": CLUSTER, "pool": "images", "name": "i"}
    assert AddImageCmd.model_validate({**base, "url": "https://example.invalid/x.qcow2"}).format == "auto"
    for bad in ("file:///etc/passwd", "ftp://h/x", "not a url"):
        with pytest.raises(ValidationError):
            AddImageCmd.model_validate({**base, "url": bad})
    with pytest.raises(ValidationError) as e:
        AddImageCmd.model_validate({**base, "url": "http://h/x", "sha256": "ABC"})
    assert fields_of(e.value) == {"sha256"}


def test_pools_and_sftp_endpoint() -> None:
    with pytest.raises(ValidationError):
        InitPoolsCmd.model_validate({"cluster": CLUSTER, "pools": []})
    with pytest.raises(ValidationError) as e:
        InitPoolsCmd.model_validate({"cluster": CLUSTER, "pools": [{"name": "p", "pgNum": 0}]})
    assert fields_of(e.value) == {"pools.0.pgNum"}
    body = {"cluster": CLUSTER, "pool": "p", "name": "v", "host": "127.0.0.1", "user": "root",
            "storeRoot": "/s", "storeName": "x"}
    assert ExportToSftpCmd.model_validate(body).port == 22
    with pytest.raises(ValidationError) as e:
        ExportToSftpCmd.model_validate({**body, "storeName": "../x", "port": 0})
    assert fields_of(e.value) == {"storeName", "port"}
