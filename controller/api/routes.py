"""The ``/v1`` routes: CRUD for every resource, actions, jobs, agent events.

Every route but the agents' needs an API token (:mod:`controller.api.auth`),
and every mutating call leaves an audit row (:mod:`controller.api.audit`).
Agents authenticate with their own tokens, each bound to its agent.

What a create, a PATCH, an action or a delete does is read from the
services' :class:`~controller.declarations.Catalogue`; the handlers parse,
check and answer, and leave the writing to the services.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, g, request

from controller import cascade
from controller.api import audit
from controller.api import schemas as sc
from controller.api.accounts import account_routes, listing
from controller.api.auth import ApiAuth, NoCredentials, bearer
from controller.api.cluster import cluster_routes
from controller.api.http import error_response, flag, json_response, parse_body, wait_timeout
from controller.api.secgroups import secgroup_routes
from controller.core import Controller
from controller.db.jobs import FINAL_STATES, Job
from controller.db.models import RESOURCES, Tag
from controller.declarations import Catalogue
from controller.errors import ApiError, BadRequest, Forbidden, NotFound, Unauthorized
from controller.jobs import job_dict
from controller.query import parse, run
from controller.services import resources as res
from controller.services.common import get_or_404, to_dict

log = logging.getLogger(__name__)

PUBLIC_PATHS = ("/v1/openapi.json",)
#: the routes agents call: they check agent tokens themselves, and take no API token
AGENT_ENDPOINTS = ("v1.agent_event",)


def _bearer() -> str:
    return bearer(request.headers.get("Authorization", ""))


def job_answer(ctl: Controller, job: Job, resource: dict[str, Any] | None = None) -> Response:
    """``202 {"job"}``, or with ``?wait=1`` the finished job (200)."""
    if flag("wait"):
        job = ctl.jobs.wait(job.uuid, wait_timeout()) or job
    body: dict[str, Any] = {"job": job_dict(job)}
    if resource is not None:
        body["resource"] = resource
    return json_response(body, 200 if job.state in FINAL_STATES else 202)


def make_blueprint(ctl: Controller, catalogue: Catalogue) -> Blueprint:
    """The ``/v1`` routes of ``ctl``, doing what ``catalogue`` declares."""
    bp = Blueprint("v1", __name__, url_prefix="/v1")

    try:
        auth = ApiAuth(ctl.settings, ctl.db)
    except NoCredentials:
        ctl.close()
        raise

    @bp.before_request
    def authenticate() -> Response | None:
        path = request.path
        if path in PUBLIC_PATHS or request.endpoint in AGENT_ENDPOINTS:
            return None
        who = auth.identify(_bearer())
        if who is None:
            log.info("refused %s %s from %s: no valid API token", request.method, path,
                     request.remote_addr)
            return error_response(Unauthorized())
        g.identity = who
        if not who.may(request.method, path):
            log.warning("refused %s %s to %s (role %s)", request.method, path, who.name, who.role)
            return error_response(Forbidden(f"role {who.role} may not {request.method} {path}",
                                            role=who.role))
        if flag("wait"):
            wait_timeout()  # a bad ?timeout= is refused before any work starts
        return None

    @bp.after_request
    def audit_call(response: Response) -> Response:
        who = g.get("identity")
        if who is not None:
            audit.record(ctl.db, who, request, response)
        return response

    @bp.errorhandler(ApiError)
    def api_error(e: ApiError) -> Response:
        return error_response(e)

    account_routes(bp, ctl, auth)
    _collection_routes(bp, ctl, catalogue)
    _action_routes(bp, ctl, catalogue)
    _job_routes(bp, ctl)
    cluster_routes(bp, ctl)
    secgroup_routes(bp, ctl)
    _agent_routes(bp, ctl)
    return bp


def _model(coll: str) -> Any:
    model = RESOURCES.get(coll)
    if model is None:
        raise NotFound(f"no such collection: {coll}")
    return model


def _update(ctl: Controller, catalogue: Catalogue, coll: str, uuid: str) -> dict[str, Any]:
    """PATCH: the fields the collection's update body allows; the resource as it is now."""
    model = _model(coll)
    declared = catalogue.updates.get(coll)
    body = parse_body(declared.body if declared else sc.UpdateBody)
    values = body.model_dump(exclude_unset=True)
    out = res.update_row(ctl, model, uuid, values)
    if values and declared is not None and declared.after is not None:
        declared.after(ctl, uuid, values)
    return out


