"""The controller against the real agents: a real kvmagent (libvirt, TCG guest,
bridge, dnsmasq in a namespace) and a real storageagent (local primary
storage, image cache filled over HTTP, qcow2 linked clones), over real HTTP in
both directions (commands with callbackurl, callbacks to /v1/agent-callbacks).

A VM created through the API boots and answers ping at the address the
controller allocated; stop/start work; the agent is killed (-9) and restarted
and the controller still drives it; deleting the zone leaves nothing in the
database, on the host (domain, bridge, DHCP namespace) or in the storage.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from controller.db.models import RESOURCES
from tests.integration.controller.realworld import World, build_cloud, create_vm, world_fixture  # noqa: F401

pytestmark = [pytest.mark.libvirt, pytest.mark.netns, pytest.mark.slow]


def test_build_a_cloud_and_boot_a_vm_that_answers_ping(world: World) -> None:
    w = world
    ids = build_cloud(w, "10.253.7")
    assert w.ok("GET", f"/v1/hosts/{ids['host']}")["status"] == "Connected"
    vm = create_vm(w, "web1")
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"
    ip = w.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm}")["items"][0]["ip"]
    ns = f"kvmcloud-dhcp-{ids['l3'][:12]}"
    ping = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "3", "-W", "2", ip],
                          capture_output=True, text=True, timeout=30)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_stop_start_and_an_agent_restart(world: World) -> None:
    w, ids = world, world.ids
    vm = ids["vms"]
    w.job("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Stopped"
    assert w.kvm.call("/vm/sync")["states"].get(vm) in (None, "Stopped")
    w.job("POST", f"/v1/vms/{vm}/actions/start", {})
    assert w.kvm.call("/vm/sync")["states"][vm] == "Running"
    w.kvm.kill9()
    w.kvm.start()
    ctl = w.ctl
    ctl.tracker.ping(ids["host"])
    ctl.tracker.sync_vms(ids["host"])
    assert w.ok("GET", f"/v1/hosts/{ids['host']}")["status"] == "Connected"
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"
    w.job("POST", f"/v1/vms/{vm}/actions/reboot", {})


def test_delete_zone_leaves_nothing(world: World) -> None:
    w, ids = world, world.ids
    plan = w.ok("DELETE", f"/v1/zones/{ids['zone']}")["affected"]
    assert {"vms", "volumes", "hosts", "primary-storages", "l3-networks"} <= {a["type"] for a in plan}
    w.job("DELETE", f"/v1/zones/{ids['zone']}", confirm="1")
    with w.ctl.db.read() as s:
        for coll in ("zones", "clusters", "hosts", "primary-storages", "l2-networks", "l3-networks",
                     "vms", "volumes", "vm-nics", "ip-ranges"):
            assert s.scalar(select(func.count()).select_from(RESOURCES[coll])) == 0, coll
    assert w.kvm.call("/vm/sync")["states"].get(ids["vms"]) in (None, "Stopped")
    assert not Path(f"/run/netns/kvmcloud-dhcp-{ids['l3'][:12]}").exists()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10).stdout
    bridges = [f"br{a['uuid'][:12]}:" for a in plan if a["type"] == "l2-networks"]
    assert bridges and not any(b in links for b in bridges), links
    # only the storage's own identity file stays (the directory is the operator's)
    leftovers = [p for p in w.ps_root.rglob("*") if p.is_file() and ".kvmcloud" not in p.parts]
    assert leftovers == [], leftovers
