"""What every database must do alike under the controller: concurrent creates that
race for hosts, storage and addresses, creation order within one second, and
strings (any character, compared case-sensitively)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from tests.integration.controller.conftest import mariadb_database
from tests.unit.controller.harness import API_TOKEN, Cloud

VMS = 24


def test_concurrent_creates_take_distinct_addresses_and_exact_capacity(cloud: Cloud) -> None:
    cloud.basic(hosts=3)  # and no VM yet: they also race to cache the image and to give
    # the network its DHCP server address

    def create(i: int) -> dict[str, Any]:
        client = cloud.app.test_client(use_cookies=False)  # one per thread
        r = client.post("/v1/vms", json=cloud.vm_body(f"vm{i}"), query_string={"wait": "1"},
                        headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert r.status_code == 200, r.get_data(as_text=True)
        job: dict[str, Any] = r.get_json()["job"]
        return job

    with ThreadPoolExecutor(8) as pool:
        jobs = list(pool.map(create, range(VMS)))
    assert [j for j in jobs if j["state"] != "succeeded"] == []
    ips = [n["ip"] for n in cloud.ok("GET", "/v1/vm-nics", limit="1000")["items"]]
    assert len(ips) == len(set(ips)) == VMS
    hosts = cloud.ok("GET", "/v1/hosts")["items"]
    assert sum(h["totalCpu"] - h["availableCpu"] for h in hosts) == VMS
    assert sum(h["totalMemory"] - h["availableMemory"] for h in hosts) == VMS * (256 << 20)


def test_rows_made_in_one_second_list_in_creation_order(cloud: Cloud) -> None:
    made = [cloud.ok("POST", "/v1/zones", {"name": f"z{i}"})["uuid"] for i in range(8)]
    assert [z["uuid"] for z in cloud.ok("GET", "/v1/zones")["items"]] == made


def test_any_character_round_trips_and_strings_compare_case_sensitively(cloud: Cloud) -> None:
    name = "区域-Ζώνη-🙂"
    uuid = cloud.ok("POST", "/v1/zones", {"name": name})["uuid"]
    assert cloud.ok("GET", f"/v1/zones/{uuid}")["name"] == name
    assert [z["uuid"] for z in cloud.ok("GET", "/v1/zones", q=f"name={name}")["items"]] == [uuid]
    cloud.ok("POST", "/v1/zones", {"name": "Web"})
    assert cloud.ok("GET", "/v1/zones", q="name=web")["items"] == []
    cloud.ok("POST", "/v1/tags", {"resourceUuid": uuid, "tag": "frontend"})
    assert cloud.call("POST", "/v1/tags", {"resourceUuid": uuid, "tag": "Frontend"})[0] == 201


@pytest.mark.mariadb
def test_mariadb_database_made_latin1_gets_utf8mb4_bin_tables_with_microseconds(
        component_env: Callable[[str], dict[str, str]]) -> None:
    url, drop = mariadb_database(component_env, "latin1 COLLATE latin1_swedish_ci")
    cloud = Cloud(url)
    try:
        db = cloud.ctl.db
        with db.engine.connect() as conn:
            collations = set(conn.execute(text(
                "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA ="
                " DATABASE() AND COLLATION_NAME IS NOT NULL")).scalars())
            precisions = set(conn.execute(text(
                "SELECT DATETIME_PRECISION FROM information_schema.COLUMNS WHERE TABLE_SCHEMA ="
                " DATABASE() AND DATA_TYPE = 'datetime'")).scalars())
        assert (collations, precisions) == ({"utf8mb4_bin"}, {6})
        uuid = cloud.ok("POST", "/v1/zones", {"name": "区域🙂"})["uuid"]
        assert cloud.ok("GET", f"/v1/zones/{uuid}")["name"] == "区域🙂"
    finally:
        cloud.close()
        drop()
