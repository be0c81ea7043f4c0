"""Live migration through the API on fake hosts: crossing migrations (A to B and B to A
at once) never deadlock, and the destination is prepared (bridge, DHCP lease) before the
move and undone when the move does not happen."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.unit.controller.fakeagent import FakeHost
from tests.unit.controller.harness import API_TOKEN, Cloud

pytestmark = pytest.mark.sqlite_only

ROUNDS = 6
PER_HOST = 4


def _vm_on(cloud: Cloud, name: str, host: FakeHost) -> str:
    job = cloud.succeeded("POST", "/v1/vms", cloud.vm_body(name, hostUuid=host.host_uuid))
    return str(job["resourceUuid"])


def _macs(cloud: Cloud, vm_uuid: str) -> dict[str, str]:
    return {n["mac"]: n["ip"] for n in cloud.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm_uuid}")["items"]}


def _migrate(cloud: Cloud, vm_uuid: str, host_uuid: str) -> dict[str, Any]:
    client = cloud.app.test_client(use_cookies=False)  # one per thread
    r = client.post(f"/v1/vms/{vm_uuid}/actions/migrate", json={"hostUuid": host_uuid},
                    query_string={"wait": "1"}, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert r.status_code == 200, r.get_data(as_text=True)
    job: dict[str, Any] = r.get_json()["job"]
    return job


def test_crossing_migrations_never_deadlock(cloud: Cloud, caplog: pytest.LogCaptureFixture) -> None:
    cloud.basic(hosts=2)
    a, b = cloud.hosts["h1"], cloud.hosts["h2"]
    on = {a: [_vm_on(cloud, f"a{i}", a) for i in range(PER_HOST)],
          b: [_vm_on(cloud, f"b{i}", b) for i in range(PER_HOST)]}
    caplog.set_level(logging.WARNING, logger="controller.db.base")
    with ThreadPoolExecutor(2 * PER_HOST) as pool:
        for _ in range(ROUNDS):  # every VM to the other host, all at once
            moves = [(vm, b if h is a else a) for h in (a, b) for vm in on[h]]
            jobs = list(pool.map(lambda m: _migrate(cloud, m[0], m[1].host_uuid), moves))
            assert [j["error"] for j in jobs if j["state"] != "succeeded"] == []
            on = {a: on[b], b: on[a]}
    # the lock order, not a retry, kept them apart
    assert [r.getMessage() for r in caplog.records if "write transaction" in r.getMessage()] == []
    l3 = cloud.ids["l3"]
    for h in (a, b):
        assert set(h.domains) == set(on[h])
        assert h.leases[l3] == {m: ip for vm in on[h] for m, ip in _macs(cloud, vm).items()}
        row = cloud.ok("GET", f"/v1/hosts/{h.host_uuid}")
        assert row["availableCpu"] == row["totalCpu"] - PER_HOST
        assert {v["uuid"] for v in cloud.ok("GET", "/v1/vms", q=f"hostUuid={h.host_uuid}")["items"]} \
            == set(on[h])


@pytest.mark.parametrize(("where", "path"), [("dst", "/network/l2/create"),
                                             ("dst", "/network/dhcp/apply"),
                                             ("src", "/vm/migrate")])
def test_a_failure_before_the_move_undoes_the_destination(cloud: Cloud, where: str,
                                                          path: str) -> None:
    cloud.basic(hosts=2)
    src, dst = cloud.hosts["h1"], cloud.hosts["h2"]
    vm = _vm_on(cloud, "web", src)
    macs, l3 = _macs(cloud, vm), cloud.ids["l3"]
    (dst if where == "dst" else src).faults[path] = "INJECTED"
    job = cloud.job("POST", f"/v1/vms/{vm}/actions/migrate", {"hostUuid": dst.host_uuid})
    assert job["state"] == "failed" and job["error"]["code"] == "INJECTED", job
    row = cloud.ok("GET", f"/v1/vms/{vm}")
    assert (row["hostUuid"], row["state"]) == (src.host_uuid, "Running")
    assert vm in src.domains and vm not in dst.domains
    assert src.leases[l3] == macs and dst.leases.get(l3, {}) == {}
    assert cloud.ok("GET", f"/v1/hosts/{src.host_uuid}")["availableCpu"] == 31
    assert cloud.ok("GET", f"/v1/hosts/{dst.host_uuid}")["availableCpu"] == 32
    if path == "/vm/migrate":  # the lease was on the destination before the move was tried
        applied = [{lease["mac"] for lease in b["leases"]} for p, b in dst.calls
                   if p == "/network/dhcp/apply"]
        assert applied == [set(macs), set()]
    src.faults.clear()
    dst.faults.clear()
    cloud.succeeded("POST", f"/v1/vms/{vm}/actions/migrate", {"hostUuid": dst.host_uuid})
    assert vm in dst.domains and dst.leases[l3] == macs and src.leases[l3] == {}


def test_a_failure_dropping_the_lease_on_the_source_after_the_move_is_no_failure(
        cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    src, dst = cloud.hosts["h1"], cloud.hosts["h2"]
    vm = _vm_on(cloud, "web", src)
    macs, l3 = _macs(cloud, vm), cloud.ids["l3"]
    src.faults["/network/dhcp/apply"] = "INJECTED"
    cloud.succeeded("POST", f"/v1/vms/{vm}/actions/migrate", {"hostUuid": dst.host_uuid})
    row = cloud.ok("GET", f"/v1/vms/{vm}")
    assert (row["hostUuid"], row["lastHostUuid"], row["state"]) == (
        dst.host_uuid, src.host_uuid, "Running")
    assert vm in dst.domains and vm not in src.domains and dst.leases[l3] == macs
    assert cloud.ok("GET", f"/v1/hosts/{src.host_uuid}")["availableCpu"] == 32
    assert cloud.ok("GET", f"/v1/hosts/{dst.host_uuid}")["availableCpu"] == 31
