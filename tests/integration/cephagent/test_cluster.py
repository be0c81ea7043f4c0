"""Cluster commands against the real cluster: connect, facts, ping, pools,
capacity, credentials and capabilities."""

from __future__ import annotations

import pytest

from tests.integration.cephagent.conftest import Ceph, call, error_code, unique
from tests.support.agents import AgentProcess

pytestmark = pytest.mark.ceph


def test_pools_initialised_checked_and_counted(ceph: Ceph, agent: AgentProcess, pools: dict[str, str]) -> None:
    for name in pools.values():
        assert ceph.pool_exists(name)
        with ceph.admin.open_ioctx(name) as io:
            assert "rbd" in io.application_list()
    again = call(agent, ceph, "/ceph/pools/init", pools=[{"name": n} for n in pools.values()])
    assert again["success"], again
    assert [p["created"] for p in again["pools"]] == [False, False]
    assert again["totalCapacity"] > 0 and again["availableCapacity"] > 0

    checked = call(agent, ceph, "/ceph/pools/check", pools=list(pools.values()))
    assert checked["success"] and all(p["exists"] and p["rbdEnabled"] for p in checked["pools"])

    cap = call(agent, ceph, "/ceph/capacity", pools=list(pools.values()))
    assert cap["success"], cap
    assert 0 < cap["availableCapacity"] <= cap["totalCapacity"]
    assert [p["name"] for p in cap["pools"]] == list(pools.values())
    assert all(p["availableBytes"] > 0 for p in cap["pools"])


def test_missing_pools_are_named(ceph: Ceph, agent: AgentProcess, pools: dict[str, str]) -> None:
    ghost = unique("it-ghost")
    r = call(agent, ceph, "/ceph/pools/check", pools=[pools["images"], ghost])
    assert error_code(r) == "POOL_NOT_FOUND"
    assert r["error"]["details"]["pools"] == [ghost]
    r = call(agent, ceph, "/ceph/pools/init", pools=[{"name": ghost, "predefined": True}])
    assert error_code(r) == "POOL_NOT_FOUND"
    assert not ceph.pool_exists(ghost)
    assert error_code(call(agent, ceph, "/ceph/capacity", pools=[ghost])) == "POOL_NOT_FOUND"


def test_connect_facts_and_ping(ceph: Ceph, agent: AgentProcess, pools: dict[str, str]) -> None:
    r = call(agent, ceph, "/ceph/connect", cluster=ceph.cluster(fsid=ceph.env["CEPH_FSID"]))
    assert r["success"] and r["fsid"] == ceph.env["CEPH_FSID"] and r["user"] == "client.agent"
    facts = call(agent, ceph, "/ceph/facts")
    assert facts["fsid"] == ceph.env["CEPH_FSID"]
    assert "pacific" in facts["cephVersion"]
    assert facts["monitors"] == ceph.monitors
    ping = call(agent, ceph, "/ceph/ping", pool=pools["volumes"])
    assert ping["success"] and ping["latencyMs"] > 0
    with ceph.admin.open_ioctx(pools["volumes"]) as io:  # the heartbeat object is cleaned up
        assert not [o.key for o in io.list_objects() if o.key.startswith("kvmcloud-heartbeat")]


def test_key_by_reference(ceph: Ceph, agent: AgentProcess, pools: dict[str, str]) -> None:
    cluster = ceph.cluster(keyRef="agent-key")
    r = agent.call("/ceph/ping", {"cluster": cluster, "pool": pools["volumes"]})
    assert r["success"], r
    r = agent.call("/ceph/ping", {"cluster": ceph.cluster(keyRef="no-such-key"), "pool": pools["volumes"]})
    assert error_code(r) == "CREDENTIAL_REFUSED"


def test_wrong_fsid_is_refused(ceph: Ceph, agent: AgentProcess) -> None:
    r = call(agent, ceph, "/ceph/connect", cluster=ceph.cluster(fsid="00000000-0000-0000-0000-000000000000"))
    assert error_code(r) == "FSID_MISMATCH"
    assert r["error"]["details"]["actual"] == ceph.env["CEPH_FSID"]


def test_admin_and_foreign_keyrings_are_refused(ceph: Ceph, agent: AgentProcess) -> None:
    r = call(agent, ceph, "/ceph/connect", cluster=ceph.cluster(user="admin", keyring=ceph.env["CEPH_ADMIN_KEYRING"]))
    assert error_code(r) == "CREDENTIAL_REFUSED"
    assert r["error"]["details"]["field"] == "cluster.user"
    r = call(agent, ceph, "/ceph/connect", cluster=ceph.cluster(keyring="/etc/shadow"))
    assert error_code(r) == "CREDENTIAL_REFUSED"
    assert r["error"]["details"]["field"] == "cluster.keyring"
    escape = ceph.env["CEPH_DIR"] + "/../../../../etc/shadow"
    assert error_code(call(agent, ceph, "/ceph/connect", cluster=ceph.cluster(keyring=escape))) == "CREDENTIAL_REFUSED"


def test_under_privileged_user_gets_a_clear_error(ceph: Ceph, agent: AgentProcess, pools: dict[str, str]) -> None:
    weak = ceph.cluster(user=ceph.env["CEPH_WEAK_USER"], keyring=ceph.env["CEPH_WEAK_KEYRING"])
    assert call(agent, ceph, "/ceph/connect", cluster=weak)["success"]
    r = call(agent, ceph, "/ceph/ping", cluster=weak, pool=pools["volumes"])
    assert error_code(r) == "CEPH_PERMISSION_DENIED"
    name = unique("weak")
    r = call(agent, ceph, "/ceph/volume/create", cluster=weak, pool=pools["volumes"], name=name, size=1 << 20)
    assert error_code(r) == "CEPH_PERMISSION_DENIED"
    assert name not in ceph.images(pools["volumes"])
    ghost = unique("it-weak")
    r = call(agent, ceph, "/ceph/pools/init", cluster=weak, pools=[{"name": ghost}])
    assert error_code(r) == "CEPH_PERMISSION_DENIED"
    assert not ceph.pool_exists(ghost)


def test_unreachable_monitors(ceph: Ceph, agent: AgentProcess) -> None:
    r = call(agent, ceph, "/ceph/connect", cluster=ceph.cluster(monitors=["127.0.0.1:1"]))
    assert error_code(r) == "CEPH_UNREACHABLE"
    assert call(agent, ceph, "/ceph/connect")["success"]  # the agent goes on answering
