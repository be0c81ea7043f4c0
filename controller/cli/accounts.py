"""``kvmcloud account`` (create, list, delete) and ``kvmcloud audit list``: admins only."""

from __future__ import annotations

import click

from controller.cli.output import errors, show_item, show_json
from controller.cli.resources import JSON, client_of, get_command, list_command

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

    group.add_command(list_command("accounts", ACCOUNT_COLUMNS, "List the accounts (never their tokens).",
                                   "filter, e.g. role=readonly"))
    group.add_command(get_command("accounts", "Show one account (by UUID or name)."))

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

    group.add_command(list_command("audit-events", AUDIT_COLUMNS, "The newest audit events first.",
                                   "filter, e.g. accountName=ops, status>=400, resourceUuid=...",
                                   sort="-createDate", limit=50))
    return group
