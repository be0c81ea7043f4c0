import pytest

from agentcore.models import Command, Reply
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext


class VmCmd(Command):
    vm_uuid: str


class VmPlugin(Plugin):
    prefix = "/vm"

    @command("/start", lock=lambda c: f"vm:{c.vm_uuid}")
    def start(self, ctx: TaskContext, cmd: VmCmd) -> Reply:
        """Start a VM.

        More words."""
        return Reply()

    def helper(self) -> None:
        pass


def test_commands_are_found_by_introspection() -> None:
    (spec,) = VmPlugin().commands()
    assert spec.path == "/vm/start"
    assert spec.request is VmCmd and spec.reply is Reply
    assert spec.doc.startswith("Start a VM.")
    assert spec.lock_keys(VmCmd(vm_uuid="u1")) == ["vm:u1"]


def test_wire_names_are_camel_case_and_unknown_fields_refused() -> None:
    assert VmCmd.model_validate({"vmUuid": "x"}).vm_uuid == "x"
    assert VmCmd(vm_uuid="x").wire() == {"timeout": None, "vmUuid": "x"}
    with pytest.raises(ValueError, match="typo"):
        VmCmd.model_validate({"vmUuid": "x", "typo": 1})


def test_a_command_without_typed_models_is_refused() -> None:
    class Bad(Plugin):
        @command("/x")
        def x(self, ctx, cmd):  # type: ignore[no-untyped-def]
            return Reply()

    with pytest.raises(TypeError):
        Bad().commands()
