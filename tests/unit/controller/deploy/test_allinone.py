"""``make up`` run again over what an earlier run left: a VM whose create was cut short (Error)
is made again, a VM ``make down`` stopped is started, and only a boot after the start counts."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from controller.db.models import Vm
from controller.deploy.allinone import AllInOneError, Api, _running_vm, _tail
from tests.unit.controller.harness import API_TOKEN, Cloud


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    c = Cloud(f"sqlite:///{tmp_path}/c.db").basic(hosts=1)
    yield c
    c.close()


def _api(cloud: Cloud) -> Api:
    api = Api("http://controller.test", API_TOKEN, 30)
    api.client = httpx.Client(transport=httpx.WSGITransport(app=cloud.app), base_url="http://controller.test",
                              headers={"Authorization": f"Bearer {API_TOKEN}"})
    return api


def _args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(console_dir=str(tmp_path), marker="BOOTED", boot_timeout=5)


def test_an_error_vm_is_made_again_and_a_stopped_one_started(cloud: Cloud, tmp_path: Path) -> None:
    api, args = _api(cloud), _args(tmp_path)
    body = cloud.vm_body("vm-1")
    first = cloud.succeeded("POST", "/v1/vms", body)["resourceUuid"]
    with cloud.ctl.db.write() as s:  # what a controller killed in the create leaves
        s.execute(update(Vm).where(Vm.uuid == first).values(state="Error"))

    def booted(uuid: str) -> None:
        (tmp_path / f"{uuid}.log").write_text("old boot BOOTED\n")

    # the console must show the marker: the fake host boots nothing, so write it as a guest
    # would, once, when the new VM runs (a fixed delay raced the re-create on a loaded machine)
    done = threading.Event()

    def guest() -> None:
        while not done.wait(0.1):
            for v in cloud.ok("GET", "/v1/vms")["items"]:
                if v["uuid"] != first and v["state"] == "Running" and not (tmp_path / f"{v['uuid']}.log").exists():
                    booted(v["uuid"])

    writer = threading.Thread(target=guest)
    writer.start()
    try:
        vm, console = _running_vm(api, 0.0, args, body)
    finally:
        done.set()
        writer.join()
    assert vm["uuid"] != first
    assert [v["uuid"] for v in cloud.ok("GET", "/v1/vms")["items"]] == [vm["uuid"]]

    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/stop", {})
    with pytest.raises(AllInOneError, match="no 'BOOTED'"):  # the old boot's marker does not count
        _running_vm(api, 0.0, args, body)
    assert cloud.ok("GET", f"/v1/vms/{vm['uuid']}")["state"] == "Running"  # it was started


def test_tail_reads_past_the_offset_or_all_of_a_truncated_file(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text("old BOOTED\nnew line\n")
    assert "BOOTED" not in _tail(log, len("old BOOTED\n"))
    log.write_text("BOOTED\n")
    assert _tail(log, 1000) == "BOOTED\n"
