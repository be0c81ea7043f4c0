"""The tracker's sync destroys a domain whose VM another host owns only once that host
says it runs the VM: the only running copy (a migration whose outcome was lost) stays."""

from __future__ import annotations

from tests.unit.controller.harness import Cloud


def test_a_copy_goes_only_when_the_owner_runs_the_vm(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    h1, h2 = cloud.hosts["h1"], cloud.hosts["h2"]
    answer = cloud.ok("POST", "/v1/vms", cloud.vm_body("web", hostUuid=h2.uuid), wait="1")  # type: ignore[attr-defined]
    vm = answer["resource"]["uuid"]
    assert h2.domains == {vm: "Running"}

    h1.domains[vm] = "Running"  # the database names h2, which has no copy: h1's is the one
    h2.domains.clear()
    cloud.ctl.tracker.sync_vms(h1.uuid)  # type: ignore[attr-defined]
    assert h1.domains == {vm: "Running"}

    h2.domains[vm] = "Running"  # both run it: h1's is the stale copy
    cloud.ctl.tracker.sync_vms(h1.uuid)  # type: ignore[attr-defined]
    assert h1.domains == {}
    assert h2.domains == {vm: "Running"}
    assert cloud.ok("GET", f"/v1/vms/{vm}")["hostUuid"] == h2.uuid  # type: ignore[attr-defined]
