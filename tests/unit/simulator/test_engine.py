"""The simulator's protocol engine, driven in-process (no sockets, no processes).

The callback sender is replaced by a recorder (the engine's one seam to the
network); bodies are built with the real agents' own models so that these
tests fail when the simulator stops accepting what the controller sends.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from kvmagent.models import StartVmCmd, StopVmCmd
from simulator.engine import Answer, Simulator, SimulatorConfig
from simulator.faults import FaultRule
from simulator.state import Capacity
from storageagent.models import (
    CacheImageCmd,
    CapacityCmd,
    CreateEmptyVolumeCmd,
    CreateRootVolumeCmd,
    DeleteVolumeCmd,
    MountCmd,
    ResizeVolumeCmd,
)

TOKEN = "t0ken"
AUTH = f"Bearer {TOKEN}"
CB = "http://127.0.0.1:9/v1/agent-callbacks"
GiB = 1 << 30


class Recorder:
    """Stands in for :class:`CallbackSender`: keeps what would be POSTed."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    def send(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        self.posts.append((url, body, headers))

    def replies(self) -> dict[str, dict[str, Any]]:
        return {h["taskuuid"]: b for _, b, h in self.posts if h.get("kind") == "reply"}


def make_sim(**kw: Any) -> tuple[Simulator, Recorder]:
    sim = Simulator(SimulatorConfig(token=TOKEN, **{"hosts": 2, **kw}))
    rec = Recorder()
    sim.sender = rec  # type: ignore[assignment]
    return sim, rec


def call(sim: Simulator, agent: str, path: str, body: Any, task: str | None = None,
         callback: str | None = None) -> Answer:
    raw = body.model_dump_json(by_alias=True) if hasattr(body, "model_dump_json") else json.dumps(body)
    headers = {"taskuuid": task or "", "callbackurl": callback or ""}

    async def run() -> Answer:
        return await sim.command(sim.agents[agent], path, headers, raw.encode())
    return asyncio.run(run())


def start_cmd(vm: str, cpu: int = 1, memory: int = GiB) -> StartVmCmd:
    return StartVmCmd.model_validate({
        "vmUuid": vm, "vmName": "web1", "cpuNum": cpu, "memorySize": memory,
        "rootVolume": {"type": "file", "volumeUuid": str(uuid.uuid4()), "deviceId": 0,
                       "installPath": "/var/lib/kvmcloud/ps/vol/root.qcow2"},
        "nics": [{"mac": "52:54:00:00:00:01", "bridgeName": "br0"}],
    })


def test_sync_command_answers_the_reply_and_keeps_the_domain() -> None:
    sim, _ = make_sim()
    vm = str(uuid.uuid4())
    a = call(sim, "host-00001", "/vm/start", start_cmd(vm, cpu=2))
    assert a.status == 200 and a.body is not None
    assert a.body["success"] is True and a.body["state"] == "Running" and a.body["vmUuid"] == vm
    dom = sim.agents["host-00001"].domains[vm]
    assert (dom.cpu, dom.memory, list(dom.nics)) == (2, GiB, ["52:54:00:00:00:01"])


def test_async_command_answers_202_then_posts_the_reply_with_its_headers() -> None:
    sim, rec = make_sim()
    vm = str(uuid.uuid4())
    a = call(sim, "host-00001", "/vm/start", start_cmd(vm), task="task-1", callback=CB)
    assert (a.status, a.body) == (202, {"taskUuid": "task-1"})
    [(url, body, headers)] = rec.posts
    assert url == CB and body["success"] is True and body["vmUuid"] == vm
    assert headers == {"taskuuid": "task-1", "kind": "reply", "Authorization": AUTH}
    assert sim.status(sim.agents["host-00001"], "task-1")["state"] == "succeeded"


def test_a_bad_body_is_a_400_naming_the_field_and_runs_nothing() -> None:
    sim, rec = make_sim()
    body = start_cmd(str(uuid.uuid4())).wire()
    body["memorySize"] = 1000  # not a multiple of 1 MiB
    a = call(sim, "host-00001", "/vm/start", body, task="bad", callback=CB)
    assert a.status == 400 and a.body is not None
    assert a.body["error"]["code"] == "INVALID_REQUEST"
    assert "memorySize" in a.body["error"]["message"]
    assert not sim.agents["host-00001"].domains and not rec.posts
    assert "bad" not in sim.agents["host-00001"].tasks


