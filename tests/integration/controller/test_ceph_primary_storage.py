"""Adding a Ceph primary storage through the API, on each database: a bad spec
is a 400 naming the field and writes nothing; the key is only ever named
(keyRef), checked against the controller's ceph_key_dir, and never shown; a
VM's RBD volumes are made and removed (simulated hosts and cephagent)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.controller.cephcloud import KEY, KEY_REF, SimAgents, build, ps_body, write_key
from tests.unit.controller.harness import Cloud

pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def ceph(make_cloud: Callable[..., Cloud], tmp_path: Path) -> Iterator[tuple[Cloud, SimAgents, dict[str, str]]]:
    write_key(tmp_path / "keys")
    sims = SimAgents()
    cloud = make_cloud(ceph_key_dir=str(tmp_path / "keys"))
    yield cloud, sims, build(cloud, sims, hosts=1)
    sims.close()


BAD: list[tuple[dict[str, Any], str]] = [
    ({"ceph": None}, "ceph"),
    ({"ceph": {"monitors": [], "pool": "vms", "user": "u", "keyRef": KEY_REF}}, "ceph.monitors"),
    ({"ceph": {"monitors": ["mon 1"], "pool": "vms", "user": "u", "keyRef": KEY_REF}}, "ceph.monitors.0"),
    ({"ceph": {"monitors": ["m1"], "pool": "vms/x", "user": "u", "keyRef": KEY_REF}}, "ceph.pool"),
    ({"ceph": {"monitors": ["m1"], "pool": "vms", "user": "u", "keyRef": "../etc/shadow"}}, "ceph.keyRef"),
    ({"ceph": {"monitors": ["m1"], "pool": "vms", "user": "u", "keyRef": "nosuch"}}, "ceph.keyRef"),
    ({"ceph": {"monitors": ["m1"], "pool": "vms", "user": "u", "keyRef": KEY_REF, "key": KEY}},
     "ceph.key"),
    ({"type": "nfs", "mountPath": "/mnt/x"}, "ceph"),
]


@pytest.mark.parametrize("change,field", BAD, ids=[f for _, f in BAD])
def test_a_bad_ceph_spec_is_a_400_naming_the_field(ceph: Any, change: dict[str, Any], field: str) -> None:
    cloud, _, ids = ceph
    body = {**ps_body(ids), **change}
    if body["ceph"] is None:
        del body["ceph"]
    before = len(cloud.ok("GET", "/v1/primary-storages")["items"])
    status, data = cloud.call("POST", "/v1/primary-storages", body)
    assert status == 400, data
    details = data["error"]["details"]
    fields = [details.get("field")] + [f["field"] for f in details.get("fields", [])]
    assert field in fields, data
    assert len(cloud.ok("GET", "/v1/primary-storages")["items"]) == before


def test_a_ceph_storage_needs_the_controllers_key_dir(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud()  # no ceph_key_dir
    zone = cloud.ok("POST", "/v1/zones", {"name": "z"})["uuid"]
    cluster = cloud.ok("POST", "/v1/clusters", {"name": "c", "zoneUuid": zone})["uuid"]
    status, data = cloud.call("POST", "/v1/primary-storages", ps_body({"zone": zone, "cluster": cluster}))
    assert status == 400 and data["error"]["details"]["field"] == "ceph.keyRef", data


def test_vm_volumes_on_ceph_are_made_and_removed(ceph: Any) -> None:
    cloud, sims, ids = ceph
    ps = cloud.ok("GET", f"/v1/primary-storages/{ids['ps']}")
    assert (ps["cephMonitors"], ps["cephPool"], ps["cephUser"], ps["cephKeyRef"]) == (
        "10.7.0.1:6789,10.7.0.2", "vms", "kvmcloud", KEY_REF)
    assert len(ps["cephSecretUuid"]) == 32 and KEY not in json.dumps(ps)
    job = cloud.job("POST", "/v1/vms", {
        "name": "db1", "imageUuid": ids["image"], "instanceOfferingUuid": ids["offering"],
        "l3NetworkUuids": [ids["l3"]], "dataDiskOfferingUuids": [ids["disk"]]})
    assert job["state"] == "succeeded", job
    vols = cloud.ok("GET", "/v1/volumes", q=f"vmUuid={job['resourceUuid']}")["items"]
    assert {v["installPath"] for v in vols} <= sims.rbd_images() and len(vols) == 2
    cloud.succeeded("DELETE", f"/v1/zones/{ids['zone']}?confirm=1")
    assert sims.rbd_images() == set()
