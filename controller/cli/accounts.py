"""``kvmcloud account`` (create, list, delete) and ``kvmcloud audit list``: admins only."""

from __future__ import annotations

from typing import Any

import click

from controller.cli.output import errors, show_item, show_json, show_table
from controller.cli.resources import JSON, client_of

ACCOUNT_COLUMNS = ["uuid", "name", "role", "createDate"]
AUDIT_COLUMNS = ["createDate", "accountName", "role", "method", "path", "resourceUuid", "status"]


def account_group() -> click.Group:
    group = click.Group("account", help="API accounts (admin): create, list, get, delete")

    @group.command("create")
    @click.argument("name")
    @click.option("--role", type=click.Choice(["admin", "readonly"]), default="readonly",
                  show_default=True, help="admin: everything; readonly: GET only")
    @JSON
    @click.pass_context
    def create(ctx: click.Context, name: str, role: str, as_json: bool) -> None:
        """Create an account and print its token (shown this once: the controller keeps a hash)."""
        answer = client_of(ctx).post("/accounts", {"name": name, "role": role})
        if as_json:
            show_json(answer)
            return
        token = answer.pop("token", "")
        show_item(answer)
        errors.print("[bold]token[/bold] (shown once; keep it now):")
        click.echo(token)

    @group.command("list")
    @click.option("-q", "--query", multiple=True, metavar="COND", help="filter, e.g. role=readonly")
    @JSON
    @click.pass_context
    def list_(ctx: click.Context, query: tuple[str, ...], as_json: bool) -> None:
        """List the accounts (never their tokens)."""
        params: dict[str, Any] = {"q": list(query)} if query else {}
        answer = client_of(ctx).get("/accounts", **params)
        show_json(answer) if as_json else show_table(answer.get("items", []), ACCOUNT_COLUMNS,
                                                     "accounts")

    @group.command("get")
    @click.argument("ref")
    @JSON
    @click.pass_context
    def get(ctx: click.Context, ref: str, as_json: bool) -> None:
        """Show one account (by UUID or name)."""
        client = client_of(ctx)
        item = client.get(f"/accounts/{client.resolve('accounts', ref)}")
        show_json(item) if as_json else show_item(item)

    @group.command("delete")
    @click.argument("ref")
    @click.pass_context
    def delete(ctx: click.Context, ref: str) -> None:
        """Delete an account (by UUID or name); its token stops working at once."""
        client = client_of(ctx)
        client.request("DELETE", f"/accounts/{client.resolve('accounts', ref)}")
        errors.print(f"account {ref} deleted")

    return group


def audit_group() -> click.Group:
    group = click.Group("audit", help="the audit log of mutating API calls (admin)")

    @group.command("list")
    @click.option("-q", "--query", multiple=True, metavar="COND",
                  help="filter, e.g. accountName=ops, status>=400, resourceUuid=...")
    @click.option("--limit", type=int, default=50, show_default=True)
    @JSON
    @click.pass_context
    def list_(ctx: click.Context, query: tuple[str, ...], limit: int, as_json: bool) -> None:
        """The newest audit events first."""
        params: dict[str, Any] = {"sort": "-createDate", "limit": limit}
        if query:
            params["q"] = list(query)
        answer = client_of(ctx).get("/audit-events", **params)
        show_json(answer) if as_json else show_table(answer.get("items", []), AUDIT_COLUMNS,
                                                     "audit events")

    return group
