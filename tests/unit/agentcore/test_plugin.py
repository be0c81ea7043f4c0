import types

import pytest

from agentcore.models import Command, Reply, Returns, commands_in
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext


class StartReply(Reply):
    state: str = ""


class VmCmd(Command):
    vm_uuid: str


class StartCmd(VmCmd, Returns[StartReply], path="/vm/start"):
    """Start a VM."""


class RestartCmd(StartCmd, path="/vm/restart"):
    """Restart a VM: same body and reply as start."""


class VmPlugin(Plugin):
    @command(lock=lambda c: f"vm:{c.vm_uuid}")
    def start(self, ctx: TaskContext, cmd: StartCmd) -> StartReply:
        """Start a VM.

        More words."""
        return StartReply()

    def helper(self) -> None:
        pass


def test_commands_are_found_by_introspection() -> None:
    (spec,) = VmPlugin().commands()
    assert spec.path == "/vm/start"
    assert spec.request is StartCmd and spec.reply is StartReply
    assert spec.doc.startswith("Start a VM.")
    assert spec.lock_keys(StartCmd(vm_uuid="u1")) == ["vm:u1"]


def test_a_command_declares_its_path_and_reply_and_only_the_reply_is_inherited() -> None:
    assert (StartCmd.path, StartCmd.reply) == ("/vm/start", StartReply)
    assert (RestartCmd.path, RestartCmd.reply) == ("/vm/restart", StartReply)
    assert (VmCmd.path, VmCmd.reply) == (None, None)


def test_a_path_without_a_reply_or_without_a_slash_is_refused() -> None:
    with pytest.raises(TypeError, match="Returns"):
        class NoReply(Command, path="/x"):
            pass
    with pytest.raises(ValueError, match="start with"):
        class NoSlash(Command, Returns[Reply], path="x"):
            pass


def test_the_table_of_a_module_is_by_path_and_refuses_duplicates() -> None:
    module = types.ModuleType("m")
    module.StartCmd = StartCmd  # type: ignore[attr-defined]
    assert commands_in(module) == {}  # defined elsewhere: not this module's command
    StartCmd.__module__, RestartCmd.__module__ = "m", "m"
    module.RestartCmd, module.VmCmd = RestartCmd, VmCmd  # type: ignore[attr-defined]
    try:
        assert commands_in(module) == {"/vm/start": StartCmd, "/vm/restart": RestartCmd}
        with pytest.raises(ValueError, match="declared by"):
            commands_in(module, types.SimpleNamespace(__name__="m", Again=RestartCmd,  # type: ignore[arg-type]
                                                      Other=_other_at("/vm/restart")))
    finally:
        StartCmd.__module__ = RestartCmd.__module__ = __name__


def _other_at(path: str) -> type[Command]:
    class Other(Command, Returns[Reply], path=path):
        pass
    Other.__module__ = "m"
    return Other


def test_wire_names_are_camel_case_and_unknown_fields_refused() -> None:
    assert VmCmd.model_validate({"vmUuid": "x"}).vm_uuid == "x"
    assert VmCmd(vm_uuid="x").wire() == {"timeout": None, "vmUuid": "x"}
    with pytest.raises(ValueError, match="typo"):
        VmCmd.model_validate({"vmUuid": "x", "typo": 1})


def test_a_command_without_typed_models_is_refused() -> None:
    class Bad(Plugin):
        @command()
        def x(self, ctx, cmd):  # type: ignore[no-untyped-def]
            return Reply()

    with pytest.raises(TypeError):
        Bad().commands()


def test_a_handler_must_serve_a_declared_path_and_return_the_declared_reply() -> None:
    class Undeclared(Plugin):
        @command()
        def x(self, ctx: TaskContext, cmd: VmCmd) -> Reply:
            return Reply()

    class WrongReply(Plugin):
        @command()
        def x(self, ctx: TaskContext, cmd: StartCmd) -> Reply:
            return Reply()

    with pytest.raises(TypeError, match="declares no path"):
        Undeclared().commands()
    with pytest.raises(TypeError, match="declares StartReply"):
        WrongReply().commands()
