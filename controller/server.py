"""``kvmcloud serve``: the controller's WSGI app and its gunicorn server.

One process with many threads (gunicorn ``gthread``, one worker): the
dispatcher's pending calls, the per-resource queues and the job waiters live
in that process, so callbacks resolve in memory.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from flask import Flask, Response
from gunicorn.app.base import BaseApplication
from werkzeug.exceptions import HTTPException

from controller import cascade
from controller.api import routes
from controller.api.callbacks import CallbackRoute
from controller.api.http import error_response, json_response
from controller.api.openapi import build_openapi
from controller.backup_schedule import BackupJobs
from controller.core import Controller
from controller.dispatch.transport import Transport
from controller.errors import for_http_status
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
                                   backup_jobs=BACKUP_JOBS)
    app = Flask("kvmcloud")
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024
    app.extensions["kvmcloud"] = ctl
    app.register_blueprint(routes.make_blueprint(ctl, CATALOGUE))
    # routing's own errors (no route, wrong method) and Flask's (body too large) as API errors
    app.register_error_handler(HTTPException, lambda e: error_response(
        for_http_status(e.code or 500, e.description or e.name)))
    app.wsgi_app = CallbackRoute(app.wsgi_app, ctl)  # type: ignore[method-assign]
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


def serve(listen: str, db_url: str, **settings: Any) -> None:
    """Run the controller under gunicorn until stopped."""
    cfg = Settings(listen=listen, db_url=db_url, **settings)

    class _App(BaseApplication):
        def load_config(self) -> None:
            for k, v in {"bind": cfg.listen, "workers": 1, "worker_class": "gthread",
                         "threads": cfg.threads, "timeout": 120, "keepalive": 30,
                         "backlog": 4096, "accesslog": None, "errorlog": "-",
                         "loglevel": "warning", "proc_name": "kvmcloud-controller"}.items():
                self.cfg.set(k, v)

        def load(self) -> Flask:
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

    _App().run()
