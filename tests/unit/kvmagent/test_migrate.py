"""The migration plugin's choice of destination URI: SSH with the migration key and a
checked host key by default; plain TCP and unchecked host keys refused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydantic import SecretStr

from kvmagent.config import KvmAgentConfig
from kvmagent.models import MigrateVmCmd
from kvmagent.plugins.migrate import MigratePlugin, MigrationFailed

VM = "8d3a1c0e-4c5b-4f3e-9a51-7a9b2c1d0e6f"


def plugin(tmp_path: Path, **conf: Any) -> MigratePlugin:
    config = KvmAgentConfig(token=SecretStr("t" * 32), state_dir=tmp_path, **conf)
    return MigratePlugin(cast(Any, SimpleNamespace(config=config)))


def dest_uri(p: MigratePlugin, **cmd: Any) -> str:
    return p._dest_uri(MigrateVmCmd.model_validate({"vmUuid": VM, "destHostIp": "10.0.0.2", **cmd}))


def test_the_default_is_libssh_with_the_key_and_a_checked_host_key(tmp_path: Path) -> None:
    uri = dest_uri(plugin(tmp_path, migration_ssh_port=2222,
                          migration_known_hosts=Path("/etc/kvm cloud/known_hosts")))
    assert uri == ("qemu+libssh://root@10.0.0.2:2222/system?keyfile=/etc/kvmcloud/migration/id_ed25519"
                   "&known_hosts=/etc/kvm%20cloud/known_hosts&known_hosts_verify=normal&sshauth=privkey")


def test_plain_tcp_only_when_the_config_says_so(tmp_path: Path) -> None:
    with pytest.raises(MigrationFailed, match="no authentication"):
        dest_uri(plugin(tmp_path), destUri="qemu+tcp://10.0.0.2/system")
    tcp = plugin(tmp_path, migration_transport="tcp")
    assert dest_uri(tcp) == "qemu+tcp://10.0.0.2/system"
    assert dest_uri(tcp, destUri="qemu+tcp://10.0.0.3/system") == "qemu+tcp://10.0.0.3/system"


@pytest.mark.parametrize("query", ["no_verify=1", "a=b&no_verify=yes", "no_verify=01", "NO_VERIFY=1",
                                   "no%5Fverify=1", "known_hosts_verify=auto", "known_hosts_verify=ignore",
                                   "known_hosts_verify=normalx", "known_hosts_verify=normal&known_hosts_verify=auto"])
def test_a_uri_that_skips_the_host_key_check_is_refused(tmp_path: Path, query: str) -> None:
    with pytest.raises(MigrationFailed, match="host key must be checked"):
        dest_uri(plugin(tmp_path), destUri=f"qemu+ssh://root@10.0.0.2/system?{query}")


@pytest.mark.parametrize("query", ["no_verify=0", "no_verify=00", "known_hosts_verify=normal",
                                   "keyfile=/k&known_hosts_verify=normal"])
def test_a_checked_uri_of_the_command_is_used(tmp_path: Path, query: str) -> None:
    uri = f"qemu+libssh://root@10.0.0.2/system?{query}"
    assert dest_uri(plugin(tmp_path), destUri=uri) == uri
