"""A created VM's lease reaches its host as an add, not as the host's full lease set."""

from __future__ import annotations

from sqlalchemy import select

from controller.db.models import VmNic
from tests.unit.controller.fakeagent import FakeHost
from tests.unit.controller.harness import Cloud


def _dhcp_calls(host: FakeHost) -> list[tuple[str, int]]:
    """(path, leases sent) of the host's DHCP commands so far, then forgotten."""
    out = [(path, len(body.get("leases") or [])) for path, body in host.calls
           if path.startswith("/network/dhcp/")]
    host.calls.clear()
    return out


def _macs(cloud: Cloud) -> dict[str, str]:
    with cloud.ctl.db.read() as s:
        return {mac: str(ip) for mac, ip in s.execute(select(VmNic.mac, VmNic.ip))}


def test_the_first_vm_sends_the_full_set_then_each_vm_adds_its_own_lease(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    host, l3 = cloud.hosts["h1"], cloud.ids["l3"]
    for i in range(3):
        cloud.succeeded("POST", "/v1/vms", cloud.vm_body(f"web{i}"))
    assert _dhcp_calls(host) == [("/network/dhcp/apply", 1), ("/network/dhcp/add", 1),
                                 ("/network/dhcp/add", 1)]
    assert host.leases[l3] == _macs(cloud)


def test_a_reconnected_host_gets_the_full_set_again(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    host, l3 = cloud.hosts["h1"], cloud.ids["l3"]
    cloud.succeeded("POST", "/v1/vms", cloud.vm_body("web1"))
    cloud.succeeded("POST", f"/v1/hosts/{host.host_uuid}/actions/reconnect", {})
    host.calls.clear()
    cloud.succeeded("POST", "/v1/vms", cloud.vm_body("web2"))
    assert _dhcp_calls(host) == [("/network/dhcp/apply", 2)]
    assert host.leases[l3] == _macs(cloud)


def test_an_agent_without_the_server_gets_the_full_set(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    host, l3 = cloud.hosts["h1"], cloud.ids["l3"]
    cloud.succeeded("POST", "/v1/vms", cloud.vm_body("web1"))
    host.leases.pop(l3)  # lost behind the controller's back (a host rebooted between pings)
    host.calls.clear()
    cloud.succeeded("POST", "/v1/vms", cloud.vm_body("web2"))
    assert _dhcp_calls(host) == [("/network/dhcp/add", 1), ("/network/dhcp/apply", 2)]
    assert host.leases[l3] == _macs(cloud)
