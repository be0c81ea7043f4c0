"""Primary-storage commands against the real cluster: clones, snapshots,
rollback, flatten, delete rules, and bad input that never reaches Ceph."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import rbd

from tests.integration.cephagent.conftest import Ceph, MiB, call, error_code, unique
from tests.support.agents import AgentProcess, CallbackReceiver

pytestmark = pytest.mark.ceph


@pytest.fixture
def base_image(ceph: Ceph, agent: AgentProcess, pools: dict[str, str]) -> str:
    """A 16 MiB image in the images pool, with a marker written at 0."""
    name = unique("base")
    r = call(agent, ceph, "/ceph/volume/create", pool=pools["images"], name=name, size=16 * MiB)
    assert r["success"], r
    ceph.write(pools["images"], name, 0, b"BASE-IMAGE")
    return name


def test_ten_concurrent_clones_protect_one_snapshot(ceph: Ceph, agent: AgentProcess, pools: dict[str, str],
                                                    base_image: str) -> None:
    names = [unique("root") for _ in range(10)]

    def clone(name: str) -> dict[str, Any]:
        return call(agent, ceph, "/ceph/volume/create-from-image", pool=pools["volumes"], name=name,
                    srcPool=pools["images"], srcName=base_image, size=32 * MiB)

    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(clone, names))
    assert all(r["success"] for r in replies), [r for r in replies if not r["success"]]
    for r, name in zip(replies, names, strict=True):
        assert r["installPath"] == f"{pools['volumes']}/{name}"
        assert r["parent"] == {"pool": pools["images"], "name": base_image, "snapshot": "kvmcloud-base"}
        assert r["size"] == 32 * MiB
        assert ceph.read(pools["volumes"], name, 0, 10) == b"BASE-IMAGE"
    with ceph.admin.open_ioctx(pools["images"]) as io, rbd.Image(io, base_image, read_only=True) as img:
        snaps = [s["name"] for s in img.list_snaps()]
        assert snaps == ["kvmcloud-base"]
        assert img.is_protected_snap("kvmcloud-base")
        img.set_snap("kvmcloud-base")
        assert sorted(c for _, c in img.list_children()) == sorted(names)
    # the image cannot go while clones depend on it
    r = call(agent, ceph, "/ceph/image/delete", pool=pools["images"], name=base_image)
    assert error_code(r) == "HAS_CHILDREN"


def test_write_snapshot_rollback_flatten_delete(ceph: Ceph, agent: AgentProcess, pools: dict[str, str],
                                                base_image: str) -> None:
    vol, pool = unique("vol"), pools["volumes"]
    r = call(agent, ceph, "/ceph/volume/create-from-image", pool=pool, name=vol,
             srcPool=pools["images"], srcName=base_image)
    assert r["success"], r
    ceph.write(pool, vol, 4 * MiB, b"first version")
    snap = call(agent, ceph, "/ceph/snapshot/create", pool=pool, name=vol, snapshot="s1")
    assert snap["success"] and snap["installPath"] == f"{pool}/{vol}@s1" and snap["existed"] is False
    again = call(agent, ceph, "/ceph/snapshot/create", pool=pool, name=vol, snapshot="s1")
    assert error_code(again) == "SNAPSHOT_EXISTS"
    assert call(agent, ceph, "/ceph/snapshot/create", pool=pool, name=vol, snapshot="s1",
                skipIfExisting=True)["existed"] is True

    ceph.write(pool, vol, 4 * MiB, b"second version")
    r = call(agent, ceph, "/ceph/snapshot/rollback", pool=pool, name=vol, snapshot="s1")
    assert r["success"], r
    assert ceph.read(pool, vol, 4 * MiB, 13) == b"first version"

    info = call(agent, ceph, "/ceph/volume/info", pool=pool, name=vol)
    assert info["parent"]["name"] == base_image
    assert info["actualSize"] > 0 and [s["name"] for s in info["snapshots"]] == ["s1"]

    flat = call(agent, ceph, "/ceph/volume/flatten", pool=pool, name=vol)
    assert flat["success"] and flat["parent"] is None, flat
    assert ceph.read(pool, vol, 0, 10) == b"BASE-IMAGE"

    assert call(agent, ceph, "/ceph/snapshot/protect", pool=pool, name=vol, snapshot="s1")["protected"]
    r = call(agent, ceph, "/ceph/snapshot/delete", pool=pool, name=vol, snapshot="s1")
    assert error_code(r) == "SNAPSHOT_PROTECTED"
    assert call(agent, ceph, "/ceph/snapshot/unprotect", pool=pool, name=vol, snapshot="s1")["protected"] is False

    r = call(agent, ceph, "/ceph/volume/delete", pool=pool, name=vol)
    assert error_code(r) == "HAS_SNAPSHOTS"
    assert r["error"]["details"]["snapshots"] == ["s1"]
    r = call(agent, ceph, "/ceph/volume/delete", pool=pool, name=vol, purgeSnapshots=True)
    assert r["success"] and r["existed"] is True
    assert vol not in ceph.images(pool)
    r = call(agent, ceph, "/ceph/volume/delete", pool=pool, name=vol)
    assert r["success"] and r["existed"] is False


def test_flatten_reports_progress_to_the_callback(ceph: Ceph, agent: AgentProcess, receiver: CallbackReceiver,
                                                  pools: dict[str, str], base_image: str) -> None:
    vol = unique("flat")
    call(agent, ceph, "/ceph/volume/create-from-image", pool=pools["volumes"], name=vol,
         srcPool=pools["images"], srcName=base_image)
    task = unique("flatten")
    r = agent.post("/ceph/volume/flatten", {"cluster": ceph.cluster(), "pool": pools["volumes"], "name": vol},
                   taskuuid=task, callbackurl=receiver.url + "/v1/agent-callbacks")
    assert r.status_code == 202, r.text
    reply = receiver.wait_reply(task, timeout=60)
    assert reply["success"] and reply["parent"] is None, reply
    progress = [p["body"]["progress"] for p in receiver.posts
                if p["headers"].get("taskuuid") == task and p["headers"].get("kind") == "progress"]
    assert progress and progress[0]["stage"] == "flatten" and progress[0]["unit"] == "objects"
    assert progress[0]["total"] == 4  # 16 MiB in 4 MiB objects


def test_delete_and_rollback_refused_while_a_watcher_holds_the_image(
        ceph: Ceph, agent: AgentProcess, pools: dict[str, str]) -> None:
    vol, pool = unique("held"), pools["volumes"]
    assert call(agent, ceph, "/ceph/volume/create", pool=pool, name=vol, size=4 * MiB)["success"]
    assert call(agent, ceph, "/ceph/snapshot/create", pool=pool, name=vol, snapshot="s")["success"]
    with ceph.admin.open_ioctx(pool) as io, rbd.Image(io, vol) as held:  # a read-write open watches
        held.write(b"x", 0)
        assert call(agent, ceph, "/ceph/volume/info", pool=pool, name=vol)["watchers"] == 1
        r = call(agent, ceph, "/ceph/volume/delete", pool=pool, name=vol, purgeSnapshots=True)
        assert error_code(r) == "IN_USE"
        r = call(agent, ceph, "/ceph/snapshot/rollback", pool=pool, name=vol, snapshot="s")
        assert error_code(r) == "IN_USE"
        assert vol in ceph.images(pool)
    r = call(agent, ceph, "/ceph/volume/delete", pool=pool, name=vol, purgeSnapshots=True)
    assert r["success"], r
    assert vol not in ceph.images(pool)


def test_resize(ceph: Ceph, agent: AgentProcess, pools: dict[str, str]) -> None:
    vol, pool = unique("grow"), pools["volumes"]
    assert call(agent, ceph, "/ceph/volume/create", pool=pool, name=vol, size=4 * MiB)["success"]
    assert call(agent, ceph, "/ceph/volume/resize", pool=pool, name=vol, size=8 * MiB)["size"] == 8 * MiB
    r = call(agent, ceph, "/ceph/volume/resize", pool=pool, name=vol, size=2 * MiB)
    assert error_code(r) == "INVALID_REQUEST"
    assert call(agent, ceph, "/ceph/volume/resize", pool=pool, name=vol, size=2 * MiB,
                allowShrink=True)["size"] == 2 * MiB
    assert error_code(call(agent, ceph, "/ceph/volume/create", pool=pool, name=vol, size=MiB)) == "IMAGE_EXISTS"
    assert call(agent, ceph, "/ceph/volume/create", pool=pool, name=vol, size=MiB, skipIfExisting=True)["success"]


@pytest.mark.parametrize(("field", "value"), [
    ("pool", "volumes/../x"), ("pool", "a@b"), ("name", "img@snap"), ("name", "a/b"),
    ("name", ".hidden"), ("size", -1), ("size", 0), ("features", ["journaling"]),
])
def test_bad_input_is_a_400_naming_the_field(ceph: Ceph, agent: AgentProcess, pools: dict[str, str],
                                             field: str, value: Any) -> None:
    name = unique("bad")
    body = {"cluster": ceph.cluster(), "pool": pools["volumes"], "name": name, "size": MiB, field: value}
    before = ceph.images(pools["volumes"])
    r = agent.post("/ceph/volume/create", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "INVALID_REQUEST"
    assert [f["field"].split(".")[0] for f in r.json()["error"]["details"]["fields"]] == [field]
    assert ceph.images(pools["volumes"]) == before


def test_bad_snapshot_and_cluster_fields(ceph: Ceph, agent: AgentProcess, pools: dict[str, str]) -> None:
    base = {"pool": pools["volumes"], "name": "x"}
    r = agent.post("/ceph/snapshot/create", {"cluster": ceph.cluster(), **base, "snapshot": "a@b"})
    assert r.status_code == 400 and r.json()["error"]["details"]["fields"][0]["field"] == "snapshot"
    r = agent.post("/ceph/volume/info", {"cluster": {"monitors": [], "user": "agent", "keyring": "/x"}, **base})
    assert r.status_code == 400 and r.json()["error"]["details"]["fields"][0]["field"] == "cluster.monitors"
    r = agent.post("/ceph/volume/info", {"cluster": {**ceph.cluster(), "keyRef": "k"}, **base})
    assert r.status_code == 400 and "exactly one" in r.text
    r = agent.post("/ceph/volume/create-from-image", {"cluster": ceph.cluster(), **base, "srcPool": "p/q",
                                                      "srcName": "i"})
    assert r.status_code == 400 and r.json()["error"]["details"]["fields"][0]["field"] == "srcPool"


def test_unknown_pool_and_image(ceph: Ceph, agent: AgentProcess, pools: dict[str, str]) -> None:
    ghost = unique("it-nopool")
    r = call(agent, ceph, "/ceph/volume/create", pool=ghost, name="v", size=MiB)
    assert error_code(r) == "POOL_NOT_FOUND" and r["error"]["details"]["pool"] == ghost
    assert not ceph.pool_exists(ghost)
    r = call(agent, ceph, "/ceph/volume/info", pool=pools["volumes"], name=unique("none"))
    assert error_code(r) == "IMAGE_NOT_FOUND"
    r = call(agent, ceph, "/ceph/volume/create-from-image", pool=pools["volumes"], name=unique("c"),
             srcPool=pools["images"], srcName=unique("none"))
    assert error_code(r) == "IMAGE_NOT_FOUND"
    r = call(agent, ceph, "/ceph/snapshot/protect", pool=pools["volumes"], name=unique("none"), snapshot="s")
    assert error_code(r) == "IMAGE_NOT_FOUND"


def test_flatten_cancel_keeps_the_parent_link(ceph: Ceph, agent: AgentProcess, receiver: CallbackReceiver,
                                              pools: dict[str, str]) -> None:
    base, vol = unique("bigbase"), unique("bigclone")
    assert call(agent, ceph, "/ceph/volume/create", pool=pools["images"], name=base, size=256 * MiB)["success"]
    block = bytes(range(256)) * (4 * MiB // 256)
    for off in range(0, 256 * MiB, 4 * MiB):  # every object has data to copy up
        ceph.write(pools["images"], base, off, block)
    assert call(agent, ceph, "/ceph/volume/create-from-image", pool=pools["volumes"], name=vol,
                srcPool=pools["images"], srcName=base)["success"]
    task = unique("flatten")
    r = agent.post("/ceph/volume/flatten", {"cluster": ceph.cluster(), "pool": pools["volumes"], "name": vol},
                   taskuuid=task, callbackurl=receiver.url + "/cb")
    assert r.status_code == 202
    assert agent.client.post(f"/tasks/{task}/cancel").status_code == 200
    assert receiver.wait_reply(task, 60)["error"]["code"] == "CANCELLED"
    info = call(agent, ceph, "/ceph/volume/info", pool=pools["volumes"], name=vol)
    assert info["parent"] == {"pool": pools["images"], "name": base, "snapshot": "kvmcloud-base"}
    assert ceph.read(pools["volumes"], vol, 100 * MiB, 256) == block[:256]
    done = call(agent, ceph, "/ceph/volume/flatten", pool=pools["volumes"], name=vol)
    assert done["success"] and done["parent"] is None
    assert call(agent, ceph, "/ceph/volume/delete", pool=pools["volumes"], name=vol)["success"]
    assert call(agent, ceph, "/ceph/image/delete", pool=pools["images"], name=base)["success"]
