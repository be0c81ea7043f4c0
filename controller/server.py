"""``kvmcloud serve``: the controller's WSGI app and its HTTP server, granian.

One process with many threads (one granian worker, its WSGI calls on a pool
of ``threads`` blocking threads): the dispatcher's pending calls, the
per-resource queues and the job waiters live in that process, so callbacks
resolve in memory.

Why granian and not gunicorn's ``gthread`` worker (which the agents keep): the
controller is CPU-bound in one Python process, and every VM created costs it
an API request, a job wait and the agents' callbacks. Under gthread a request
on a kept-alive connection went through gunicorn's Python poller, a thread
pool hand-off and its Python HTTP parser: a py-spy profile put that at about
a third of the controller's CPU. Granian parses HTTP and keeps connections in
Rust and only calls the WSGI app from Python. Measured side by side on this
machine, alternated: 10,000 simulated creates took 110 s and 9.2 ms of
controller CPU per VM under granian, 151 to 160 s and 11.9 to 12.0 ms under
gunicorn.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from functools import partial
from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from controller import cascade
from controller.api import routes
from controller.api.callbacks import CallbackRoute
from controller.api.http import error_response, json_response
from controller.api.openapi import build_openapi
from controller.backup_schedule import BackupJobs
from controller.cluster.forward import ForwardToOwner
from controller.core import Controller
from controller.dispatch.transport import Transport
from controller.errors import for_http_status
from controller.ha import restart
from controller.services import hosts, policies
from controller.services.catalogue import CATALOGUE
from controller.settings import Settings

log = logging.getLogger(__name__)
#: seconds a thread may hold the GIL while another waits for it (Python's default: 0.005)
SWITCH_INTERVAL = 0.0005
#: the backup policies' scheduler submits the VM backup action, and prunes by cascade delete
BACKUP_JOBS = BackupJobs(
    backup=policies.scheduled_backup,
    delete=lambda ctl, uuid: cascade.submit_delete(ctl, "vm-backups", uuid, CATALOGUE.cascade))


def create_app(settings: Settings, transport: Transport | None = None,
               controller: Controller | None = None) -> Flask:
    """The controller's Flask app; ``app.extensions["kvmcloud"]`` is the :class:`Controller`."""
    ctl = controller or Controller(settings, transport, connect_host=hosts.connect,
                                   backup_jobs=BACKUP_JOBS, host_dead=restart.host_dead)
    app = Flask("kvmcloud")
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024
    app.extensions["kvmcloud"] = ctl
    app.register_blueprint(routes.make_blueprint(ctl, CATALOGUE))
    # routing's own errors (no route, wrong method) and Flask's (body too large) as API errors
    app.register_error_handler(HTTPException, lambda e: error_response(
        for_http_status(e.code or 500, e.description or e.name)))
    app.wsgi_app = CallbackRoute(app.wsgi_app, ctl)  # type: ignore[method-assign]
    if ctl.membership is not None:  # several nodes: hand work to the node owning it
        app.wsgi_app = ForwardToOwner(  # type: ignore[method-assign]
            app.wsgi_app, ctl.membership, ctl.db,
            lambda task: ctl.dispatcher.agent_of(task) is not None)
    # tags are listed as a collection, but their create was never in the document
    creates = {c: m for c, m in CATALOGUE.create_bodies().items() if c != "tags"}
    doc = build_openapi(creates, CATALOGUE.action_bodies(),
                        [*sorted(set(creates) | {"vm-nics", "tags"})])
    doc_text = json.dumps(doc)

    @app.get("/v1/openapi.json")
    def openapi() -> Response:
        return Response(doc_text, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok", "pendingCalls": ctl.dispatcher.pending()})

    ctl.start()
    return app


def _load(_target: str, cfg: Settings) -> Flask:
    """The app, built in granian's worker process (its ``target_loader``)."""
    # many threads each hold the GIL briefly between socket and SQLite calls; at the
    # default 5 ms switch interval one waiting for it stalls the write lock's holder
    # and its callers behind a busy thread (2,000 simulated creates: 37 s at 5 ms, 25-29 s at 0.5)
    sys.setswitchinterval(SWITCH_INTERVAL)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: several lines per VM created
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    return create_app(cfg)


def serve(listen: str, db_url: str, **settings: Any) -> None:
    """Run the controller under granian until stopped (SIGINT or SIGTERM)."""
    from granian import Granian  # noqa: PLC0415 - only `serve` needs the server
    from granian.constants import Interfaces  # noqa: PLC0415
    from granian.log import LogLevels  # noqa: PLC0415

    cfg = Settings(listen=listen, db_url=db_url, **settings)
    host, _, port = cfg.listen.rpartition(":")
    # granian binds an IP address only: a name (localhost) binds its first address, as gunicorn did
    address = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)[0][4][0]
    server = Granian("controller.server", address=str(address), port=int(port),
                     interface=Interfaces.WSGI, workers=1, blocking_threads=cfg.threads,
                     backlog=4096, log_access=False, log_level=LogLevels.warning)
    server.serve(target_loader=partial(_load, cfg=cfg))
