"""The ``kvmcloud`` command line.

``kvmcloud serve`` runs the controller, ``kvmcloud simulator serve`` runs
simulated agents, and one command group per API collection (generated from
the controller's resource table, see :mod:`controller.cli.catalog`) drives
the API: ``kvmcloud vm create --name web1 --image cirros --offering small
--l3 pub``, ``kvmcloud vm list -q state=Running``; ``kvmcloud account`` and
``kvmcloud audit`` manage accounts and read the audit log. The API URL and token come
from ``--url``/``--token``, ``KVMCLOUD_URL``/``KVMCLOUD_TOKEN``, or the
config file (``~/.config/kvmcloud/cli.toml``: ``url = ...``, ``token = ...``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from controller.cli.accounts import account_group, audit_group
from controller.cli.catalog import load_catalog
from controller.cli.client import ApiClient, Settings
from controller.cli.db import db_group
from controller.cli.fields import parse_sets
from controller.cli.resources import add_resource_groups
from controller.cli.simulator import simulator


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="KVMCLOUD_URL", help="controller API base URL [default: http://127.0.0.1:8080]")
@click.option("--token", envvar="KVMCLOUD_TOKEN", help="API bearer token")
@click.option("--config", "config_file", envvar="KVMCLOUD_CONFIG",
              help="CLI config file [default: ~/.config/kvmcloud/cli.toml]")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None, config_file: str | None) -> None:
    """kvmcloud: a private KVM cloud's controller and its API."""
    obj = ctx.ensure_object(dict)
    # built on first use, so `serve` and `--help` need no reachable API
    obj.setdefault("client", lambda: ApiClient(Settings.resolve(url, token, config_file)))


@cli.command("serve")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT of the API")
@click.option("--db", "db_url", envvar="KVMCLOUD_DB", default="sqlite:///kvmcloud.db",
              show_default=True, help="database URL (sqlite:///file, postgresql+psycopg://...)")
@click.option("--api-token", "api_tokens", multiple=True, envvar="KVMCLOUD_API_TOKENS",
              help="bootstrap admin bearer token (repeat, or comma-separated in the env var; "
              "prefer the env var: argv shows in ps)")
@click.option("--insecure-no-auth", is_flag=True,
              help="serve calls without a token as admin (development; loopback --listen only)")
@click.option("--agent-token", envvar="KVMCLOUD_AGENT_TOKEN", help="bearer token of the agents")
@click.option("--public-url", help="base URL agents call back (default: http://LISTEN)")
@click.option("--node-id", envvar="KVMCLOUD_NODE_ID",
              help="this node's id, to run several nodes on one PostgreSQL/MariaDB database "
              "(each needs its own --public-url or --listen that its peers reach)")
@click.option("--setting", "settings", multiple=True, metavar="KEY=VALUE",
              help="any other controller setting, e.g. ping_interval=10")
def serve(listen: str, db_url: str, api_tokens: tuple[str, ...], insecure_no_auth: bool,
          agent_token: str | None, public_url: str | None, node_id: str | None,
          settings: tuple[str, ...]) -> None:
    """Run the controller (granian) until stopped.

    It refuses to start without API credentials (a bootstrap token or an
    account in the database) unless --insecure-no-auth is given on a loopback
    address.
    """
    from controller.server import serve as run  # noqa: PLC0415 - only `serve` needs the server

    extra: dict[str, Any] = parse_sets(settings)
    if api_tokens:
        extra["api_tokens"] = [t for t in api_tokens for t in t.split(",") if t]
    if insecure_no_auth:
        extra["insecure_no_auth"] = True
    if agent_token:
        extra["agent_token"] = agent_token
    if public_url:
        extra["public_url"] = public_url
    if node_id:
        extra["node_id"] = node_id
    check_serve_settings(listen, db_url, extra)
    run(listen, db_url, **extra)


def check_serve_settings(listen: str, db_url: str, extra: dict[str, Any]) -> None:
    """Refuse, with a clear message, what the controller must not start with."""
    from pydantic import ValidationError  # noqa: PLC0415

    from controller.api.auth import count_accounts, startup_problem  # noqa: PLC0415
    from controller.db.base import Database  # noqa: PLC0415
    from controller.settings import Settings as ControllerSettings  # noqa: PLC0415

    try:
        cfg = ControllerSettings(listen=listen, db_url=db_url, **extra)
    except ValidationError as e:
        raise click.ClickException("; ".join(str(err["msg"]).removeprefix("Value error, ")
                                             for err in e.errors(include_url=False))) from None
    accounts = 0
    if not cfg.api_tokens and not cfg.insecure_no_auth:
        db = Database(cfg.db_url)
        try:
            accounts = count_accounts(db)
        finally:
            db.dispose()
    problem = startup_problem(cfg, accounts)
    if problem:
        raise click.ClickException(problem)


cli.add_command(simulator)
cli.add_command(db_group)
cli.add_command(account_group())
cli.add_command(audit_group())
add_resource_groups(cli, load_catalog())


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point (``kvmcloud``)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="kvmcloud",
                 standalone_mode=True)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
