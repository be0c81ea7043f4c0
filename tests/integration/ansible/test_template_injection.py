"""API-supplied values are data to Ansible, never templates (review finding F1).

The playbook here runs with ``connection: local`` through the real deploy path
(``Deployer.deploy`` -> ansible-runner -> ansible-playbook) and renders the agent's
config with the real ``common`` role's defaults, vars and ``agent.toml.j2``: the
place where an agent URL carrying ``{{ lookup('pipe', ...) }}`` used to run a
command on the controller. No test host is needed.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.deploy import Deployer, DeploySettings, DeployTarget, Wheelhouse
from controller.deploy import deployer as deployer_module
from controller.server import create_app
from controller.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.ansible

API = "template-injection-api-token-0123"
COMMON = ROOT / "ansible" / "roles" / "common"

PLAYBOOK = """\
- name: Render the agent's config as the common role does, on this machine
  hosts: all
  connection: local
  gather_facts: false
  roles:
    - role: common
      vars:
        kvmcloud_agent: {role}
"""

TASKS = """\
- name: Create the config directory
  ansible.builtin.file:
    path: "{{ kvmcloud_etc_dir }}"
    state: directory
    mode: "0700"
- name: Write the agent's config
  ansible.builtin.template:
    src: agent.toml.j2
    dest: "{{ kvmcloud_config_file }}"
    mode: "0600"
"""


def lookup_payload(marker: Path) -> str:
    """A template that creates ``marker``, written without whitespace or '/' (the review's
    form: it passed the old ``^https?://[^\\s]+$`` pattern and stays inside the netloc)."""
    def chars(text: str) -> str:
        return "~".join(f"'%c'|format({ord(c)})" if c in " /" else f"'{c}'" for c in text)
    return "{{lookup('pipe'," + chars(f"touch {marker}") + ")}}"


@pytest.fixture
def marker() -> Iterator[Path]:
    path = Path("/tmp") / f"kvmcloud-f1-{uuid.uuid4().hex}"
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def local_deployer(tmp_path: Path) -> Deployer:
    """A deployer whose playbooks only render the agent's config on this machine."""
    ansible = tmp_path / "ansible"
    role = ansible / "roles" / "common"
    (role / "tasks").mkdir(parents=True)
    for part in ("defaults", "vars", "templates"):
        (role / part).symlink_to(COMMON / part)
    (role / "tasks" / "main.yml").write_text(TASKS)
    (ansible / "ansible.cfg").write_text((ROOT / "ansible" / "ansible.cfg").read_text())
    # the add-storage flow reads the store root from the sftpbackup role's defaults
    (ansible / "roles" / "sftpbackup").mkdir()
    (ansible / "roles" / "sftpbackup" / "defaults").symlink_to(ROOT / "ansible" / "roles" / "sftpbackup" / "defaults")
    for name in ("kvmagent", "storageagent", "sftpbackup", "cephagent"):
        (ansible / f"{name}.yml").write_text(PLAYBOOK.format(role=name))
    work = tmp_path / "deploy"
    work.mkdir(mode=0o700)
    # a recorded host key and a key file: the deploy neither scans nor installs a key
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "id_ed25519")],
                   check=True, capture_output=True, timeout=30)
    (work / "known_hosts").write_text("127.0.0.1 " + (work / "id_ed25519.pub").read_text())
    return Deployer(DeploySettings(
        work_dir=work, ansible_dir=ansible, timeout=120,
        wheelhouse=Wheelhouse(tar=tmp_path / "kvmcloud-0.0.0-000000000000.tar", version="0.0.0"),
        host_vars={"kvmcloud_etc_dir": str(tmp_path / "etc")}))


def test_the_deployer_hands_templates_to_ansible_as_data(local_deployer: Deployer, marker: Path,
                                                         tmp_path: Path) -> None:
    """Validation bypassed: a lookup in the agent config (extra variables) and in a host
    variable (inventory) ends up in the agent's config verbatim, and runs nothing."""
    payload = f"{{{{ lookup('pipe', 'touch {marker}') }}}}"
    target = DeployTarget("127.0.0.1", user="root", key_file=local_deployer.settings.key_file,
                          python=sys.executable, host_vars={"kvmcloud_log_dir": payload})
    result = local_deployer.deploy(target, "kvmagent", {
        "listen": f"a{payload}:7070", "controller_urls": [f"http://{payload}:9"]})
    assert result.success, result.message
    assert not marker.exists(), "the lookup ran on the controller"
    config = tomllib.loads((tmp_path / "etc" / "kvmagent.toml").read_text())
    assert config["listen"] == f"a{payload}:7070"
    assert config["controller_urls"] == [f"http://{payload}:9"]
    assert config["log_file"] == f"{payload}/kvmagent.log"
    assert not marker.exists()


def test_the_api_refuses_a_template_in_agent_url_and_deploys_nothing(
        local_deployer: Deployer, marker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review's reproduction: ``POST /v1/backup-storages`` with deploy and the lookup
    in ``agentUrl`` is a 400 naming ``agentUrl``; nothing is run."""
    monkeypatch.setattr(deployer_module, "_default", local_deployer)
    settings = Settings(db_url=f"sqlite:///{tmp_path}/controller.db", api_tokens=[API],
                        agent_token="template-injection-agent-token", tracker=False,
                        public_url="http://127.0.0.1:9")
    app = create_app(settings)
    try:
        client = app.test_client(use_cookies=False)
        r = client.post("/v1/backup-storages", query_string={"wait": "1"}, headers={"Authorization": f"Bearer {API}"},
                        json={"name": "b2", "type": "sftp", "hostname": "127.0.0.1", "url": "/store2",
                              "deploy": True, "agentUrl": f"http://a{lookup_payload(marker)}:7171"})
        assert not marker.exists(), "the lookup ran on the controller"
        assert r.status_code == 400, r.get_data(as_text=True)
        error = r.get_json()["error"]
        assert error["details"]["field"] == "agentUrl"
        assert (tmp_path / "deploy" / "runs").exists() is False, "a deploy was started"
    finally:
        app.extensions["kvmcloud"].close()
