"""``POST /v1/agent-events/<hostUuid>``: only the tokens of that host's agents are taken, so an
agent cannot report another host's VM stopped (which would free its capacity for a second copy)."""

from __future__ import annotations

import logging

import pytest

from tests.unit.controller.harness import AGENT_TOKEN, API_TOKEN, Cloud


def test_an_event_is_taken_only_from_the_agents_of_the_host_it_names(
        cloud: Cloud, caplog: pytest.LogCaptureFixture) -> None:
    cloud.basic(hosts=2)
    data = cloud.call("POST", "/v1/vms", cloud.vm_body("victim"), wait="1")[1]
    assert data["job"]["state"] == "succeeded", data
    vm = data["resource"]["uuid"]
    on = cloud.ok("GET", f"/v1/vms/{vm}")["hostUuid"]
    hosts = {h.uuid: h for h in cloud.hosts.values()}  # type: ignore[attr-defined]
    victim, other = hosts[on], next(h for u, h in hosts.items() if u != on)
    own = {}
    for h in (victim, other):  # each agent gets a token of its own, as a deploy gives it
        for url, role in ((h.kvm_url, "kvmagent"), (h.storage_url, "storageagent")):
            own[url] = f"own-token-of-{role}-on-{h.ip}"
            cloud.ctl.agent_tokens.register(url, own[url], role)

    def event(token: str, state: str) -> int:
        r = cloud.client.post(f"/v1/agent-events/{on}", json={"vmUuid": vm, "state": state},
                              headers={"Authorization": f"Bearer {token}"})
        return r.status_code

    with caplog.at_level(logging.WARNING, logger="controller.api.routes"):
        for token in (own[other.kvm_url], own[other.storage_url], AGENT_TOKEN):
            assert event(token, "Stopped") == 403
    assert "refused an event for host" in caplog.text and other.ip in caplog.text
    assert own[other.kvm_url] not in caplog.text
    got = cloud.ok("GET", f"/v1/vms/{vm}")
    assert (got["state"], got["hostUuid"]) == ("Running", on)

    assert event(API_TOKEN, "Stopped") == 401
    assert event(own[victim.storage_url], "Paused") == 200  # any of the host's own agents
    assert cloud.ok("GET", f"/v1/vms/{vm}")["state"] == "Paused"
    assert event(own[victim.kvm_url], "Running") == 200
    assert cloud.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"
    # a host that does not exist has no agents: nobody's events for it are taken
    r = cloud.client.post(f"/v1/agent-events/{'0' * 32}", json={"vmUuid": vm, "state": "Stopped"},
                          headers={"Authorization": f"Bearer {own[victim.kvm_url]}"})
    assert r.status_code == 403
