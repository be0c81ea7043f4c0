"""Query (filters, relations, tags, sort, paging, projection) and bad input on every endpoint."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from controller.db.models import RESOURCES
from tests.unit.controller.harness import API_TOKEN, Cloud, GiB


@pytest.fixture
def populated(cloud: Cloud) -> Cloud:
    cloud.basic(hosts=2)
    big = cloud.ok("POST", "/v1/instance-offerings", {"name": "big", "cpuNum": 2,
                                                      "memorySize": 2 * GiB})["uuid"]
    for i in range(4):
        body = cloud.vm_body(f"web{i}" if i < 3 else "db0")
        if i == 3:
            body["instanceOfferingUuid"] = big
        assert cloud.call("POST", "/v1/vms", body, wait="1")[1]["job"]["state"] == "succeeded"
    return cloud


def names(cloud: Cloud, **query: str) -> list[str]:
    return [v["name"] for v in cloud.ok("GET", "/v1/vms", **query)["items"]]


def test_filters_sort_page_project(populated: Cloud) -> None:
    c = populated
    assert names(c, q="memorySize>1073741824") == ["db0"]
    assert sorted(names(c, q="name~=web%")) == ["web0", "web1", "web2"]
    assert names(c, q="name!~=web%") == ["db0"]
    assert sorted(names(c, q="name?=web0,db0")) == ["db0", "web0"]
    assert len(names(c, q="name!?=web0,db0")) == 2
    assert names(c, q=["state=Running", "cpuNum=2"]) == ["db0"]  # type: ignore[arg-type]
    assert names(c, q="description=null", sort="-name", limit="2") == ["web2", "web1"]
    assert names(c, q="description!=null") == []
    assert names(c, sort="name", limit="2", offset="1") == ["web0", "web1"]
    page = c.ok("GET", "/v1/vms", fields="uuid,name", count="1", limit="1")
    assert page["total"] == 4 and set(page["items"][0]) == {"uuid", "name"}


def test_relations_and_tags(populated: Cloud) -> None:
    c = populated
    h1 = c.hosts["h1"].host_uuid
    on_h1 = c.ok("GET", "/v1/vms", q=f"hostUuid={h1}", count="1")["total"]
    assert c.ok("GET", "/v1/vms", q="host.name=h1", count="1")["total"] == on_h1
    assert c.ok("GET", "/v1/vms", q="host.cluster.name=c1", count="1")["total"] == 4
    ip = c.ok("GET", "/v1/vm-nics", limit="1")["items"][0]
    assert len(names(c, q=f"vmNics.ip={ip['ip']}")) == 1
    web0 = c.ok("GET", "/v1/vms", q="name=web0")["items"][0]["uuid"]
    c.ok("POST", "/v1/tags", {"resourceUuid": web0, "tag": "frontend"})
    assert names(c, q="tag=frontend") == ["web0"]
    assert c.call("POST", "/v1/tags", {"resourceUuid": web0, "tag": "frontend"})[0] == 409


@pytest.mark.parametrize("query,field", [
    ({"q": "nosuch=1"}, "nosuch"), ({"q": "memorySize>abc"}, "memorySize"),
    ({"q": "host.nosuch=1"}, "host.nosuch"), ({"q": "bogus.name=x"}, "bogus.name"),
    ({"q": "=x"}, "q"), ({"sort": "nosuch"}, "sort"), ({"limit": "-1"}, "limit"),
    ({"fields": "uuid,nosuch"}, "fields"), ({"offset": "x"}, "limit"),
])
def test_bad_queries_name_the_field(cloud: Cloud, query: dict[str, str], field: str) -> None:
    status, data = cloud.call("GET", "/v1/vms", **query)
    assert status == 400 and data["error"]["details"]["field"] == field, data


BAD_BODIES = [
    ("zones", {}, "name"),
    ("zones", {"name": "z", "colour": "red"}, "colour"),
    ("clusters", {"name": "c", "zoneUuid": "not-a-uuid"}, "zoneUuid"),
    ("clusters", {"name": "c", "zoneUuid": "0" * 32}, "zoneUuid"),
    ("hosts", {"name": "h", "clusterUuid": "0" * 32, "managementIp": "1.2.3.4"}, "clusterUuid"),
    ("hosts", {"name": "h", "clusterUuid": "0" * 32, "managementIp": "a b"}, "managementIp"),
    ("hosts", {"name": "h", "clusterUuid": "0" * 32, "managementIp": "1.2.3.4",
               "sshPassword": "pw"}, "sshPassword"),
    ("primary-storages", {"name": "p", "zoneUuid": "0" * 32, "type": "nfs", "url": "h:/x",
                          "mountPath": "/m", "deploy": True}, "deploy"),
    ("primary-storages", {"name": "p", "zoneUuid": "0" * 32, "type": "gluster", "url": "x"}, "type"),
    ("primary-storages", {"name": "p", "zoneUuid": "0" * 32, "type": "nfs", "url": "h:/x",
                          "mountPath": "relative"}, "mountPath"),
    ("backup-storages", {"name": "b", "type": "sftp", "hostname": "h", "url": "/s", "port": 0}, "port"),
    ("images", {"name": "i", "backupStorageUuids": [], "imageId": "x", "digest": "sha256:00",
                "size": 1}, "backupStorageUuids"),
    ("l2-networks", {"name": "l", "zoneUuid": "0" * 32, "type": "vlan",
                     "physicalInterface": "eth0"}, "vlan"),
    ("l2-networks", {"name": "l", "zoneUuid": "0" * 32, "type": "novlan",
                     "physicalInterface": "this-name-is-too-long"}, "physicalInterface"),
    ("l3-networks", {"name": "l", "l2NetworkUuid": "0" * 32, "dns": ["nope"]}, "dns"),
    ("ip-ranges", {"name": "r", "l3NetworkUuid": "0" * 32, "startIp": "10.0.0.9",
                   "endIp": "10.0.0.1", "netmask": "255.255.255.0", "gateway": "10.0.0.1"}, "body"),
    ("instance-offerings", {"name": "o", "cpuNum": 0, "memorySize": 1 << 30}, "cpuNum"),
    ("disk-offerings", {"name": "d", "diskSize": -1}, "diskSize"),
    ("vms", {"name": "v", "imageUuid": "0" * 32, "instanceOfferingUuid": "0" * 32,
             "l3NetworkUuids": []}, "l3NetworkUuids"),
    ("vms", {"name": "v", "imageUuid": "0" * 32, "instanceOfferingUuid": "0" * 32,
             "l3NetworkUuids": ["0" * 32]}, "imageUuid"),
    ("volumes", {"name": "v"}, "body"),
    ("tags", {"resourceUuid": "0" * 32, "tag": "x"}, "resourceUuid"),
]


@pytest.mark.parametrize("coll,body,field", BAD_BODIES, ids=[f"{b[0]}-{b[2]}" for b in BAD_BODIES])
def test_bad_body_is_400_naming_the_field_and_writes_nothing(cloud: Cloud, coll: str, body: dict,
                                                           field: str) -> None:
    status, data = cloud.call("POST", f"/v1/{coll}", body)
    assert status == 400, data
    assert data["error"]["code"] == "INVALID_REQUEST"
    fields = [data["error"]["details"].get("field")] + [
        f["field"] for f in data["error"]["details"].get("fields", [])]
    assert field in fields, data
    with cloud.ctl.db.read() as s:
        assert all(s.scalar(select(func.count()).select_from(m)) == 0 for m in RESOURCES.values())


def test_bad_action_bodies_and_unknown_things(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = cloud.call("POST", "/v1/vms", cloud.vm_body(), wait="1")[1]["resource"]["uuid"]
    assert cloud.call("POST", f"/v1/vms/{vm}/actions/attach-volume", {})[1]["error"]["details"][
        "field"] == "volumeUuid"
    assert cloud.call("POST", f"/v1/vms/{vm}/actions/stop", {"force": "maybe"})[0] == 400
    assert cloud.call("POST", f"/v1/vms/{vm}/actions/fly", {})[0] == 404
    assert cloud.call("POST", f"/v1/vms/{'f' * 32}/actions/stop", {})[0] == 404
    assert cloud.call("GET", f"/v1/vms/{'f' * 32}")[0] == 404
    assert cloud.call("GET", "/v1/nonsense")[0] == 404
    assert cloud.call("PATCH", f"/v1/vms/{vm}", {"name": ""})[0] == 400
    assert cloud.call("PATCH", f"/v1/vms/{vm}", {"state": "Running"})[0] == 400
    assert cloud.ok("PATCH", f"/v1/vms/{vm}", {"name": "renamed"})["name"] == "renamed"
    r = cloud.client.post("/v1/zones", data="{not json", content_type="application/json",
                          headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert r.status_code == 400


def test_auth(cloud: Cloud) -> None:
    assert cloud.call("GET", "/v1/zones", token="wrong")[0] == 401
    assert cloud.call("POST", "/v1/zones", {"name": "z"}, token="wrong")[0] == 401
    assert cloud.ok("GET", "/v1/zones")["items"] == []
    # agents use their own token, API users cannot post callbacks
    assert cloud.call("POST", "/v1/agent-callbacks", {}, token=API_TOKEN)[0] == 401
    doc = cloud.client.get("/v1/openapi.json").get_json()
    assert "/v1/vms/{uuid}/actions/migrate" in doc["paths"]
    assert "VmCreate" in doc["components"]["schemas"]
