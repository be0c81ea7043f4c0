"""kvmagent benchmarks.

1. Start latency: from the ``/vm/start`` request to the domain running, through
   the real agent process (HTTP, validation, XML build, libvirt), against
   ``virsh create`` of the same domain XML and against libvirt's ``createXML``
   called in-process on an open connection (the floor), measured alternately
   in one run.
   The guest is the tiny image booted from a qcow2 linked clone; each domain is
   destroyed right after it runs (boot time is the guest's, not the agent's).
2. The agent's own cost per start without QEMU: the full command path
   in-process on libvirt's test driver against ``createXML`` on it.
3. Domain XML build time for a 16-disk, 8-NIC VM (typed spec -> XML), and the
   same with the request's validation included.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import libvirt

from kvmagent.domain_spec import build_domain
from kvmagent.models import StartVmCmd
from kvmagent.paths import set_storage_roots
from tests.bench.common import Result, median, write
from tests.conftest import ENV_DIR, read_component_env
from tests.support.agents import AgentProcess, CallbackReceiver, python_agent
from tests.unit.kvmagent.specs import big_spec

ROUNDS = 15
XML_BUILDS = 2000


def _clone(image: str, dest: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image, str(dest)],
                   check=True, timeout=30)
    return dest


def _spec(vm: str, root: Path) -> dict[str, object]:
    return {"vmUuid": vm, "vmName": "bench", "cpuNum": 1, "memorySize": 128 << 20,
            "rootVolume": {"type": "file", "volumeUuid": vm, "deviceId": 0, "installPath": str(root)}}


def _domain_xml(vm: str, root: Path, domain_type: str, work: Path) -> str:
    cmd = StartVmCmd.model_validate(_spec(vm, root))
    return build_domain(cmd, domain_type=domain_type, console_log=work / "console" / f"{vm}.log").to_xml()


def start_latency(work: Path) -> list[Result]:
    lv = read_component_env("libvirt")
    guest = read_component_env("guest")
    uri, dtype = lv["LIBVIRT_URI"], lv["LIBVIRT_DOMAIN_TYPE"]
    receiver = CallbackReceiver().start()
    agent = AgentProcess(python_agent("kvmagent.app"), work, controller_urls=[receiver.url], extra={
        "libvirt_uri": uri, "domain_type": dtype,
        "storage_roots": [str(work)], "console_dir": work / "console"}).start()
    conn = libvirt.open(uri)

    def via_agent(vm: str, root: Path) -> float:
        t0 = time.perf_counter()
        reply = agent.call("/vm/start", _spec(vm, root))
        ms = (time.perf_counter() - t0) * 1000
        assert reply["success"] and reply["state"] == "Running", reply
        agent.call("/vm/destroy", {"vmUuid": vm})
        return ms

    def via_virsh(vm: str, root: Path) -> float:
        xml = work / f"{vm}.xml"
        xml.write_text(_domain_xml(vm, root, dtype, work))
        t0 = time.perf_counter()
        subprocess.run(["virsh", "-q", "-c", uri, "create", str(xml)], check=True, capture_output=True, timeout=60)
        ms = (time.perf_counter() - t0) * 1000
        subprocess.run(["virsh", "-q", "-c", uri, "destroy", vm.replace("-", "")], check=True,
                       capture_output=True, timeout=60)
        return ms

    def via_createxml(vm: str, root: Path) -> float:  # the floor: no CLI, no HTTP
        xml = _domain_xml(vm, root, dtype, work)
        t0 = time.perf_counter()
        dom = conn.createXML(xml, 0)
        ms = (time.perf_counter() - t0) * 1000
        dom.destroy()
        return ms

    ways = [via_agent, via_virsh, via_createxml]
    times: dict[str, list[float]] = {w.__name__: [] for w in ways}
    try:
        for i in range(ROUNDS):
            for way in ways[i % 3:] + ways[:i % 3]:  # rotate the order: no way always follows the same one
                vm = str(uuid.uuid4())
                root = _clone(guest["GUEST_IMAGE"], work / f"{vm}.qcow2")
                times[way.__name__].append(way(vm, root))
    finally:
        conn.close()
        agent.stop()
        receiver.stop()
    a, v, lib = (median(times[w.__name__]) for w in ways)
    return [
        Result.against("vm_start_to_running_via_agent_median", round(a, 1), "ms", "lower",
                       "virsh_create_same_xml_median", round(v, 1)),
        Result.against("vm_start_to_running_via_agent_median_vs_createxml", round(a, 1), "ms", "lower",
                       "libvirt_createxml_in_process_median", round(lib, 1)),
        Result("vm_start_agent_overhead_vs_virsh_median", round(a - v, 1), "ms", "lower"),
        Result("vm_start_agent_overhead_vs_createxml_median", round(a - lib, 1), "ms", "lower"),
    ]


def in_process_overhead(work: Path) -> list[Result]:
    """The agent's own cost per start, without QEMU's noise: the whole command
    path (WSGI, validation, journal, lock, XML build, libvirt call, reply) on
    libvirt's test driver, against ``createXML`` of the same XML on it."""
    from agentcore.serve import build
    from kvmagent.app import make_plugins
    from kvmagent.config import KvmAgentConfig

    token = "bench-token-0123456789"
    config = KvmAgentConfig(token=token, state_dir=work / "inproc-state", libvirt_uri="test:///default",
                            storage_roots=[work], console_dir=work / "inproc-console")
    plugins = make_plugins(config, events=False)
    plugins[0].host.domain_type = "test"  # type: ignore[attr-defined]
    runtime, app = build("kvmagent", config, plugins)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    root = work / "inproc.qcow2"
    root.write_bytes(b"")
    conn = libvirt.open("test:///default")
    agent_ms: list[float] = []
    direct_ms: list[float] = []
    try:
        for _ in range(200):
            vm = str(uuid.uuid4())
            t0 = time.perf_counter()
            r = client.post("/vm/start", json=_spec(vm, root), headers=headers)
            agent_ms.append((time.perf_counter() - t0) * 1000)
            assert r.get_json()["success"], r.get_json()
            client.post("/vm/destroy", json={"vmUuid": vm}, headers=headers)
            vm = str(uuid.uuid4())
            xml = _domain_xml(vm, root, "test", work)
            t0 = time.perf_counter()
            dom = conn.createXML(xml, 0)
            direct_ms.append((time.perf_counter() - t0) * 1000)
            dom.destroy()
    finally:
        conn.close()
        runtime.stop()
        set_storage_roots(())  # process-wide: the XML benchmark's paths are elsewhere
    return [Result.against("vm_start_in_process_test_driver_median", round(median(agent_ms), 3), "ms", "lower",
                           "createxml_test_driver_median", round(median(direct_ms), 3))]


def xml_build() -> list[Result]:
    body = big_spec()
    cmd = StartVmCmd.model_validate(body)
    log = Path("/var/log/kvmcloud/console/x.log")
    t0 = time.perf_counter()
    for _ in range(XML_BUILDS):
        build_domain(cmd, domain_type="kvm", console_log=log).to_xml()
    build = (time.perf_counter() - t0) / XML_BUILDS * 1000
    t0 = time.perf_counter()
    for _ in range(XML_BUILDS):
        build_domain(StartVmCmd.model_validate(body), domain_type="kvm", console_log=log).to_xml()
    both = (time.perf_counter() - t0) / XML_BUILDS * 1000
    return [
        Result("domain_xml_build_16disk_8nic", round(build, 4), "ms", "lower"),
        Result("validate_and_build_16disk_8nic", round(both, 4), "ms", "lower"),
    ]


def main() -> None:
    work = ENV_DIR / "kvmagent-bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    work.chmod(0o755)
    try:
        results = start_latency(work) + in_process_overhead(work) + xml_build()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write("kvmagent", results, command="BENCH=kvmagent python -m tests.bench.run")


if __name__ == "__main__":
    main()
