"""The deploy seam's pure logic: events, inventory, settings, wheelhouse packing, the no-op mode."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from controller.deploy import Deployer, DeployEvent, DeploySettings, DeployTarget, Wheelhouse
from controller.deploy.errors import DeployError
from controller.deploy.known_hosts import KnownHosts, host_pattern
from controller.deploy.playbook import _Events, inventory


def test_events_become_deploy_events_and_remember_the_first_failure() -> None:
    seen: list[DeployEvent] = []
    events = _Events(seen.append)
    events({"event": "playbook_on_task_start", "event_data": {"task": "Install"}})
    events({"event": "runner_on_ok", "event_data": {"task": "Install", "host": "h", "res": {"changed": True}}})
    events({"event": "runner_on_failed", "event_data": {"task": "Probe", "host": "h", "ignore_errors": True,
                                                        "res": {"msg": "ignored"}}})
    events({"event": "runner_on_failed", "event_data": {"task": "Start", "host": "h",
                                                        "res": {"msg": "non-zero return code", "stderr": "boom"}}})
    events({"event": "runner_on_unreachable", "event_data": {"task": "Later", "host": "h",
                                                             "res": {"msg": "Permission denied"}}})
    assert [e.kind for e in seen] == ["task", "changed", "failed", "unreachable"]
    assert events.failed_task == "Start"
    assert events.message == "non-zero return code: boom"
    assert seen[-1].message == "host unreachable over SSH: Permission denied"
    assert seen[-1].done == 3


def test_a_failing_callback_does_not_break_the_deploy() -> None:
    def bad(_: DeployEvent) -> None:
        raise RuntimeError("callback bug")

    _Events(bad)({"event": "runner_on_ok", "event_data": {"task": "t", "res": {}}})


def test_inventory_checks_host_keys_against_the_controllers_file(tmp_path: Path) -> None:
    kh = KnownHosts(tmp_path / "known_hosts")
    target = DeployTarget("10.0.0.5", 2222, "admin", key_file=tmp_path / "id", host_vars={"kvmcloud_prefix": "/x"})
    host = inventory("kvmagent", target, kh)["all"]["children"]["kvmagent"]["hosts"]["10.0.0.5"]
    assert host["ansible_port"] == 2222 and host["ansible_user"] == "admin"
    assert host["ansible_ssh_private_key_file"] == str(tmp_path / "id")
    assert f"UserKnownHostsFile={kh.path}" in host["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in host["ansible_ssh_common_args"]
    assert host["kvmcloud_prefix"] == "/x"


def test_host_pattern_follows_openssh() -> None:
    assert host_pattern("10.0.0.1", 22) == "10.0.0.1"
    assert host_pattern("10.0.0.1", 2222) == "[10.0.0.1]:2222"


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KVMCLOUD_DEPLOY_DIR", str(tmp_path))
    monkeypatch.setenv("KVMCLOUD_CONTROLLER_ADDRESSES", "10.0.0.1,10.0.0.2")
    monkeypatch.setenv("KVMCLOUD_DEPLOY_AGENT_CONFIG", '{"kvmagent": {"domain_type": "qemu"}}')
    monkeypatch.setenv("KVMCLOUD_DEPLOY_HOST_VARS", '{"kvmcloud_prefix": "/srv/kc"}')
    s = DeploySettings.from_env()
    assert s.work_dir == tmp_path and s.mode == "ansible"
    assert s.controller_addresses == ["10.0.0.1", "10.0.0.2"]
    assert s.agent_defaults == {"kvmagent": {"domain_type": "qemu"}}
    assert s.host_vars == {"kvmcloud_prefix": "/srv/kc"}
    monkeypatch.setenv("KVMCLOUD_DEPLOY_MODE", "sometimes")
    with pytest.raises(DeployError, match="KVMCLOUD_DEPLOY_MODE"):
        DeploySettings.from_env()


def test_no_op_mode_answers_already_deployed_with_a_fresh_token(tmp_path: Path) -> None:
    deployer = Deployer(DeploySettings(work_dir=tmp_path, mode="none"))
    result = deployer.deploy(DeployTarget("10.0.0.7"), "storageagent", {})
    assert result.success and result.skipped and result.message.startswith("already deployed")
    assert result.agent_url == "http://10.0.0.7:7071"
    assert result.token is not None and len(result.token.get_secret_value()) >= 32
    with pytest.raises(ValueError, match="unknown agent role"):
        deployer.deploy(DeployTarget("10.0.0.7"), "dbagent", {})


def _wheel(d: Path, name: str, data: bytes) -> None:
    (d / name).write_bytes(data)


def test_wheelhouse_tar_is_named_by_version_and_content(tmp_path: Path) -> None:
    wheels = tmp_path / "w"
    wheels.mkdir()
    _wheel(wheels, "kvmcloud-1.2.3-py3-none-any.whl", b"kc")
    _wheel(wheels, "flask-3.0-py3-none-any.whl", b"flask")
    a = Wheelhouse.from_dir(wheels, tmp_path / "out")
    assert a.version == "1.2.3" and a.tar.name.startswith("kvmcloud-1.2.3-")
    with tarfile.open(a.tar) as t:
        assert sorted(t.getnames()) == ["flask-3.0-py3-none-any.whl", "kvmcloud-1.2.3-py3-none-any.whl"]
        assert {m.mtime for m in t.getmembers()} == {0}
    assert Wheelhouse.from_dir(wheels, tmp_path / "out") == a  # same wheels, same file
    _wheel(wheels, "kvmcloud-1.2.3-py3-none-any.whl", b"changed")
    assert Wheelhouse.from_dir(wheels, tmp_path / "out").tar != a.tar


def test_wheelhouse_needs_exactly_one_kvmcloud_wheel(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="exactly one kvmcloud wheel"):
        Wheelhouse.from_dir(tmp_path, tmp_path / "out")
