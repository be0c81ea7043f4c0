"""Every agent serves exactly the commands its wire models declare."""

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

from agentcore.models import commands_in
from agentcore.plugin import Plugin

AGENTS = ("kvmagent", "storageagent", "sftpbackup", "cephagent")


def _plugins(package: str) -> list[type[Plugin]]:
    pkg = importlib.import_module(f"{package}.plugins")
    modules: list[ModuleType] = [importlib.import_module(i.name)
                                 for i in pkgutil.iter_modules(pkg.__path__, prefix=f"{package}.plugins.")]
    return [c for m in modules for _, c in inspect.getmembers(m, inspect.isclass)
            if issubclass(c, Plugin) and c.__module__ == m.__name__]


@pytest.mark.parametrize("agent", AGENTS)
def test_the_plugins_serve_every_declared_command_once(agent: str) -> None:
    declared = commands_in(importlib.import_module(f"{agent}.models"))
    served = [(s.path, s.request) for c in _plugins(agent) for s in object.__new__(c).commands()]
    assert sorted(p for p, _ in served) == sorted(declared)
    assert all(declared[p] is request for p, request in served)
