"""The simulator's command table is the one the agents' wire models declare."""

from __future__ import annotations

import importlib
from typing import Literal

import pytest
from pydantic import BaseModel

from agentcore.models import commands_in
from kvmagent.models import StartVmCmd, StartVmReply
from simulator.catalog import AGENT_PACKAGES, KINDS, discover, placeholder, skeleton
from simulator.engine import build_reply


def test_kvmagent_commands_use_the_agents_own_models() -> None:
    table = discover("kvm")
    start = table["/vm/start"]
    assert start.request is StartVmCmd and start.reply is StartVmReply
    assert start.doc.startswith("The full spec of a VM")


@pytest.mark.parametrize("kind", KINDS)
def test_every_declared_command_is_served(kind: str) -> None:
    models = importlib.import_module(f"{AGENT_PACKAGES[kind]}.models")  # type: ignore[index]
    assert set(discover(kind)) == set(commands_in(models))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_a_reply_built_without_help_is_accepted_by_every_reply_model(kind: str) -> None:
    for path, spec in discover(kind).items():  # type: ignore[arg-type]
        wire = build_reply(spec, {})
        assert wire["success"] is True, path
        spec.reply.model_validate(wire)


def test_candidates_the_model_does_not_declare_or_that_do_not_fit_are_dropped() -> None:
    spec = discover("kvm")["/vm/start"]
    wire = build_reply(spec, {"vm_uuid": "v", "state": "Flying", "colour": "red", "vnc_port": 5901})
    assert wire["vmUuid"] == "v" and wire["vncPort"] == 5901
    assert wire["state"] == "Unknown" and "colour" not in wire


class _Inner(BaseModel):
    n: int
    tags: list[str]


class _Outer(BaseModel):
    name: str
    kind: Literal["a", "b"]
    inner: _Inner
    maybe: int | None
    ok: bool = True


def test_skeleton_fills_required_fields_by_type() -> None:
    assert skeleton(_Outer) == {"name": "", "kind": "a", "inner": {"n": 0, "tags": []}, "maybe": None}
    assert placeholder(float) == 0.0 and placeholder(dict[str, int]) == {}
