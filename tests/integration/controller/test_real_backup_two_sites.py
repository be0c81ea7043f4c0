"""Disaster recovery to a second site, against the real agents: two zones, each with a
host, a local primary storage and an SFTP backup storage of its own, the two stores on
two "hosts" of the nshost component (each an sshd in a network namespace of its own;
every SFTP byte crosses the nshost bridge).

Zone A: the world's kvmagent (the system libvirtd), store A on nshost 1 (the image is
added there). Zone B: a second kvmagent on a second libvirtd (its own mount namespace
and host UUID), its own uplink, store B on nshost 2, attached to zone B only.

A stopped VM of zone A with a known pattern on its disk is backed up into store A, the
backup replicated to store B (store B's agent pulls it from nshost 1 and checks it
against the recorded digest), and a new VM made from store B in zone B boots there, with
the pattern on its disk. Store A, not attached to zone B, is refused there. One TCG
guest runs at a time.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.integration.controller.realworld import (
    SftpStore,
    World,
    add_backup_storage,
    add_uplink,
    add_zone,
    build_cloud,
    create_vm,
    drop_uplink,
    kvmagent,
    nshost_known_hosts,
    nshost_store,
    open_world,
)
from tests.integration.controller.test_real_backup import qemu_io
from tests.integration.kvmagent.libvirt2 import SecondLibvirtd

pytestmark = [pytest.mark.libvirt, pytest.mark.sftp, pytest.mark.netns, pytest.mark.slow]
PATTERN = 0x3c


@dataclass
class Sites:
    w: World
    store_a: SftpStore
    store_b: SftpStore
    b: dict[str, str]
    """zone B's ids, and ``bs``: store B's backup storage"""
    lv: SecondLibvirtd


@pytest.fixture
def sites(component_env: Callable[[str], dict[str, str]],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    nshost = component_env("nshost")
    known = nshost_known_hosts(nshost, tmp_path_factory.mktemp("ns") / "known_hosts")
    sto = {"sftp_key_file": nshost["NSHOST_KEY"], "sftp_known_hosts": str(known)}
    with open_world(component_env, sto) as w, \
            nshost_store(nshost, 1, known, w.url, w.base / "sftp-a") as store_a, \
            nshost_store(nshost, 2, known, w.url, w.base / "sftp-b") as store_b:
        build_cloud(w, "10.253.15", store=store_a)
        lv = SecondLibvirtd(w.base / "lv2").start()
        uplink = add_uplink()
        kvm2 = kvmagent(w.base, "kvm2", w.url, lv.uri, component_env("libvirt")["LIBVIRT_DOMAIN_TYPE"],
                        [w.base], dhcp_tag="h2").start()
        b: dict[str, str] = {}
        try:
            b = add_zone(w, "site-b", "10.253.16", w.base / "ps-b", uplink,
                         {"name": "h2", "managementIp": "127.0.0.2", "agentUrl": kvm2.url})
            b["bs"] = add_backup_storage(w.api, {**store_b.body, "name": "site-b",
                                                 "zoneUuids": [b["zone"]]})
            yield Sites(w, store_a, store_b, b, lv)
        finally:
            if "zone" in b:
                w.api.delete(f"/v1/zones/{b['zone']}", params={"confirm": "1", "wait": "1"}, timeout=300)
            kvm2.stop()
            lv.stop()
            drop_uplink(uplink)


def test_a_backup_replicated_to_the_other_site_boots_there_with_its_data(sites: Sites) -> None:
    w, b = sites.w, sites.b
    assert sites.store_a.body["hostname"] != sites.store_b.body["hostname"]
    vm = create_vm(w, "site-a")
    w.job("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})  # one guest at a time
    root = w.ok("GET", "/v1/volumes", q=[f"vmUuid={vm}", "type=Root"])["items"][0]
    size = int(root["size"])
    assert "wrote" in qemu_io(w.ps_root / root["installPath"], f"write -P {PATTERN} {size - 65536} 64k")
    vb = w.job("POST", f"/v1/vms/{vm}/actions/backup", {"backupStorageUuid": w.ids["bs"]})["result"]
    [backup] = w.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={vb['uuid']}")["items"]
    assert sites.store_a.manifest(backup["installPath"]).exists()
    assert not sites.store_b.manifest(backup["installPath"]).exists()
    # zone B cannot read store A: it is not attached there
    r = w.api.post(f"/v1/vm-backups/{vb['uuid']}/actions/create-vm",
                   json={"name": "site-b", "backupStorageUuid": w.ids["bs"], "l3NetworkUuids": [b["l3"]]})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "backupStorageUuid", r.text

    done = w.job("POST", f"/v1/vm-backups/{vb['uuid']}/actions/replicate", {"backupStorageUuid": b["bs"]})
    assert done["result"]["replicated"] == [backup["uuid"]] and done["result"]["chunksSent"] > 0, done
    manifest = json.loads(sites.store_b.manifest(backup["installPath"]).read_text())
    assert "sha256:" + manifest["digest"] == backup["digest"]

    made = w.job("POST", f"/v1/vm-backups/{vb['uuid']}/actions/create-vm",
                 {"name": "site-b", "backupStorageUuid": b["bs"], "l3NetworkUuids": [b["l3"]]})
    vm_b = made["resourceUuid"]
    got = w.ok("GET", f"/v1/vms/{vm_b}")
    assert got["state"] == "Running" and got["zoneUuid"] == b["zone"] and got["hostUuid"] == b["host"], got
    running = subprocess.run(["virsh", "-c", sites.lv.uri, "list", "--name"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
    assert running == [vm_b]
    ip = w.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm_b}")["items"][0]["ip"]
    assert ip.startswith("10.253.16.")
    w.wait_console(vm_b, f"{w.guest['GUEST_IP_MARKER']} eth0 {ip}\n")
    w.job("POST", f"/v1/vms/{vm_b}/actions/stop", {"force": True})
    root_b = w.ok("GET", "/v1/volumes", q=[f"vmUuid={vm_b}", "type=Root"])["items"][0]
    assert root_b["primaryStorageUuid"] == b["ps"]
    disk = w.base / "ps-b" / root_b["installPath"]
    assert "verification failed" not in qemu_io(disk, f"read -P {PATTERN} {size - 65536} 64k")
