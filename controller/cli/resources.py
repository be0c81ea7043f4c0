"""One command group per API collection, generated from the resource table.

``kvmcloud <resource> list|get|create|update|delete`` and one command per
registered action (``kvmcloud vm start web1``). Operations that answer with a
job follow it with a live progress bar until it ends (``--no-wait`` returns
the job at once); ``--json`` prints the raw answer.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from controller.cli.catalog import COMMAND_ALIASES, ResourceSpec
from controller.cli.client import ApiClient
from controller.cli.fields import FieldOption, build_body, model_options, parse_sets
from controller.cli.output import job_progress, show_item, show_json, show_table

JSON = click.option("--json", "as_json", is_flag=True, help="print the raw JSON answer")
SET = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                   help="a body field by its wire name (value parsed as JSON if it is JSON)")
NO_WAIT = click.option("--no-wait", is_flag=True, help="return the job at once, do not follow it")


def client_of(ctx: click.Context) -> ApiClient:
    obj = ctx.find_object(dict)
    assert obj is not None and "client" in obj, "the root command sets up the client"
    factory = obj["client"]
    client: ApiClient = factory() if callable(factory) else factory
    obj["client"] = client
    return client


def finish(client: ApiClient, answer: Any, as_json: bool, no_wait: bool) -> None:
    """Show an answer; follow its job when it has one."""
    job = answer.get("job") if isinstance(answer, dict) else None
    if job is not None and not no_wait:
        with job_progress(enabled=not as_json and sys.stderr.isatty()) as update:
            job = client.wait_job(job, update)
        answer = {**answer, "job": job}
        resource = answer.get("resource")
        if isinstance(resource, dict) and resource.get("uuid") and job.get("resourceType"):
            try:  # show the resource as the job left it
                answer["resource"] = client.get(f"/{job['resourceType']}/{resource['uuid']}")
            except click.ClickException:
                pass  # deleted by the job or its rollback
    if as_json:
        show_json(answer)
    elif job is not None:
        show_item(job)
        if answer.get("resource"):
            show_item(answer["resource"])
    else:
        show_item(answer) if isinstance(answer, dict) else show_json(answer)
    if job is not None and job.get("state") in ("failed", "cancelled"):
        raise click.ClickException(f"job {job.get('uuid')} {job.get('state')}: {job.get('error')}")


def _with(options: list[FieldOption], cmd: click.Command) -> click.Command:
    cmd.params.extend(f.option for f in options)
    return cmd


def list_command(coll: str, columns: list[str], doc: str, query_help: str, *,
                 sort: str | None = None, limit: int | None = None) -> click.Command:
    """``list`` of a collection: filtered, sorted, paged and projected (``sort`` and
    ``limit`` are the defaults the options start from)."""

    @click.command("list", help=doc)
    @click.option("-q", "--query", multiple=True, metavar="COND", help=query_help)
    @click.option("--fields", help="comma-separated fields to show")
    @click.option("--sort", default=sort, show_default=sort is not None,
                  help="field to sort by; -field for descending")
    @click.option("--limit", type=int, default=limit, show_default=limit is not None)
    @click.option("--offset", type=int)
    @click.option("--count", is_flag=True, help="also show how many match in all")
    @JSON
    @click.pass_context
    def list_(ctx: click.Context, query: tuple[str, ...], fields: str | None, sort: str | None,
              limit: int | None, offset: int | None, count: bool, as_json: bool) -> None:
        params: dict[str, Any] = {"q": list(query)} if query else {}
        if count:
            params["count"] = 1
        params.update({k: v for k, v in
                       {"fields": fields, "sort": sort, "limit": limit, "offset": offset}.items()
                       if v is not None})
        answer = client_of(ctx).get(f"/{coll}", **params)
        if as_json:
            show_json(answer)
            return
        show_table(answer.get("items", []), fields.split(",") if fields else columns, title=coll,
                   total=answer.get("total"))

    return list_


def get_command(coll: str, doc: str) -> click.Command:
    """``get`` of one item of a collection, by UUID or name."""

    @click.command("get", help=doc)
    @click.argument("ref")
    @JSON
    @click.pass_context
    def get(ctx: click.Context, ref: str, as_json: bool) -> None:
        client = client_of(ctx)
        item = client.get(f"/{coll}/{client.resolve(coll, ref)}")
        show_json(item) if as_json else show_item(item)

    return get


def resource_group(spec: ResourceSpec) -> click.Group:
    """The command group of one collection."""
    coll = spec.collection
    group = click.Group(spec.command, help=f"{coll}: list, show, create, update, delete"
                        + (f"; {', '.join(spec.actions)}" if spec.actions else ""))

    group.add_command(list_command(coll, spec.columns, "List the collection, filtered, sorted, paged and "
                                   "projected.", "filter, e.g. state=Running, memorySize>1073741824, host.name=h1"))
    group.add_command(get_command(coll, "Show one resource (by UUID or name)."))

    if spec.creatable:
        group.add_command(_create(spec))

    @group.command("update")
    @click.argument("ref")
    @click.option("--name")
    @click.option("--description")
    @click.option("--vtep-ip", help="hosts: the VXLAN tunnel endpoint (applied by a sync-vxlan job)")
    @SET
    @JSON
    @click.pass_context
    def update(ctx: click.Context, ref: str, name: str | None, description: str | None,
               vtep_ip: str | None, sets: tuple[str, ...], as_json: bool) -> None:
        """Rename or re-describe a resource (or set a host's VTEP address, or any field
        the resource's PATCH takes with --set, e.g. a backup policy's retentionCount)."""
        client = client_of(ctx)
        body = {k: v for k, v in {"name": name, "description": description,
                                  "vtepIp": vtep_ip}.items() if v is not None}
        body.update(parse_sets(sets))
        item = client.request("PATCH", f"/{coll}/{client.resolve(coll, ref)}", json=body)
        show_json(item) if as_json else show_item(item)

    @group.command("delete")
    @click.argument("ref")
    @click.option("--yes", is_flag=True, help="do not ask before deleting what depends on it")
    @JSON
    @NO_WAIT
    @click.pass_context
    def delete(ctx: click.Context, ref: str, yes: bool, as_json: bool, no_wait: bool) -> None:
        """Delete a resource and, after confirmation, everything that depends on it."""
        client = client_of(ctx)
        uuid = client.resolve(coll, ref)
        plan = client.request("DELETE", f"/{coll}/{uuid}")
        affected = plan.get("affected", []) if isinstance(plan, dict) else []
        if not yes and affected:
            show_table([a if isinstance(a, dict) else {"uuid": a} for a in affected],
                       ["type", "resourceType", "uuid", "name"], title="will be deleted")
            click.confirm(f"delete these {len(affected)} resources?", abort=True, err=True)
        if not isinstance(plan, dict) or "affected" in plan:
            plan = client.request("DELETE", f"/{coll}/{uuid}", params={"confirm": 1})
        finish(client, plan, as_json, no_wait)

    for verb, model in spec.actions.items():
        group.add_command(_action(coll, verb, model))
    return group


def _create(spec: ResourceSpec) -> click.Command:
    options = model_options(spec.create)

    @click.command("create", help=(spec.create.__doc__ or "").strip() if spec.create else None)
    @SET
    @JSON
    @NO_WAIT
    @click.pass_context
    def create(ctx: click.Context, sets: tuple[str, ...], as_json: bool, no_wait: bool,
               **values: Any) -> None:
        client = client_of(ctx)
        body = build_body(client, spec.create, options, values, parse_sets(sets))
        finish(client, client.post(f"/{spec.collection}", body), as_json, no_wait)

    return _with(options, create)


def _action(coll: str, verb: str, model: Any) -> click.Command:
    options = model_options(model)

    fields = bool(model is not None and model.model_fields)
    about = (model.__doc__ or "").strip() if fields else ""
    @click.command(verb, help=f"POST /v1/{coll}/<uuid>/actions/{verb}" + (f"\n\n{about}" if about else ""))
    @click.argument("ref")
    @SET
    @JSON
    @NO_WAIT
    @click.pass_context
    def action(ctx: click.Context, ref: str, sets: tuple[str, ...], as_json: bool, no_wait: bool,
               **values: Any) -> None:
        client = client_of(ctx)
        body = build_body(client, model, options, values, parse_sets(sets))
        answer = client.post(f"/{coll}/{client.resolve(coll, ref)}/actions/{verb}", body)
        finish(client, answer, as_json, no_wait)

    return _with(options, action)


def job_group() -> click.Group:
    group = click.Group("job", help="jobs: show, wait for, cancel")

    @group.command("list")
    @click.option("-q", "--query", multiple=True, metavar="COND")
    @click.option("--limit", type=int, default=20)
    @JSON
    @click.pass_context
    def list_(ctx: click.Context, query: tuple[str, ...], limit: int, as_json: bool) -> None:
        """Recent jobs."""
        params: dict[str, Any] = {"sort": "-createDate", "limit": limit}
        if query:
            params["q"] = list(query)
        answer = client_of(ctx).get("/jobs", **params)
        if as_json:
            show_json(answer)
            return
        show_table(answer.get("items", []),
                   ["uuid", "kind", "resourceUuid", "state", "stage", "percent", "error"], "jobs")

    @group.command("get")
    @click.argument("uuid")
    @JSON
    @click.pass_context
    def get(ctx: click.Context, uuid: str, as_json: bool) -> None:
        """Show a job."""
        job = client_of(ctx).get(f"/jobs/{uuid}")
        show_json(job) if as_json else show_item(job["job"])

    @group.command("wait")
    @click.argument("uuid")
    @JSON
    @click.pass_context
    def wait(ctx: click.Context, uuid: str, as_json: bool) -> None:
        """Follow a job with a progress bar until it ends."""
        client = client_of(ctx)
        finish(client, client.get(f"/jobs/{uuid}"), as_json, no_wait=False)

    @group.command("cancel")
    @click.argument("uuid")
    @JSON
    @click.pass_context
    def cancel(ctx: click.Context, uuid: str, as_json: bool) -> None:
        """Cancel a job (its agent commands are cancelled, its steps rolled back)."""
        job = client_of(ctx).post(f"/jobs/{uuid}/cancel")
        show_json(job) if as_json else show_item(job["job"])

    return group


def add_resource_groups(root: click.Group, catalog: dict[str, ResourceSpec]) -> None:
    for spec in catalog.values():
        group = resource_group(spec)
        root.add_command(group)
        alias = COMMAND_ALIASES.get(spec.command)
        if alias:
            root.add_command(group, alias)
    root.add_command(job_group())
