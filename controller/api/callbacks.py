"""``POST /v1/agent-callbacks`` as plain WSGI, in front of the Flask app.

Every agent command ends in a callback, so this is the controller's busiest
route: it only checks the agent token, reads the JSON body and hands it to the
dispatcher, which Flask's routing, request and response objects would cost
more than. Every other request goes on to the Flask app unchanged.

The token must be an agent's (401 otherwise), and for a task still pending,
the token of the agent the task was sent to (403 otherwise, logged): one
agent cannot answer for another.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from controller.api.auth import bearer
from controller.core import CALLBACK_PATH, Controller
from controller.errors import ApiError, BadRequest, Forbidden, MethodNotAllowed, RequestTooLarge, Unauthorized

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
MAX_BODY = 4 * 1024 * 1024


class CallbackRoute:
    """WSGI middleware answering the agent-callback route itself."""

    def __init__(self, app: WsgiApp, ctl: Controller) -> None:
        self.app = app
        self.ctl = ctl

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != CALLBACK_PATH:
            return self.app(environ, start_response)
        try:
            status, body = 200, self._handle(environ)
        except ApiError as e:
            status, body = e.http_status, {"error": e.to_dict()}
        data = json.dumps(body).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [data]

    def _handle(self, environ: dict[str, Any]) -> dict[str, Any]:
        if environ.get("REQUEST_METHOD") != "POST":
            raise MethodNotAllowed("only POST is allowed here")
        tokens = self.ctl.agent_tokens
        presented = bearer(environ.get("HTTP_AUTHORIZATION", ""))
        if not tokens.accepts(presented):
            raise Unauthorized()
        task_uuid = environ.get("HTTP_TASKUUID", "")
        sent_to = self.ctl.dispatcher.agent_of(task_uuid) if task_uuid else None
        if sent_to is not None and not tokens.accepts_for(presented, (sent_to,)):
            log.warning("refused the callback of task %s (sent to %s) from agent %s", task_uuid,
                        sent_to, tokens.owner(presented))
            raise Forbidden("the task was sent to another agent")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            raise RequestTooLarge("the body is too large")
        stream = environ["wsgi.input"]
        raw = stream.read(length) if length else stream.read(MAX_BODY + 1)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if not task_uuid or not isinstance(body, dict):
            raise BadRequest("a taskuuid header and a JSON body are needed", field="taskuuid")
        kind = environ.get("HTTP_KIND", "reply")
        return {"accepted": self.ctl.dispatcher.on_callback(task_uuid, kind, body)}