def test_an_unknown_field_is_refused_as_the_real_agent_refuses_it() -> None:
    sim, _ = make_sim()
    body = {**start_cmd(str(uuid.uuid4())).wire(), "cpuCount": 4}
    a = call(sim, "host-00001", "/vm/start", body)
    assert a.status == 400 and a.body is not None and "cpuCount" in a.body["error"]["message"]


def test_an_unknown_path_is_404() -> None:
    sim, _ = make_sim()
    a = call(sim, "host-00001", "/vm/teleport", {})
    assert a.status == 404 and a.body is not None and a.body["error"]["code"] == "NOT_FOUND"


def test_a_finished_taskuuid_is_not_run_twice_and_its_reply_is_sent_again() -> None:
    sim, rec = make_sim()
    vm = str(uuid.uuid4())
    call(sim, "host-00001", "/vm/start", start_cmd(vm), task="once", callback=CB)
    call(sim, "host-00001", "/vm/stop", StopVmCmd(vm_uuid=vm), task="stop")
    again = call(sim, "host-00001", "/vm/start", start_cmd(vm), task="once", callback=CB)
    assert again.status == 202
    assert sim.agents["host-00001"].domains[vm].state == "Stopped"  # not started again
    assert [h["taskuuid"] for _, _, h in rec.posts] == ["once", "once"]
    conflict = call(sim, "host-00001", "/vm/stop", StopVmCmd(vm_uuid=vm), task="once")
    assert conflict.status == 409


def test_capacity_is_enforced_and_released_by_stop() -> None:
    sim, _ = make_sim(capacity=Capacity(cpu=4, memory=4 * GiB))
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert call(sim, "host-00001", "/vm/start", start_cmd(a, cpu=3)).body["success"]  # type: ignore[index]
    full = call(sim, "host-00001", "/vm/start", start_cmd(b, cpu=2)).body
    assert full is not None and full["error"]["code"] == "INSUFFICIENT_CAPACITY"
    call(sim, "host-00001", "/vm/stop", StopVmCmd(vm_uuid=a))
    assert call(sim, "host-00001", "/vm/start", start_cmd(b, cpu=2)).body["success"]  # type: ignore[index]
    cap = call(sim, "host-00001", "/host/capacity", {}).body
    assert cap is not None and (cap["cpuTotal"], cap["cpuUsed"], cap["domains"]) == (4, 2, 1)


def test_storage_is_shared_between_hosts_and_cloning_needs_the_cached_image() -> None:
    sim, _ = make_sim()
    ps = str(uuid.uuid4())
    root = dict(storage_uuid=ps, mount_path="/var/lib/kvmcloud/ps", image_id="cirros",
                install_path="vol/root.qcow2")
    early = call(sim, "host-00001", "/storage/volume/create-root", CreateRootVolumeCmd(**root)).body
    assert early is not None and early["error"]["code"] == "NOT_FOUND"
    call(sim, "host-00001", "/storage/mount", MountCmd(storage_uuid=ps, url="nfs:/export"))
    cache = CacheImageCmd.model_validate({
        "storageUuid": ps, "mountPath": "/var/lib/kvmcloud/ps", "imageId": "cirros",
        "digest": "sha256:" + "0" * 64, "size": 20 << 20,
        "source": {"kind": "http", "url": "http://127.0.0.1/cirros.qcow2"}})
    reply = call(sim, "host-00001", "/storage/cache-image", cache).body
    assert reply is not None and reply["downloaded"] is True and reply["image"]["imageId"] == "cirros"
    made = call(sim, "host-00002", "/storage/volume/create-root", CreateRootVolumeCmd(**root)).body
    assert made is not None and made["success"] and made["volume"]["installPath"] == "vol/root.qcow2"
    assert list(sim.storages[ps].volumes) == ["vol/root.qcow2"]
    evict = call(sim, "host-00002", "/storage/cache/evict",
                 {"storageUuid": ps, "mountPath": "/var/lib/kvmcloud/ps", "imageId": "cirros"}).body
    assert evict is not None and evict["error"]["code"] == "IN_USE"


