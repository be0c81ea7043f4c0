"""``kvmcloud simulator``: run simulated agents and steer them (faults, crashes)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import click
import httpx

from controller.cli.output import show_json, show_table

SIZE = re.compile(r"^(\d+)([KMGTP]i?B?)?$", re.IGNORECASE)
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}


class ByteSize(click.ParamType):
    """``4096``, ``64G``, ``2TiB`` → bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        m = SIZE.match(str(value).strip())
        if not m:
            self.fail(f"{value!r} is not a size like 4096, 64G or 2TiB", param, ctx)
        return int(m.group(1)) * UNITS[(m.group(2) or "")[:1].upper()]


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter("HOST:PORT", param_hint="--listen")
    return host or "127.0.0.1", int(port)


@click.group("simulator")
def simulator() -> None:
    """Simulated KVM hosts and storages that speak the agent protocol over HTTP."""


@simulator.command("serve")
@click.option("--listen", default="127.0.0.1:7070", show_default=True, help="HOST:PORT")
@click.option("--hosts", type=int, default=10, show_default=True, help="simulated KVM hosts")
@click.option("--primary-storages", type=int, default=1, show_default=True)
@click.option("--backup-storages", type=int, default=1, show_default=True)
@click.option("--ceph-storages", type=int, default=0, show_default=True)
@click.option("--token", envvar="KVMCLOUD_SIM_TOKEN", default="simulator-token",
              show_default=True, help="bearer token of every agent and of /_sim/")
@click.option("--host-cpu", type=int, default=1024, show_default=True, help="vCPUs per host")
@click.option("--host-memory", type=ByteSize(), default="4T", show_default=True)
@click.option("--storage-capacity", type=ByteSize(), default="1P", show_default=True)
@click.option("--controller-url", "controller_urls", multiple=True,
              help="URL prefix callbacks may go to (repeat); default: any")
@click.option("--events/--no-events", default=True, show_default=True,
              help="push out-of-band VM state changes to the events URL")
@click.option("--auto-create/--no-auto-create", default=True, show_default=True,
              help="create an unknown agent id on first use")
@click.option("--callback-concurrency", type=int, default=32, show_default=True)
@click.option("--agent-port", "agent_ports", type=int, multiple=True,
              help="also serve each agent at http://<its 127.x IP>:PORT/ (repeat: 7070, 7071)")
@click.option("--log-level", default="WARNING", show_default=True)
def serve(listen: str, hosts: int, primary_storages: int, backup_storages: int,
          ceph_storages: int, token: str, host_cpu: int, host_memory: int,
          storage_capacity: int, controller_urls: tuple[str, ...], events: bool,
          auto_create: bool, callback_concurrency: int, agent_ports: tuple[int, ...],
          log_level: str) -> None:
    """Serve simulated agents at http://HOST:PORT/agents/<id> until interrupted.

    Hosts are host-00001..., primary storages ps-00001..., backup storages
    bs-00001...; the control API is under /_sim/ (see docs/simulator.md).
    """
    # only `simulator serve` needs aiohttp and the agents' models
    from simulator import Capacity, SimulatorConfig  # noqa: PLC0415
    from simulator import serve as run  # noqa: PLC0415

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = _listen(listen)
    config = SimulatorConfig(
        token=token, hosts=hosts, primary_storages=primary_storages,
        backup_storages=backup_storages, ceph_storages=ceph_storages,
        capacity=Capacity(cpu=host_cpu, memory=host_memory, storage=storage_capacity),
        auto_create=auto_create, controller_urls=list(controller_urls), events=events,
        callback_concurrency=callback_concurrency, agent_ports=list(agent_ports),
    )
    click.echo(f"simulator: {hosts} hosts at http://{host}:{port}/agents/host-00001 ...", err=True)
    run(config, host=host, port=port)


def _control(ctx: click.Context) -> httpx.Client:
    obj = ctx.ensure_object(dict)
    return httpx.Client(base_url=obj["sim_url"].rstrip("/") + "/_sim",
                        headers={"Authorization": f"Bearer {obj['sim_token']}"}, timeout=30)


def _call(ctx: click.Context, method: str, path: str, body: Any = None) -> Any:
    try:
        r = _control(ctx).request(method, path, json=body)
    except httpx.HTTPError as e:
        raise click.ClickException(f"cannot reach the simulator: {e}") from None
    data = r.json()
    if r.status_code >= 400:
        err = data.get("error") or {}
        raise click.ClickException(f"{err.get('code')}: {err.get('message')}")
    return data


SIM_URL = click.option("--sim-url", envvar="KVMCLOUD_SIM_URL", default="http://127.0.0.1:7070",
                       show_default=True, help="the simulator's base URL")
SIM_TOKEN = click.option("--sim-token", envvar="KVMCLOUD_SIM_TOKEN", default="simulator-token",
                         show_default=True)


def _remember(ctx: click.Context, sim_url: str, sim_token: str) -> None:
    ctx.ensure_object(dict).update(sim_url=sim_url, sim_token=sim_token)


@simulator.command("agents")
@SIM_URL
@SIM_TOKEN
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def agents(ctx: click.Context, sim_url: str, sim_token: str, as_json: bool) -> None:
    """List the simulated agents."""
    _remember(ctx, sim_url, sim_token)
    data = _call(ctx, "GET", "/agents")
    if as_json:
        show_json(data)
    else:
        show_table(data, ["id", "kind", "ip", "hostUuid", "down", "commands", "domains"], "agents")


@simulator.command("fault")
@SIM_URL
@SIM_TOKEN
@click.option("--agent", default="*", show_default=True, help="agent id or *")
@click.option("--path", default="*", show_default=True, help="command path, prefix* or *")
@click.option("--action", required=True, type=click.Choice(
    ["fail", "delay", "drop-callback", "http-error", "hang", "disconnect"]))
@click.option("--code", default="SIMULATED_FAILURE", show_default=True)
@click.option("--message", default="failure injected by the simulator")
@click.option("--seconds", type=float, default=0.0, help="for delay")
@click.option("--status", type=int, default=503, help="for http-error")
@click.option("--times", type=int, help="fire at most this often")
@click.option("--match", help='JSON: only bodies with these fields, e.g. {"vmUuid": "..."}')
@click.pass_context
def fault(ctx: click.Context, sim_url: str, sim_token: str, match: str | None,
          **rule: Any) -> None:
    """Inject a fault (see docs/simulator.md for what each action does)."""
    _remember(ctx, sim_url, sim_token)
    if match:
        try:
            rule["match"] = json.loads(match)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--match") from None
    show_json(_call(ctx, "POST", "/faults", {k: v for k, v in rule.items() if v is not None}))


@simulator.command("clear-faults")
@SIM_URL
@SIM_TOKEN
@click.pass_context
def clear_faults(ctx: click.Context, sim_url: str, sim_token: str) -> None:
    """Remove every injected fault."""
    _remember(ctx, sim_url, sim_token)
    _call(ctx, "DELETE", "/faults")


@simulator.command("stats")
@SIM_URL
@SIM_TOKEN
@click.pass_context
def stats(ctx: click.Context, sim_url: str, sim_token: str) -> None:
    """Commands served, callbacks sent and failed, domains running."""
    _remember(ctx, sim_url, sim_token)
    show_json(_call(ctx, "GET", "/stats"))
