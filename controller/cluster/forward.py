"""WSGI middleware handing a request to the controller node that owns its work.

On several nodes any node takes any request. Work on a resource runs on the
node owning the resource's UUID in the ring (its queue serialises the
resource's operations); work of a job runs on the node that started it (its
waiters, pending agent calls and cancel live in that process). So:

- ``POST``/``PATCH``/``DELETE /v1/<coll>/<uuid>...`` go to the ring owner of ``uuid``,
  unless a live node still has an unfinished job on that resource: then to that node,
  so the resource's work stays in one queue while the ring changes (a node joined,
  or the resource was created by the node the request came to);
- ``POST /v1/agent-events/<host>`` goes to the ring owner of the host (its tracker);
- ``GET /v1/jobs/<job>`` and ``POST /v1/jobs/<job>/cancel`` go to the node running the
  job, and so does an agent callback (``taskuuid`` is ``<job>.<n>``).

Everything else (reads, creates, the cluster view) is served where it lands,
and so is a ``GET`` whose node does not answer (the database's row will do);
a change whose owner does not answer is refused ``OWNER_UNREACHABLE`` (503):
it may be retried once the owner's lease ran out and the ring moved on. A
forwarded request carries :data:`FORWARDED` and is never forwarded again, so
two nodes whose rings briefly disagree cannot bounce a request between them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

import httpx
from sqlalchemy import select

from controller.cluster.membership import UNFINISHED, Membership
from controller.db.base import Database
from controller.db.jobs import Job
from controller.errors import OwnerUnreachable

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
FORWARDED = "X-Kvmcloud-Forwarded-By"
_RESOURCE = re.compile(r"^/v1/(?P<coll>[a-z0-9-]+)/(?P<uuid>[0-9a-f]{32})(?:/.*)?$")
_JOB = re.compile(r"^/v1/jobs/(?P<job>[0-9a-f]{32})(?:/cancel)?$")
_EVENT = re.compile(r"^/v1/agent-events/(?P<host>[0-9a-f]{32})$")
CALLBACK_PATH = "/v1/agent-callbacks"
_SKIP = {"HTTP_HOST", "HTTP_CONTENT_LENGTH", "HTTP_CONNECTION", "HTTP_TRANSFER_ENCODING"}
#: a forwarded ``?wait=1`` may wait as long as the job runs
READ_TIMEOUT = 3600.0


class ForwardToOwner:
    """Serves a request here, or relays it to the node owning its work and relays the answer."""

    def __init__(self, app: WsgiApp, membership: Membership, db: Database,
                 mine: Callable[[str], bool], client: httpx.Client | None = None) -> None:
        """``mine(task_uuid)``: whether this process sent that agent task (its callback is here)."""
        self.app = app
        self.membership = membership
        self.db = db
        self._mine = mine
        self.client = client or httpx.Client(timeout=httpx.Timeout(10.0, read=READ_TIMEOUT))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = None if environ.get("HTTP_" + FORWARDED.upper().replace("-", "_")) \
            else self._target(environ)
        if target is None:
            return self.app(environ, start_response)
        return self._relay(target, environ, start_response)

    def _target(self, environ: dict[str, Any]) -> str | None:
        """The URL of the node to hand the request to; None to serve it here."""
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        node: str | None = None
        if path == CALLBACK_PATH:
            task = environ.get("HTTP_TASKUUID", "")
            if task and not self._mine(task) and "." in task:
                node = self._job_node(task.split(".", 1)[0])
        elif m := _JOB.match(path):
            node = self._job_node(m["job"])
        elif m := _EVENT.match(path):
            node = self.membership.owner(m["host"])[0]
        elif method in ("POST", "PATCH", "DELETE") and (m := _RESOURCE.match(path)) \
                and m["coll"] != "jobs":
            node = self._busy_node(m["uuid"]) or self.membership.owner(m["uuid"])[0]
        if node is None or node == self.membership.node_id:
            return None
        return self.membership.urls.get(node)  # a node out of the ring: served here

    def _job_node(self, job_uuid: str) -> str | None:
        with self.db.read() as s:
            return s.scalar(select(Job.node_id).where(Job.uuid == job_uuid))

    def _busy_node(self, resource_uuid: str) -> str | None:
        """A live node with an unfinished job on the resource (None: none)."""
        with self.db.read() as s:
            nodes = set(s.scalars(select(Job.node_id).where(
                Job.resource_uuid == resource_uuid, Job.state.in_(UNFINISHED))))
        live = sorted(n for n in nodes if n in self.membership.urls)
        return live[0] if live else None

    def _relay(self, base: str, environ: dict[str, Any],
               start_response: StartResponse) -> Iterable[bytes]:
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_") and k not in _SKIP}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        headers[FORWARDED.lower()] = self.membership.node_id
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        url = base + environ.get("PATH_INFO", "")
        try:
            r = self.client.request(environ["REQUEST_METHOD"], url, headers=headers, content=body,
                                    params=environ.get("QUERY_STRING") or None)
        except httpx.TransportError as e:
            log.warning("could not forward %s %s to %s: %s", environ["REQUEST_METHOD"], url, base, e)
            if environ["REQUEST_METHOD"] == "GET":  # a read: the database's answer will do
                return self.app(environ, start_response)
            err = OwnerUnreachable(owner=base)
            data = json.dumps({"error": err.to_dict()}).encode()
            start_response(f"{err.http_status} {HTTPStatus(err.http_status).phrase}",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
            return [data]
        keep = [(k, v) for k, v in r.headers.items()
                if k.lower() in ("content-type", "location", "retry-after")]
        start_response(f"{r.status_code} {r.reason_phrase}",
                       [*keep, ("Content-Length", str(len(r.content)))])
        return [r.content]

    def close(self) -> None:
        self.client.close()
