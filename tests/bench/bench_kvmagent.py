"""kvmagent benchmarks.

1. Start latency: from the ``/vm/start`` request to the domain running, through
   the real agent process (HTTP, validation, XML build, libvirt), against
   ``virsh create`` of the same domain XML and against libvirt's ``createXML``
   called in-process on an open connection (the floor), measured alternately
   in one run.
   The guest is the tiny image booted from a qcow2 linked clone; each domain is
   destroyed right after it runs (boot time is the guest's, not the agent's).
2. Domain XML build time for a 16-disk, 8-NIC VM (typed spec -> XML), and the
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
from tests.bench.common import Result, median, write
from tests.conftest import ENV_DIR, read_component_env
from tests.support.agents import AgentProcess, CallbackReceiver, python_agent
from tests.unit.kvmagent.specs import big_spec

ROUNDS = 9
XML_BUILDS = 2000


def _clone(image: str, dest: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image, str(dest)],
                   check=True, timeout=30)
    return dest


def _spec(vm: str, root: Path) -> dict[str, object]:
    return {"vmUuid": vm, "vmName": "bench", "cpuNum": 1, "memorySize": 128 << 20,
            "rootVolume": {"type": "file", "volumeUuid": vm, "deviceId": 0, "installPath": str(root)}}


def start_latency(work: Path) -> list[Result]:
    lv = read_component_env("libvirt")
    guest = read_component_env("guest")
    receiver = CallbackReceiver().start()
    agent = AgentProcess(python_agent("kvmagent.app"), work, controller_urls=[receiver.url], extra={
        "libvirt_uri": lv["LIBVIRT_URI"], "domain_type": lv["LIBVIRT_DOMAIN_TYPE"],
        "storage_roots": [str(work)], "console_dir": work / "console"}).start()
    agent_ms: list[float] = []
    virsh_ms: list[float] = []
    libvirt_ms: list[float] = []
    conn = libvirt.open(lv["LIBVIRT_URI"])
    try:
        for i in range(ROUNDS):
            vm = str(uuid.uuid4())
            root = _clone(guest["GUEST_IMAGE"], work / f"a{i}.qcow2")
            t0 = time.perf_counter()
            reply = agent.call("/vm/start", _spec(vm, root))
            agent_ms.append((time.perf_counter() - t0) * 1000)
            assert reply["success"] and reply["state"] == "Running", reply
            agent.call("/vm/destroy", {"vmUuid": vm})

            vm = str(uuid.uuid4())
            root = _clone(guest["GUEST_IMAGE"], work / f"v{i}.qcow2")
            cmd = StartVmCmd.model_validate(_spec(vm, root))
            xml = work / f"v{i}.xml"
            xml.write_text(build_domain(cmd, domain_type=lv["LIBVIRT_DOMAIN_TYPE"],
                                        console_log=work / "console" / f"{vm}.log").to_xml())
            t0 = time.perf_counter()
            subprocess.run(["virsh", "-q", "-c", lv["LIBVIRT_URI"], "create", str(xml)], check=True,
                           capture_output=True, timeout=60)
            virsh_ms.append((time.perf_counter() - t0) * 1000)
            subprocess.run(["virsh", "-q", "-c", lv["LIBVIRT_URI"], "destroy", vm.replace("-", "")],
                           check=True, capture_output=True, timeout=60)

            # the floor: libvirt's own createXML on an open connection, no CLI, no HTTP
            vm = str(uuid.uuid4())
            root = _clone(guest["GUEST_IMAGE"], work / f"l{i}.qcow2")
            domain_xml = build_domain(StartVmCmd.model_validate(_spec(vm, root)),
                                      domain_type=lv["LIBVIRT_DOMAIN_TYPE"],
                                      console_log=work / "console" / f"{vm}.log").to_xml()
            t0 = time.perf_counter()
            dom = conn.createXML(domain_xml, 0)
            libvirt_ms.append((time.perf_counter() - t0) * 1000)
            dom.destroy()
    finally:
        conn.close()
        agent.stop()
        receiver.stop()
    a, v, lib = median(agent_ms), median(virsh_ms), median(libvirt_ms)
    return [
        Result.against("vm_start_to_running_via_agent_median", round(a, 1), "ms", "lower",
                       "virsh_create_same_xml_median", round(v, 1)),
        Result.against("vm_start_to_running_via_agent_median_vs_createxml", round(a, 1), "ms", "lower",
                       "libvirt_createxml_in_process_median", round(lib, 1)),
        Result("vm_start_agent_overhead_vs_virsh_median", round(a - v, 1), "ms", "lower"),
        Result("vm_start_agent_overhead_vs_createxml_median", round(a - lib, 1), "ms", "lower"),
    ]


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
        results = start_latency(work) + xml_build()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write("kvmagent", results, command="BENCH=kvmagent python -m tests.bench.run")


if __name__ == "__main__":
    main()
