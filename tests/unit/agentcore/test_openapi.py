"""The agent's OpenAPI document says what the HTTP layer really accepts."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from agentcore.models import Command, Reply, Returns
from agentcore.openapi import TASK_UUID_PATTERN, build_openapi
from agentcore.plugin import Plugin, command
from agentcore.server import TASK_UUID


class FileDisk(BaseModel):
    type: Literal["file"] = "file"
    path: str


class NetDisk(BaseModel):
    type: Literal["net"] = "net"
    url: str


class AttachCmd(Command, Returns[Reply], path="/attach"):
    disk: Annotated[FileDisk | NetDisk, Field(discriminator="type")]


class DiskPlugin(Plugin):
    @command()
    def attach(self, ctx: object, cmd: AttachCmd) -> Reply:
        """Attach a disk."""
        return Reply()


def test_taskuuid_header_carries_the_pattern_the_server_checks() -> None:
    doc = build_openapi("t", {s.path: s for s in DiskPlugin().commands()})
    header = next(p for p in doc["paths"]["/attach"]["post"]["parameters"] if p["name"] == "taskuuid")
    assert header["schema"]["pattern"] == TASK_UUID_PATTERN == TASK_UUID.pattern
    assert re.fullmatch(TASK_UUID_PATTERN, "task-1.a_b")
    assert not TASK_UUID.fullmatch("task-1\n")


def test_a_tagged_unions_tag_is_required_in_every_member() -> None:
    """pydantic calls a defaulted Literal tag optional, yet the union cannot be told apart without it."""
    doc = build_openapi("t", {s.path: s for s in DiskPlugin().commands()})
    schemas = doc["components"]["schemas"]
    assert "type" in schemas["FileDisk"]["required"]
    assert "type" in schemas["NetDisk"]["required"]
    assert AttachCmd.model_validate({"disk": {"type": "net", "url": "x"}}).disk.type == "net"