def test_storage_usage_follows_creates_resizes_and_deletes() -> None:
    sim, _ = make_sim(capacity=Capacity(storage=10 * GiB))
    ps, mount = str(uuid.uuid4()), "/var/lib/kvmcloud/ps"

    def used() -> int:
        body = call(sim, "host-00001", "/storage/capacity",
                    CapacityCmd(storage_uuid=ps, mount_path=mount)).body
        assert body is not None and body["success"]
        return int(body["capacity"]["usedByKvmcloudBytes"])

    def make(path: str, size: int) -> dict[str, Any]:
        body = call(sim, "host-00001", "/storage/volume/create-empty",
                    CreateEmptyVolumeCmd(storage_uuid=ps, mount_path=mount, install_path=path,
                                         size=size)).body
        assert body is not None
        return body

    assert make("vol/a.qcow2", 4 * GiB)["success"] and make("vol/b.qcow2", 4 * GiB)["success"]
    assert used() == 8 * GiB
    assert make("vol/c.qcow2", 4 * GiB)["error"]["code"] == "INSUFFICIENT_CAPACITY"
    call(sim, "host-00001", "/storage/volume/resize",
         ResizeVolumeCmd(storage_uuid=ps, mount_path=mount, install_path="vol/a.qcow2", size=GiB,
                         force=True))
    assert used() == 5 * GiB
    call(sim, "host-00001", "/storage/volume/delete",
         DeleteVolumeCmd(storage_uuid=ps, mount_path=mount, install_path="vol/b.qcow2"))
    assert used() == GiB == sum(v.size for v in sim.storages[ps].volumes.values())
    assert make("vol/c.qcow2", 4 * GiB)["success"]


def test_fail_fault_answers_the_injected_error_once() -> None:
    sim, _ = make_sim()
    sim.faults.add(FaultRule(agent="host-00001", path="/vm/start", action="fail",
                             code="LIBVIRT_ERROR", times=1))
    vm = str(uuid.uuid4())
    first = call(sim, "host-00001", "/vm/start", start_cmd(vm)).body
    assert first is not None and first["success"] is False
    assert first["error"]["code"] == "LIBVIRT_ERROR" and first["error"]["details"]["injected"]
    assert vm not in sim.agents["host-00001"].domains
    assert call(sim, "host-00001", "/vm/start", start_cmd(vm)).body["success"]  # type: ignore[index]
    assert sim.faults.list() == []


def test_fault_rules_match_agent_path_prefix_and_body() -> None:
    sim, _ = make_sim()
    sim.faults.add(FaultRule(agent="*", path="/vm/*", action="fail", match={"vmUuid": "x"}))
    assert sim.faults.take("host-00002", "/vm/stop", {"vmUuid": "y"}) is None
    assert sim.faults.take("host-00002", "/host/ping", {"vmUuid": "x"}) is None
    rule = sim.faults.take("host-00002", "/vm/stop", {"vmUuid": "x"})
    assert rule is not None and rule.fired == 1


def test_drop_callback_runs_the_command_but_sends_nothing() -> None:
    sim, rec = make_sim()
    sim.faults.add(FaultRule(path="/vm/start", action="drop-callback"))
    vm = str(uuid.uuid4())
    a = call(sim, "host-00001", "/vm/start", start_cmd(vm), task="lost", callback=CB)
    assert a.status == 202 and rec.posts == []
    status = sim.status(sim.agents["host-00001"], "lost")
    assert status["state"] == "succeeded" and status["reply"]["vmUuid"] == vm


def test_http_error_and_disconnect_faults() -> None:
    sim, _ = make_sim()
    sim.faults.add(FaultRule(path="/host/ping", action="http-error", status=502, times=1))
    sim.faults.add(FaultRule(path="/host/ping", action="disconnect", times=1))
    assert call(sim, "host-00001", "/host/ping", {}).status == 502
    assert call(sim, "host-00001", "/host/ping", {}).disconnect
    assert call(sim, "host-00001", "/host/ping", {}).status == 200


def test_hang_ends_with_the_commands_deadline() -> None:
    sim, rec = make_sim()
    sim.faults.add(FaultRule(path="/vm/start", action="hang"))
    body = start_cmd(str(uuid.uuid4())).model_copy(update={"timeout": 0.05})

    async def run() -> dict[str, Any]:
        a = await sim.command(sim.agents["host-00001"], "/vm/start",
                              {"taskuuid": "slow", "callbackurl": CB},
                              body.model_dump_json(by_alias=True).encode())
        assert a.status == 202
        assert sim.status(sim.agents["host-00001"], "slow")["state"] == "running"
        while "slow" not in rec.replies():
            await asyncio.sleep(0.01)
        return rec.replies()["slow"]
    reply = asyncio.run(run())
    assert reply["error"]["code"] == "DEADLINE_EXCEEDED"
    assert sim.status(sim.agents["host-00001"], "slow")["state"] == "failed"


