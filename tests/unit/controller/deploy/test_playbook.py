"""The files a playbook run reads: API-supplied strings reach Ansible as data, never templates
(review finding F1). Loaded here with Ansible's own loader, as ``-e @file`` and the yaml
inventory plugin load them (both trust a file's strings as templates unless tagged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.parsing.dataloader import DataLoader
from ansible.template import is_trusted_as_template

from controller.deploy import DeployTarget
from controller.deploy.known_hosts import KnownHosts
from controller.deploy.playbook import as_data, inventory, write_private

PAYLOAD = "{{ lookup('pipe', 'id') }}"


def strings(value: Any) -> list[Any]:
    """Every string in ``value``, keys included."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def load(path: Path) -> Any:
    return DataLoader().load_from_file(str(path), cache="none", trusted_as_template=True)


def test_extra_variables_round_trip_and_no_string_is_trusted_as_a_template(tmp_path: Path) -> None:
    extravars = {"kvmcloud_agent_config": {"listen": f"a{PAYLOAD}:7070", PAYLOAD: [PAYLOAD, 1, True]},
                 "kvmcloud_force": False, "kvmcloud_controller_addresses": ["10.0.0.1"], "n": None,
                 "mode": "0700", "flag": "yes", "port": 7070}
    path = write_private(tmp_path / "env" / "extravars", as_data(extravars))
    loaded = load(path)
    assert loaded == extravars
    assert loaded["kvmcloud_force"] is False and loaded["n"] is None
    assert strings(loaded) and not any(is_trusted_as_template(s) for s in strings(loaded))
    assert path.stat().st_mode & 0o777 == 0o600


def test_without_the_tag_ansible_would_trust_them(tmp_path: Path) -> None:
    """The control: the same document untagged, as ansible-runner writes it, is trusted."""
    path = tmp_path / "extravars"
    path.write_text(as_data({"listen": PAYLOAD}).replace("--- !unsafe\n", ""))
    assert is_trusted_as_template(load(path)["listen"])


def test_the_inventory_is_data_too(tmp_path: Path) -> None:
    target = DeployTarget("10.0.0.5", 2222, "admin", key_file=tmp_path / "id",
                          host_vars={"sftpbackup_store_root": f"/srv/{PAYLOAD}"})
    data = inventory("sftpbackup", target, KnownHosts(tmp_path / "known_hosts"))
    loaded = load(write_private(tmp_path / "inventory" / "hosts.yml", as_data(data)))
    assert loaded == data
    assert not any(is_trusted_as_template(s) for s in strings(loaded))
