"""The baseline of the agent protocol benchmark: a bare Flask endpoint served by
the same gunicorn settings as an agent (``python -m tests.bench.bare_app HOST:PORT``)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from flask import Flask, Response

from agentcore.config import AgentConfig
from agentcore.serve import _Gunicorn, gunicorn_options


def app() -> Flask:
    a = Flask("bare")

    @a.post("/noop")
    def noop() -> Response:
        return Response(json.dumps({"success": True, "error": None}), mimetype="application/json")

    @a.get("/healthz")
    def healthz() -> Response:
        return Response("{}", mimetype="application/json")

    return a


def main() -> None:
    config = AgentConfig(listen=sys.argv[1], token="bare-baseline-token-0000",  # type: ignore[arg-type]
                         state_dir=Path(tempfile.gettempdir()))
    _Gunicorn(app, gunicorn_options(config)).run()


if __name__ == "__main__":
    main()
