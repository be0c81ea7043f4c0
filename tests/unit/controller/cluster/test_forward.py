"""Which node serves a request: here, the resource's owner, or the node running the job."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from controller.cluster.forward import FORWARDED, ForwardToOwner
from controller.cluster.membership import Membership
from controller.cluster.ring import HashRing
from controller.db.base import Database, new_uuid
from controller.db.jobs import Job
from controller.jobs import JobManager

RING = HashRing(["a", "b"])


def owned_by(node: str) -> str:
    return next(u for u in iter(new_uuid, None) if RING.owner(u) == node)


class Setup:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.here = Membership(db, "a", "http://a")
        Membership(db, "b", "http://b").join()
        self.here.join()
        self.relayed: list[httpx.Request] = []
        self.b_down = False
        self.mine: set[str] = set()

        def peer(request: httpx.Request) -> httpx.Response:
            if self.b_down:
                raise httpx.ConnectError("refused", request=request)
            self.relayed.append(request)
            return httpx.Response(202, json={"servedBy": "b"})

        self.mw = ForwardToOwner(self.app, self.here, db, self.mine.__contains__,
                                 httpx.Client(transport=httpx.MockTransport(peer)))

    @staticmethod
    def app(_environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"servedBy": "a"}']

    def request(self, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[str, Any]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "wait=1",
            "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
            "wsgi.input": io.BytesIO(body), "HTTP_AUTHORIZATION": "Bearer t",
            **{"HTTP_" + k.upper(): v for k, v in headers.items()}}
        status: list[str] = []
        out = b"".join(self.mw(environ, lambda s, _h: status.append(s)))
        return status[0], json.loads(out)

    def job(self, node: str, resource: str, state: str = "queued") -> str:
        jobs = JobManager(self.db, None, None, node_id=node)  # type: ignore[arg-type]
        job = self.db.transaction(lambda s: jobs.prepare(s, "stop-vm", "vms", resource))
        self.db.transaction(lambda s: s.execute(update(Job).where(Job.uuid == job.uuid).values(state=state)))
        return job.uuid


@pytest.fixture
def cl(db: Database) -> Setup:
    return Setup(db)


def test_a_change_on_a_peers_resource_is_relayed_to_it(cl: Setup) -> None:
    vm = owned_by("b")
    status, body = cl.request("POST", f"/v1/vms/{vm}/actions/stop", b"{}")
    assert (status, body) == ("202 Accepted", {"servedBy": "b"})
    sent = cl.relayed[0]
    assert str(sent.url) == f"http://b/v1/vms/{vm}/actions/stop?wait=1"
    assert sent.headers["authorization"] == "Bearer t" and sent.headers[FORWARDED] == "a"
    assert sent.content == b"{}"


def test_reads_own_resources_and_forwarded_requests_are_served_here(cl: Setup) -> None:
    theirs, mine = owned_by("b"), owned_by("a")
    assert cl.request("GET", f"/v1/vms/{theirs}")[1] == {"servedBy": "a"}
    assert cl.request("POST", f"/v1/vms/{mine}/actions/stop")[1] == {"servedBy": "a"}
    assert cl.request("POST", f"/v1/vms/{theirs}/actions/stop",
                      **{FORWARDED.upper().replace("-", "_"): "b"})[1] == {"servedBy": "a"}
    assert cl.relayed == []


def test_a_resource_with_a_job_unfinished_here_stays_here(cl: Setup) -> None:
    vm = owned_by("b")
    cl.job("a", vm)  # e.g. created here: its create job still runs
    assert cl.request("DELETE", f"/v1/vms/{vm}")[1] == {"servedBy": "a"}
    mine = owned_by("a")
    cl.job("b", mine, "succeeded")  # a finished job ties nothing
    assert cl.request("DELETE", f"/v1/vms/{mine}")[1] == {"servedBy": "a"}


def test_job_calls_and_agent_callbacks_go_to_the_node_running_the_job(cl: Setup) -> None:
    theirs, ours = cl.job("b", owned_by("a")), cl.job("a", owned_by("b"))
    assert cl.request("GET", f"/v1/jobs/{theirs}")[1] == {"servedBy": "b"}
    assert cl.request("POST", f"/v1/jobs/{theirs}/cancel")[1] == {"servedBy": "b"}
    assert cl.request("GET", f"/v1/jobs/{ours}")[1] == {"servedBy": "a"}
    assert cl.request("POST", "/v1/agent-callbacks", b"{}", taskuuid=f"{theirs}.1")[1] == {"servedBy": "b"}
    cl.mine.add(f"{ours}.1")
    assert cl.request("POST", "/v1/agent-callbacks", b"{}", taskuuid=f"{ours}.1")[1] == {"servedBy": "a"}
    host = owned_by("b")
    assert cl.request("POST", f"/v1/agent-events/{host}", b"{}")[1] == {"servedBy": "b"}


def test_an_unreachable_owner_refuses_changes_but_not_reads(cl: Setup) -> None:
    cl.b_down = True
    status, body = cl.request("POST", f"/v1/vms/{owned_by('b')}/actions/stop", b"{}")
    assert status.startswith("503") and body["error"]["code"] == "OWNER_UNREACHABLE"
    job = cl.job("b", owned_by("b"))
    assert cl.request("GET", f"/v1/jobs/{job}")[1] == {"servedBy": "a"}
