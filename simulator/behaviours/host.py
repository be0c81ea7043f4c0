"""Simulated kvmagent commands: host identity, VM lifecycle, devices, networks.

As the real kvmagent does, a state change the agent itself caused is not
reported as an event (only out-of-band changes are: see the control API).
"""

from __future__ import annotations

from typing import Any

from agentcore.errors import Conflict, NotFound
from simulator.behaviours.base import (
    BEHAVIOURS,
    Behaviour,
    Body,
    Fleet,
    InsufficientCapacity,
    behaves,
)
from simulator.state import Domain, SimAgent

VERSION = "sim"


def _identity(agent: SimAgent) -> dict[str, Any]:
    return {"host_uuid": agent.host_uuid, "events_url": agent.events_url, "version": VERSION}


def _running(agent: SimAgent, body: Body) -> Domain:
    vm = str(body.need("vmUuid"))
    dom = agent.domains.get(vm)
    if dom is None or dom.state == "Stopped":
        raise NotFound("the VM is not running on this host", vm_uuid=vm)
    return dom


@behaves("/echo")
def echo(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    return {"message": body.get("message", default=""), "version": VERSION}


@behaves("/host/connect")
def connect(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    agent.host_uuid = str(body.need("hostUuid"))
    url = body.get("eventsUrl")
    if url:
        agent.events_url = str(url)
        if agent.events_url not in agent.urls:
            agent.urls.append(agent.events_url)
    return _identity(agent)


@behaves("/host/ping")
def ping(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    return _identity(agent)


@behaves("/host/facts")
def facts(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    c = agent.capacity
    return {"hostname": agent.id, "os_name": "Simulated", "os_version": VERSION,
            "kernel": VERSION, "arch": "x86_64", "cpu_model": "simulated CPU",
            "cpu_count": c.cpu, "cpu_sockets": 1, "cpu_flags": [],
            "hardware_virtualization": False, "domain_type": "qemu",
            "libvirt_version": VERSION, "qemu_version": VERSION, "memory_total": c.memory,
            "ip_addresses": [agent.ip] if agent.ip else []}


@behaves("/host/capacity")
def capacity(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    c = agent.capacity
    running = [d for d in agent.domains.values() if d.state in ("Running", "Paused")]
    return {"cpu_total": c.cpu, "cpu_used": agent.used_cpu(), "memory_total": c.memory,
            "memory_used": agent.used_memory(), "memory_free": c.memory - agent.used_memory(),
            "domains": len(running)}


@behaves("/vm/start")
def start(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    vm = str(body.need("vmUuid"))
    cpu = int(body.get("cpuNum", default=1))
    memory = int(body.get("memorySize", default=0))
    dom = agent.domains.get(vm)
    if dom is None or dom.state == "Stopped":
        if not agent.fits(cpu, memory):
            raise InsufficientCapacity(
                "the host has not enough CPU or memory left", vmUuid=vm, cpu=cpu,
                memory=memory, usedCpu=agent.used_cpu(), usedMemory=agent.used_memory())
        dom = Domain(vm, state="Stopped", cpu=cpu, memory=memory)
        for vol in [body.data.get("rootVolume"), *body.list("dataVolumes")]:
            if isinstance(vol, dict):
                dom.volumes[str(vol.get("volumeUuid"))] = vol
        for nic in body.list("nics"):
            if isinstance(nic, dict):
                dom.nics[str(nic.get("mac"))] = nic
        iso = body.data.get("iso")
        if isinstance(iso, dict):
            dom.isos[str(iso.get("deviceId", 0))] = iso
        agent.put_domain(dom)
    state = "Paused" if body.get("createPaused") else "Running"
    agent.set_state(dom, state)
    return {"vm_uuid": vm, "state": state, "vnc_port": 5900 + len(agent.domains)}


@behaves("/vm/stop")
def stop(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    """Stop keeps the (shut off) domain; destroy undefines it. An absent VM is success."""
    vm = str(body.need("vmUuid"))
    dom = agent.domains.get(vm)
    if dom is not None:
        agent.set_state(dom, "Stopped")
    return {"vm_uuid": vm, "state": "Stopped"}



@behaves("/vm/destroy")
def destroy(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    vm = str(body.need("vmUuid"))
    agent.pop_domain(vm)
    return {"vm_uuid": vm, "state": "Stopped"}


def _to(state: str | None) -> Behaviour:
    def change(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
        dom = _running(agent, body)
        if state is not None:
            agent.set_state(dom, state)
        return {"vm_uuid": dom.uuid, "state": dom.state}
    return change


BEHAVIOURS["/vm/pause"] = _to("Paused")
BEHAVIOURS["/vm/resume"] = _to("Running")
BEHAVIOURS["/vm/reboot"] = _to(None)


@behaves("/vm/sync")
def sync(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    return {"states": {d.uuid: d.state for d in agent.domains.values()}}


@behaves("/vm/check-state")
def check_state(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    states = {}
    for vm in body.list("vmUuids"):
        dom = agent.domains.get(str(vm))
        states[str(vm)] = dom.state if dom is not None else "Stopped"
    return {"states": states}


@behaves("/vm/console")
def console(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    dom = _running(agent, body)
    return {"protocol": "vnc", "host": agent.ip or "127.0.0.1",
            "port": 5900 + sorted(agent.domains).index(dom.uuid)}


@behaves("/vm/migrate")
def migrate(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    dom = _running(agent, body)
    ref = str(body.need("destHostIp", "destHostUuid", "destUri"))
    dest = fleet.find_agent(ref)
    if dest is None or dest.kind != "kvm":
        raise NotFound(f"no simulated host at {ref}", destHostIp=ref)
    if dest is agent:
        raise Conflict("the destination is the source host", destHostIp=ref)
    if not dest.fits(dom.cpu, dom.memory):
        raise InsufficientCapacity("the destination has not enough CPU or memory", destHostIp=ref)
    agent.pop_domain(dom.uuid)
    dest.put_domain(dom)
    return {"vm_uuid": dom.uuid, "dest_host_ip": ref, "state": dom.state}


def _device(volume: Body) -> str:
    return "vd" + chr(ord("a") + int(volume.get("deviceId", default=0)))


@behaves("/vm/volume/attach")
def attach_volume(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    dom = _running(agent, body)
    vol = body.sub("volume")
    key = str(vol.need("volumeUuid"))
    for other, spec in dom.volumes.items():
        if other != key and spec.get("deviceId") == vol.get("deviceId"):
            raise Conflict(f"device {_device(vol)} is taken", deviceId=vol.get("deviceId"))
    dom.volumes[key] = vol.data
    return {"vm_uuid": dom.uuid, "device": _device(vol)}


@behaves("/vm/volume/detach")
def detach_volume(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    dom = _running(agent, body)
    vol = body.sub("volume")
    dom.volumes.pop(str(vol.need("volumeUuid")), None)
    return {"vm_uuid": dom.uuid, "device": _device(vol)}


@behaves("/vm/volume/resize")
def resize_volume(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    _running(agent, body)
    return {"size": int(body.need("size"))}


@behaves("/vm/volume/snapshot")
def snapshot_volume(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    dom = _running(agent, body)
    vol = body.sub("volume")
    new = str(body.need("newInstallPath"))
    old = str(vol.get("installPath", default=""))
    spec = dom.volumes.get(str(vol.get("volumeUuid")))
    if spec is not None:
        spec["installPath"] = new
    return {"snapshot_install_path": old, "new_install_path": new, "size": 0}


@behaves("/vm/volume/merge")
def merge_volume(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    _running(agent, body)
    return {"install_path": body.sub("volume").get("installPath", default="")}


@behaves("/vm/iso/attach")
def attach_iso(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    dom = _running(agent, body)
    iso = body.sub("iso")
    dom.isos[str(iso.get("deviceId", default=0))] = iso.data
    return {"vm_uuid": dom.uuid}


@behaves("/vm/iso/detach")
def detach_iso(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    dom = _running(agent, body)
    dom.isos.pop(str(body.get("deviceId", default=0)), None)
    return {"vm_uuid": dom.uuid}


@behaves("/vm/nic/attach")
def attach_nic(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    dom = _running(agent, body)
    nic = body.sub("nic")
    mac = str(nic.need("mac"))
    dom.nics[mac] = nic.data
    return {"vm_uuid": dom.uuid, "mac": mac, "device_name": nic.get("deviceName", default="")}


@behaves("/vm/nic/detach")
def detach_nic(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    dom = _running(agent, body)
    mac = str(body.need("mac"))
    dom.nics.pop(mac, None)
    return {"vm_uuid": dom.uuid, "mac": mac}


# -- networks -------------------------------------------------------------------


def _uplink(body: Body) -> str | None:
    kind = body.get("type", default="novlan")
    if kind == "vlan":
        return f"{body.get('physicalInterface', default='eth0')}.{body.get('vlanId')}"
    if kind == "vxlan":
        return f"vxlan{body.get('vni')}"
    return None


@behaves("/network/l2/create")
def l2_create(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    bridge = str(body.need("bridgeName"))
    agent.l2[bridge] = {k: v for k, v in body.data.items() if k != "timeout"}
    return {"bridge_name": bridge, "uplink": _uplink(body), "exists": True}


@behaves("/network/l2/check")
def l2_check(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    bridge = str(body.need("bridgeName"))
    return {"bridge_name": bridge, "uplink": _uplink(body), "exists": bridge in agent.l2}


@behaves("/network/l2/delete")
def l2_delete(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    bridge = str(body.need("bridgeName"))
    agent.l2.pop(bridge, None)
    return {"bridge_name": bridge, "uplink": _uplink(body), "exists": False}


def _dhcp_reply(agent: SimAgent, l3: str) -> dict[str, Any]:
    leases = agent.dhcp.get(l3)
    return {"namespace": f"kc-dhcp-{l3[:8]}" if leases is not None else "",
            "leases": len(leases or []), "pid": None}


@behaves("/network/dhcp/apply")
def dhcp_apply(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    """The full desired lease set of one L3 network replaces the previous one."""
    l3 = str(body.need("l3NetworkUuid"))
    agent.dhcp[l3] = [lease for lease in body.list("leases") if isinstance(lease, dict)]
    return _dhcp_reply(agent, l3)


@behaves("/network/dhcp/add")
def dhcp_add(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    """Leases join the running server's set, replacing any of the same MAC or address."""
    l3 = str(body.need("l3NetworkUuid"))
    if l3 not in agent.dhcp:
        raise NotFound("no DHCP server for this L3 network on this host", l3_network_uuid=l3)
    new = [lease for lease in body.list("leases") if isinstance(lease, dict)]
    macs, ips = {str(n.get("mac")) for n in new}, {str(n.get("ip")) for n in new}
    agent.dhcp[l3] = [lease for lease in agent.dhcp[l3]
                      if str(lease.get("mac")) not in macs and str(lease.get("ip")) not in ips] + new
    return _dhcp_reply(agent, l3)


@behaves("/network/dhcp/release")
def dhcp_release(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    l3 = str(body.need("l3NetworkUuid"))
    gone = {str(m) for m in body.list("macs")}
    if l3 in agent.dhcp:
        agent.dhcp[l3] = [lease for lease in agent.dhcp[l3] if str(lease.get("mac")) not in gone]
    return _dhcp_reply(agent, l3)


@behaves("/network/dhcp/delete")
def dhcp_delete(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    l3 = str(body.need("l3NetworkUuid"))
    agent.dhcp.pop(l3, None)
    return _dhcp_reply(agent, l3)


@behaves("/network/security-groups/apply")
def security_groups_apply(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    """Groups' rules replace the previous ones; NICs' groups are set (filters are not simulated)."""
    groups = [g for g in body.list("groups") if isinstance(g, dict)]
    for g in groups:
        agent.security_groups[_hex(g["uuid"])] = list(g.get("rules") or [])
    nics = [n for n in body.list("nics") if isinstance(n, dict)]
    for n in nics:
        agent.nic_groups[str(n["mac"])] = [_hex(g) for g in n.get("securityGroups") or []]
    return {"groups": [_hex(g["uuid"]) for g in groups], "nics": [str(n["mac"]) for n in nics]}


@behaves("/network/security-groups/delete")
def security_groups_delete(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    gone = [_hex(g) for g in body.list("groupUuids")]
    # a stopped or gone VM's NIC filters are gone with it, as on a real host
    live = {mac for d in agent.domains.values() if d.state != "Stopped" for mac in d.nics}
    busy = [g for g in gone if any(g in groups for mac, groups in agent.nic_groups.items() if mac in live)]
    if busy:
        raise Conflict("security groups are still used by NICs on this host", groups=busy)
    for g in gone:
        agent.security_groups.pop(g, None)
    return {"groups": gone}


def _hex(uuid: object) -> str:
    return str(uuid).replace("-", "").lower()
