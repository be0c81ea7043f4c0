"""Addresses, agent URLs, users and paths in request bodies: strings that reach Ansible's
inventory and extra variables, or argv, follow a grammar with no room for a template or an
option (review findings F1, F20)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.api import schemas as sc
from tests.unit.controller.harness import Cloud

CLUSTER = "0" * 32
HOST = {"name": "h1", "clusterUuid": CLUSTER, "managementIp": "10.0.0.5"}
STORE = {"name": "b1", "type": "sftp", "hostname": "10.0.0.9", "url": "/store"}
LOOKUP = "{{lookup('pipe','id')}}"

GOOD_URLS = {
    "http://10.0.0.5:7070": "10.0.0.5:7070",
    "https://agent-1.example.org:7171/": "agent-1.example.org:7171",
    "http://127.0.0.1:8080/agents/ps-00001": "127.0.0.1:8080",
    "http://[fd00::5]:7762": "[fd00::5]:7762",
}
BAD_URLS = [
    f"http://a{LOOKUP}:7171",                             # the review's payload, in the host
    "http://a{{lookup('pipe','touch'~'%c'|format(32))}}:7171",
    f"http://{LOOKUP}@10.0.0.5:7762",                     # in the userinfo (ceph: hostname stays clean)
    "http://user@10.0.0.5:7070",
    f"http://10.0.0.5:7070/{LOOKUP}",                     # in the path
    "http://10.0.0.5:7070/%7B%7B",
    "http://10.0.0.5:7070/a?x=1",
    "http://10.0.0.5:7070/#x",
    "http://10.0.0.5:7070/../x",
    "http://10.0.0.5:7070/a b",
    "http://10.0.0.5",                                    # no port
    "http://10.0.0.5:0",
    "http://10.0.0.5:70000",
    "ftp://10.0.0.5:21",
    "http://-oProxyCommand=x:7070",
    "http://host-.example:7070",
    "http://10.0.0.256:7070",
    "http://[zz::1]:7070",
    "http://10.0.0.5:7070\n",
    "http://'a':7070",
]


@pytest.mark.parametrize(("url", "listen"), GOOD_URLS.items())
def test_agent_urls_of_host_port_and_path_are_accepted(url: str, listen: str) -> None:
    body = sc.HostCreate.model_validate({**HOST, "agentUrl": url})
    assert body.agent_url == url
    assert sc.parse_agent_url(url).listen == listen


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize(("model", "base", "field"), [
    (sc.HostCreate, HOST, "agentUrl"),
    (sc.HostCreate, HOST, "storageAgentUrl"),
    (sc.BackupStorageCreate, STORE, "agentUrl"),
])
def test_agent_urls_with_anything_else_are_refused_naming_the_field(
        url: str, model: type[sc.Body], base: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as e:
        model.model_validate({**base, field: url})
    assert [err["loc"] for err in e.value.errors()] == [(field,)]


def test_a_ceph_agent_url_with_a_template_in_its_userinfo_is_refused() -> None:
    with pytest.raises(ValidationError) as e:
        sc.PrimaryStorageCreate.model_validate({
            "name": "c", "zoneUuid": CLUSTER, "type": "ceph", "url": "ceph://rbd",
            "agentUrl": f"http://{LOOKUP}@10.0.0.5:7762",
            "ceph": {"monitors": ["10.0.0.5"], "pool": "rbd", "user": "kvmcloud", "keyRef": "kvmcloud"}})
    assert ("agentUrl",) in [err["loc"] for err in e.value.errors()]


@pytest.mark.parametrize("address", ["10.0.0.5", "::1", "fd00::5", "vm1", "host-1.example.org"])
def test_host_addresses_are_ip_addresses_or_dns_names(address: str) -> None:
    assert sc.check_host(address) == address
    assert sc.BackupStorageCreate.model_validate({**STORE, "hostname": address}).hostname == address


@pytest.mark.parametrize("address", ["-oProxyCommand=x", "-p1", "a b", "h{{x}}", "h%7b", "u@h", "host-",
                                     "a..b", "10.0.0.256", "1.2.3", "a/b", "x" * 64, ""])
@pytest.mark.parametrize(("model", "base", "field"), [
    (sc.HostCreate, HOST, "managementIp"),
    (sc.BackupStorageCreate, STORE, "hostname"),
])
def test_host_addresses_that_could_read_as_an_option_or_template_are_refused(
        address: str, model: type[sc.Body], base: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as e:
        model.model_validate({**base, field: address})
    assert [err["loc"] for err in e.value.errors()] == [(field,)]


@pytest.mark.parametrize(("field", "value"), [
    ("username", "-oProxyCommand=x"), ("username", "a{{b}}"),
    ("sshUser", "-l"), ("sshUser", "root x"), ("sshPort", 0), ("sshPort", 65536),
    ("agentRoot", "/srv/../etc"), ("agentRoot", "/srv/{{x}}"), ("agentRoot", "srv"),
])
def test_users_ports_and_paths_are_checked(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as e:
        sc.BackupStorageCreate.model_validate({**STORE, "deploy": True, field: value})
    assert [err["loc"] for err in e.value.errors()] == [(field,)]


@pytest.mark.parametrize("path", ["/mnt/../etc", "/mnt/./x", "/mnt/{{x}}", "mnt"])
def test_mount_paths_are_absolute_without_dot_segments(path: str) -> None:
    with pytest.raises(ValidationError) as e:
        sc.PrimaryStorageCreate.model_validate({"name": "p", "zoneUuid": CLUSTER, "type": "local",
                                                "url": "local", "mountPath": path})
    assert [err["loc"] for err in e.value.errors()] == [("mountPath",)]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/hosts", {**HOST, "storageAgentUrl": f"http://a{LOOKUP}:7071"}, "storageAgentUrl"),
    ("/v1/hosts", {**HOST, "managementIp": "-oProxyCommand=x"}, "managementIp"),
    ("/v1/backup-storages", {**STORE, "agentUrl": f"http://a{LOOKUP}:7171"}, "agentUrl"),
])
def test_the_api_answers_400_naming_the_field_and_writes_nothing(
        cloud: Cloud, path: str, body: dict[str, Any], field: str) -> None:
    status, data = cloud.call("POST", path, {**body, "deploy": True})
    assert status == 400, data
    assert data["error"]["details"]["field"] == field
    assert cloud.ok("GET", path)["items"] == []