def test_cancel_stops_a_delayed_task() -> None:
    sim, rec = make_sim()
    sim.faults.add(FaultRule(path="/vm/start", action="delay", seconds=60))
    vm = str(uuid.uuid4())

    async def run() -> dict[str, Any]:
        host = sim.agents["host-00001"]
        await sim.command(host, "/vm/start", {"taskuuid": "c1", "callbackurl": CB},
                          start_cmd(vm).model_dump_json(by_alias=True).encode())
        assert sim.cancel(host, "c1")["state"] == "cancelled"
        while "c1" not in rec.replies():
            await asyncio.sleep(0.01)
        return rec.replies()["c1"]
    assert asyncio.run(run())["error"]["code"] == "CANCELLED"
    assert vm not in sim.agents["host-00001"].domains


def test_restart_interrupts_running_tasks_and_changes_the_boot_id() -> None:
    sim, rec = make_sim()
    sim.faults.add(FaultRule(path="/vm/start", action="hang"))
    host = sim.agents["host-00001"]
    boot = host.boot_id

    async def run() -> dict[str, Any]:
        await sim.command(host, "/vm/start", {"taskuuid": "r1", "callbackurl": CB},
                          start_cmd(str(uuid.uuid4())).model_dump_json(by_alias=True).encode())
        sim.restart(host)
        while "r1" not in rec.replies():
            await asyncio.sleep(0.01)
        return rec.replies()["r1"]
    assert asyncio.run(run())["error"]["code"] == "INTERRUPTED"
    assert host.boot_id != boot
    assert sim.status(host, "r1")["state"] == "interrupted"


def test_connect_sets_the_identity_and_out_of_band_events_go_to_the_events_url() -> None:
    sim, rec = make_sim(controller_urls=["http://127.0.0.1:9"])
    host_uuid = str(uuid.uuid4())
    events = f"http://127.0.0.1:9/v1/agent-events/{host_uuid}"
    reply = call(sim, "host-00001", "/host/connect", {"hostUuid": host_uuid, "eventsUrl": events}).body
    assert reply is not None and reply["hostUuid"] == host_uuid and reply["eventsUrl"] == events
    ping = call(sim, "host-00001", "/host/ping", {}).body
    assert ping is not None and ping["hostUuid"] == host_uuid
    sim.emit_event(sim.agents["host-00001"], "vm-1", "Stopped", "crashed")
    assert rec.posts[-1] == (events, {"hostUuid": host_uuid, "vmUuid": "vm-1", "state": "Stopped",
                                      "reason": "crashed"}, {"kind": "event", "Authorization": AUTH})


def test_callback_urls_outside_the_configured_controllers_are_refused() -> None:
    sim, _ = make_sim(controller_urls=["http://127.0.0.1:8080"])
    a = call(sim, "host-00001", "/host/ping", {}, task="p", callback="http://127.0.0.2:8080/x")
    assert a.status == 400 and a.body is not None and a.body["error"]["details"]["field"] == "callbackurl"
    ok = call(sim, "host-00001", "/host/ping", {}, task="q", callback="http://127.0.0.1:8080/v1/x")
    assert ok.status == 202


def test_migrate_moves_the_domain_to_the_host_with_that_ip() -> None:
    sim, _ = make_sim()
    vm = str(uuid.uuid4())
    call(sim, "host-00001", "/vm/start", start_cmd(vm))
    dest = sim.agents["host-00002"]
    reply = call(sim, "host-00001", "/vm/migrate", {"vmUuid": vm, "destHostIp": dest.ip}).body
    assert reply is not None and reply["success"], reply
    assert vm in dest.domains and vm not in sim.agents["host-00001"].domains


def test_auto_created_agents_take_their_kind_from_the_path_or_the_id() -> None:
    sim, _ = make_sim()
    assert sim.agent_for("newhost", "/vm/start").kind == "kvm"  # type: ignore[union-attr]
    assert sim.agent_for("x", "/ceph/ping").kind == "ceph"  # type: ignore[union-attr]
    assert sim.agent_for("bs-9").kind == "sftp"  # type: ignore[union-attr]
    sim.config.auto_create = False
    assert sim.agent_for("nobody", "/vm/start") is None


@pytest.mark.parametrize("header", ["", "Bearer wrong", "Basic t0ken", f"Bearer {TOKEN}x"])
def test_only_the_agents_token_is_accepted(header: str) -> None:
    sim, _ = make_sim()
    assert not sim.authorised(sim.agents["host-00001"], header)
    assert sim.authorised(sim.agents["host-00001"], AUTH)