def _collection_routes(bp: Blueprint, ctl: Controller, catalogue: Catalogue) -> None:
    # -- collections ------------------------------------------------------

    @bp.post("/<coll>")
    def create(coll: str) -> Response:
        declared = catalogue.creates.get(coll)
        if declared is None:
            _model(coll)
            raise NotFound(f"{coll} cannot be created with POST /v1/{coll}")
        job, resource = declared.fn(ctl, parse_body(declared.body))
        if job is None:  # nothing to reach: only a record was written
            return json_response(resource, 201)
        return job_answer(ctl, job, resource)

    @bp.get("/<coll>")
    def list_(coll: str) -> Response:
        return listing(ctl, Tag if coll == "tags" else _model(coll))

    @bp.get("/<coll>/<uuid>")
    def get(coll: str, uuid: str) -> Response:
        model = Tag if coll == "tags" else _model(coll)
        with ctl.db.read() as s:
            return json_response(to_dict(get_or_404(s, model, uuid)))

    @bp.patch("/<coll>/<uuid>")
    def patch(coll: str, uuid: str) -> Response:
        return json_response(_update(ctl, catalogue, coll, uuid))

    @bp.delete("/<coll>/<uuid>")
    def delete(coll: str, uuid: str) -> Response:
        if coll == "tags":
            res.delete_tag(ctl, uuid)
            return json_response({}, 204)
        model = _model(coll)
        with ctl.db.read() as s:
            get_or_404(s, model, uuid)
            affected = cascade.plan(s, coll, uuid)
        if not flag("confirm"):
            return json_response({"deleted": False, "affected": affected,
                                  "message": "repeat with ?confirm=1 to delete all of these"})
        job = cascade.submit_delete(ctl, coll, uuid, catalogue.cascade)
        return job_answer(ctl, job, {"affected": affected})


def _action_routes(bp: Blueprint, ctl: Controller, catalogue: Catalogue) -> None:
    # -- actions ------------------------------------------------------------

    @bp.post("/<coll>/<uuid>/actions/<verb>")
    def action(coll: str, uuid: str, verb: str) -> Response:
        declared = catalogue.actions.get((coll, verb))
        if declared is None:
            _model(coll)
            raise NotFound(f"no action {verb!r} on {coll}")
        body = parse_body(declared.body)
        with ctl.db.read() as s:
            get_or_404(s, _model(coll), uuid)
        return job_answer(ctl, declared.fn(ctl, uuid, body))


def _job_routes(bp: Blueprint, ctl: Controller) -> None:

    @bp.get("/jobs/<job_uuid>")
    def get_job(job_uuid: str) -> Response:
        if flag("wait"):
            job = ctl.jobs.wait(job_uuid, wait_timeout())
        else:
            job = ctl.jobs.get(job_uuid)
        if job is None:
            raise NotFound(f"no job {job_uuid}")
        return json_response({"job": job_dict(job)})

    @bp.get("/jobs")
    def list_jobs() -> Response:
        q = parse(request.args)
        with ctl.db.read() as s:
            rows, total = run(s, Job, q)
            items = rows if q.fields else [job_dict(r) for r in rows]
        return json_response({"items": items, **({"total": total} if total is not None else {})})

    @bp.post("/jobs/<job_uuid>/cancel")
    def cancel_job(job_uuid: str) -> Response:
        job = ctl.jobs.cancel(job_uuid)
        if job is None:
            raise NotFound(f"no job {job_uuid}")
        return json_response({"job": job_dict(job)})



def _agent_routes(bp: Blueprint, ctl: Controller) -> None:
    # POST /v1/agent-callbacks is answered in front of Flask: controller/api/callbacks.py

    @bp.post("/agent-events/<host_uuid>")
    def agent_event(host_uuid: str) -> Response:
        """An event of a host's agent: only that host's agents' tokens are taken."""
        tokens, presented = ctl.agent_tokens, _bearer()
        if not tokens.accepts(presented):
            return error_response(Unauthorized())
        if not tokens.accepts_for(presented, ctl.tracker.host_agents(host_uuid)):
            log.warning("refused an event for host %s from agent %s: not one of that host's",
                        host_uuid, tokens.owner(presented))
            return error_response(Forbidden("this token is not one of that host's agents'"))
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return error_response(BadRequest("a JSON body is needed", field="body"))
        ctl.tracker.on_event(host_uuid, body)
        return json_response({"accepted": True})
