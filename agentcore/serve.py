"""The agent command line: ``<agent> serve --listen HOST:PORT --config FILE``.

gunicorn serves the app with one worker and many threads: the journal, the
locks and the executor live in that one process. Requests return at once and
the work runs in the runtime's own bounded executor.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from agentcore.config import AgentConfig
from agentcore.logs import setup_logging
from agentcore.plugin import Plugin
from agentcore.runtime import AgentRuntime
from agentcore.server import create_app

PluginFactory = Callable[[Any], list[Plugin]]
log = logging.getLogger(__name__)


def build(name: str, config: AgentConfig, plugins: list[Plugin]) -> tuple[AgentRuntime, Flask]:
    """A started runtime and its WSGI app (also used in-process by tests)."""
    runtime = AgentRuntime(name, config, plugins)
    runtime.start()
    return runtime, create_app(runtime)


class _Gunicorn(BaseApplication):
    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._factory()


def gunicorn_options(config: AgentConfig) -> dict[str, Any]:
    """The gunicorn settings every agent (and the bare baseline of the benchmark) uses."""
    options: dict[str, Any] = {
        "bind": config.listen,
        "workers": 1,
        "worker_class": "gthread",
        "threads": config.http_threads,
        "timeout": 120,
        "graceful_timeout": 10,
        "keepalive": 30,
        "backlog": 2048,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "kvmcloud-agent",
    }
    if config.tls_cert and config.tls_key:
        options["certfile"] = str(config.tls_cert)
        options["keyfile"] = str(config.tls_key)
    return options


def serve(name: str, config: AgentConfig, make_plugins: PluginFactory) -> None:
    """Run the agent under gunicorn until it is stopped."""
    holder: dict[str, AgentRuntime] = {}

    def factory() -> Flask:
        setup_logging(config.log_level, config.log_file)
        runtime, app = build(name, config, make_plugins(config))
        holder["runtime"] = runtime
        return app

    def worker_exit(server: Any, worker: Any) -> None:
        runtime = holder.get("runtime")
        if runtime is not None:
            runtime.stop()

    options = gunicorn_options(config)
    options["worker_exit"] = worker_exit
    options["proc_name"] = f"kvmcloud-{name}"
    _Gunicorn(factory, options).run()


def agent_main(
    name: str,
    config_cls: type[AgentConfig],
    make_plugins: PluginFactory,
    argv: Sequence[str] | None = None,
) -> int:
    """Entry point of an agent's console script."""
    parser = argparse.ArgumentParser(prog=name, description=f"kvmcloud {name} agent")
    sub = parser.add_subparsers(dest="action", required=True)
    p_serve = sub.add_parser("serve", help="serve the agent's HTTP API")
    p_serve.add_argument("--config", required=True, help="agent config file (TOML)")
    p_serve.add_argument("--listen", help="HOST:PORT, overrides the config file")
    p_check = sub.add_parser("check-config", help="validate a config file and print it")
    p_check.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    overrides = {"listen": args.listen} if getattr(args, "listen", None) else {}
    try:
        config = config_cls.load(args.config, **overrides)
    except (OSError, ValueError) as e:
        print(f"{name}: invalid config {args.config}: {e}", file=sys.stderr)
        return 2
    if args.action == "check-config":
        print(json.dumps(config.model_dump(mode="json"), indent=2))
        return 0
    serve(name, config, make_plugins)
    return 0