def test_dhcp_apply_replaces_the_lease_set_and_release_removes_macs() -> None:
    sim, _ = make_sim()
    l3 = str(uuid.uuid4())
    net = {"l3NetworkUuid": l3, "bridgeName": "br0", "serverIp": "10.0.0.2", "prefixLength": 24}
    lease = [{"mac": "52:54:00:00:00:0a", "ip": "10.0.0.10"}, {"mac": "52:54:00:00:00:0b", "ip": "10.0.0.11"}]
    first = call(sim, "host-00001", "/network/dhcp/apply", {**net, "leases": lease}).body
    assert first is not None and first["success"] and first["leases"] == 2, first
    again = call(sim, "host-00001", "/network/dhcp/apply", {**net, "leases": lease[:1]}).body
    assert again is not None and again["leases"] == 1
    call(sim, "host-00001", "/network/dhcp/release", {"l3NetworkUuid": l3, "macs": ["52:54:00:00:00:0a"]})
    assert sim.agents["host-00001"].dhcp[l3] == []


def test_dhcp_add_joins_the_set_replacing_a_mac_or_address_and_needs_a_server() -> None:
    sim, _ = make_sim()
    l3 = str(uuid.uuid4())
    add = {"l3NetworkUuid": l3, "leases": [{"mac": "52:54:00:00:00:0c", "ip": "10.0.0.10"}]}
    missing = call(sim, "host-00001", "/network/dhcp/add", add).body
    assert missing is not None and missing["error"]["code"] == "NOT_FOUND", missing
    net = {"l3NetworkUuid": l3, "bridgeName": "br0", "serverIp": "10.0.0.2", "prefixLength": 24}
    call(sim, "host-00001", "/network/dhcp/apply", {**net, "leases": [
        {"mac": "52:54:00:00:00:0a", "ip": "10.0.0.10"}, {"mac": "52:54:00:00:00:0b", "ip": "10.0.0.11"}]})
    added = call(sim, "host-00001", "/network/dhcp/add", add).body
    assert added is not None and added["success"] and added["leases"] == 2, added
    assert [lease["mac"] for lease in sim.agents["host-00001"].dhcp[l3]] == [
        "52:54:00:00:00:0b", "52:54:00:00:00:0c"]


def test_l2_check_reports_whether_the_bridge_was_created() -> None:
    sim, _ = make_sim()
    l2 = {"type": "vlan", "bridgeName": "br_eth0_10", "physicalInterface": "eth0", "vlanId": 10}
    assert call(sim, "host-00001", "/network/l2/check", l2).body["exists"] is False  # type: ignore[index]
    made = call(sim, "host-00001", "/network/l2/create", l2).body
    assert made is not None and made["uplink"] == "eth0.10" and made["exists"] is True, made
    assert call(sim, "host-00002", "/network/l2/check", l2).body["exists"] is False  # type: ignore[index]
    assert call(sim, "host-00001", "/network/l2/check", l2).body["exists"] is True  # type: ignore[index]


def test_a_delayed_task_pushes_progress_then_its_reply() -> None:
    sim, rec = make_sim()
    sim.faults.add(FaultRule(path="/vm/start", action="delay", seconds=0.3))

    async def run() -> None:
        await sim.command(sim.agents["host-00001"], "/vm/start", {"taskuuid": "p1", "callbackurl": CB},
                          start_cmd(str(uuid.uuid4())).model_dump_json(by_alias=True).encode())
        while "p1" not in rec.replies():
            await asyncio.sleep(0.01)
    asyncio.run(run())
    kinds = [h["kind"] for _, _, h in rec.posts]
    assert kinds[0] == "progress" and kinds[-1] == "reply"
    assert rec.posts[0][1]["progress"]["percent"] == 0.0
    assert rec.replies()["p1"]["success"] is True


def test_backup_storage_adds_describes_and_deletes_images() -> None:
    sim, _ = make_sim(backup_storages=1)
    bs = {"backupStorageUuid": str(uuid.uuid4()), "root": "/var/lib/kvmcloud/store"}
    image = {**bs, "imageUuid": "cirros"}
    missing = call(sim, "bs-00001", "/backup/image/info", image).body
    assert missing is not None and missing["error"]["code"] == "NOT_FOUND"
    added = call(sim, "bs-00001", "/backup/image/add",
                 {**image, "url": "http://127.0.0.1/cirros.qcow2", "size": 20 << 20}).body
    assert added is not None and added["success"], added
    assert added["image"]["imageUuid"] == "cirros" and added["image"]["size"] == 20 << 20
    info = call(sim, "bs-00001", "/backup/image/info", image).body
    assert info is not None and info["image"] == added["image"]
    cap = call(sim, "bs-00001", "/backup/capacity", bs).body
    assert cap is not None and cap["usedByImages"] == 20 << 20
    assert call(sim, "bs-00001", "/backup/image/delete", image).body["deleted"] is True  # type: ignore[index]
