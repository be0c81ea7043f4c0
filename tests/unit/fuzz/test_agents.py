"""Fuzz every agent's HTTP API in-process, from its ``/openapi.json``.

Every command's body, headers and path parameters are fuzzed and validated.
A command whose body is valid runs only when it is harmless here: the agent's
roots are temporary directories, kvmagent drives libvirt's ``test:///default``,
the Ceph pool answers "unreachable", and no process is ever started
(:func:`no_processes`). The rest are answered by a stub after validation; see
``NOT_RUN`` for which and why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from schemathesis.generation import GenerationMode

from agentcore.errors import AgentError
from agentcore.plugin import CommandSpec, Plugin
from agentcore.runtime import AgentRuntime
from agentcore.server import PUBLIC_PATHS, create_app
from cephagent.errors import CephUnreachable
from tests.unit.fuzz.harness import Api, no_processes

pytestmark = pytest.mark.slow

TOKEN = "fuzz-token-0123456789abcdef"

#: commands validated but never run while fuzzing, with the reason
NOT_RUN: dict[str, str] = {
    "/storage/mount": "mounts an NFS export or bind-mounts a directory (mount(8), as root)",
    "/storage/unmount": "unmounts (umount(8), as root)",
    "/network/l2/create": "creates bridges, VLAN and VXLAN links on the host over netlink",
    "/network/l2/delete": "deletes host links over netlink",
    "/network/l2/check": "reads host links; harmless, but shares the netlink code of create",
    "/network/dhcp/apply": "creates network namespaces, veths and starts dnsmasq",
    "/network/dhcp/delete": "deletes network namespaces and stops dnsmasq",
    "/network/dhcp/release": "signals dnsmasq in a namespace (dhcp_release)",
    "/vm/migrate": "libvirt migration to a generated destination URI (network)",
    "/vm/console": "opens a console socket for a domain",
}


class NotRunWhileFuzzing(AgentError):
    """A command failure (``COMMAND_FAILED``) instead of running a command that is not harmless."""

    default_message = "the command is not run while fuzzing"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def harmless(cmd: Any, sandbox: Path, own_confinement: bool) -> bool:
    """No URL (network), and no absolute path outside the sandbox unless the agent confines paths."""
    for s in _strings(cmd.model_dump(mode="json")):
        if "://" in s:
            return False
        if not own_confinement and s.startswith("/") and not s.startswith(f"{sandbox}/"):
            return False
    return True


def guard(spec: CommandSpec, sandbox: Path, own_confinement: bool) -> CommandSpec:
    """The command as it is fuzzed: its handler runs only on harmless input."""
    if spec.path in NOT_RUN:
        def stub(ctx: Any, cmd: Any) -> Any:
            raise NotRunWhileFuzzing(NOT_RUN[spec.path])
        return dataclasses.replace(spec, handler=stub)
    real = spec.handler

    def guarded(ctx: Any, cmd: Any) -> Any:
        if not harmless(cmd, sandbox, own_confinement):
            raise NotRunWhileFuzzing("the body names a URL or a path outside the sandbox")
        return real(ctx, cmd)
    return dataclasses.replace(spec, handler=guarded)


def no_internal_errors(path: str, status: int, body: Any) -> str | None:
    """A command that ran on input its model accepted must fail with a reason, not a crash."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("code") == "INTERNAL_ERROR":
        return f"INTERNAL_ERROR on validated input: {err.get('message')!r:.300}"
    return None


@dataclasses.dataclass
class Agent:
    name: str
    make: Callable[[Path], tuple[Any, list[Plugin]]]
    #: the agent confines every path itself (kvmagent's storage roots)
    own_confinement: bool = False


def _storageagent(tmp: Path) -> tuple[Any, list[Plugin]]:
    from storageagent.app import Config, make_plugins
    config = Config(token=TOKEN, state_dir=tmp / "state", storage_base_dirs=[tmp / "ps"],  # type: ignore[arg-type]
                    mount_base=tmp / "mnt", mount_helper="bind")
    return config, make_plugins(config)


def _sftpbackup(tmp: Path) -> tuple[Any, list[Plugin]]:
    from sftpbackup.app import Config, make_plugins
    config = Config(token=TOKEN, state_dir=tmp / "state", file_url_roots=[tmp / "files"])  # type: ignore[arg-type]
    return config, make_plugins(config)


class UnreachablePool:
    """Stands in for the Ceph connection pool: every cluster is unreachable."""

    def get(self, *a: Any, **kw: Any) -> Any:
        raise CephUnreachable()

    def close(self) -> None:
        pass


def _cephagent(tmp: Path) -> tuple[Any, list[Plugin]]:
    from cephagent.app import Config, make_plugins
    config = Config(token=TOKEN, state_dir=tmp / "state", keyring_dirs=[tmp / "ceph"],  # type: ignore[arg-type]
                    secrets_dir=tmp / "secrets", work_dir=tmp / "work")
    plugins = make_plugins(config)
    for p in plugins:
        p.ceph.pool = UnreachablePool()  # type: ignore[attr-defined]
    return config, plugins


def _kvmagent(tmp: Path) -> tuple[Any, list[Plugin]]:
    from kvmagent.app import make_plugins
    from kvmagent.config import KvmAgentConfig
    config = KvmAgentConfig(token=TOKEN, state_dir=tmp / "state", libvirt_uri="test:///default",  # type: ignore[arg-type]
                            storage_roots=[tmp / "ps"], console_dir=tmp / "console")
    plugins = make_plugins(config, events=False)
    plugins[0].host.domain_type = "test"  # type: ignore[attr-defined]
    return config, plugins


AGENTS = [Agent("storageagent", _storageagent), Agent("sftpbackup", _sftpbackup),
          Agent("cephagent", _cephagent), Agent("kvmagent", _kvmagent, own_confinement=True)]


@pytest.fixture(scope="module", params=AGENTS, ids=lambda a: a.name)
def agent_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    agent: Agent = request.param
    tmp = tmp_path_factory.mktemp(agent.name)
    with no_processes():
        if agent.name == "kvmagent":
            from kvmagent.paths import set_storage_roots
            set_storage_roots(())
        config, plugins = agent.make(tmp)
        runtime = AgentRuntime(agent.name, config, plugins)
        runtime.commands = {p: guard(s, tmp, agent.own_confinement) for p, s in runtime.commands.items()}
        runtime.start()
        try:
            yield Api.from_app(agent.name, create_app(runtime), "/openapi.json", TOKEN,
                               public=frozenset(PUBLIC_PATHS), judge=no_internal_errors)
        finally:
            runtime.stop()
            if agent.name == "kvmagent":
                set_storage_roots(())


def test_valid_requests(agent_api: Api) -> None:
    """Bodies that fit the schema: accepted, or refused with a 4xx naming the field."""
    with no_processes():
        agent_api.fuzz_all(GenerationMode.POSITIVE)
    agent_api.assert_clean()


def test_invalid_requests(agent_api: Api) -> None:
    """Bodies, headers and paths that break the schema: a JSON 4xx, never a 5xx."""
    with no_processes():
        agent_api.fuzz_all(GenerationMode.NEGATIVE)
    agent_api.assert_clean()


def test_requests_without_the_token(agent_api: Api) -> None:
    """Every operation but the public ones answers 401 to a request without the token."""
    with no_processes():
        agent_api.fuzz_all(GenerationMode.POSITIVE, with_token=False, examples=2)
    agent_api.assert_clean()
