"""What a deploy is handed: the agent's listen address comes from the parsed agent URL, and
a stored URL or address that the API would refuse now is refused before Ansible runs."""

from __future__ import annotations

from typing import Any

import pytest

from controller.db.cluster import ControllerNode
from controller.deploy import DeployTarget
from controller.errors import BadRequest
from controller.services import deploying
from controller.settings import Settings
from tests.unit.controller.harness import Cloud


@pytest.mark.parametrize(("url", "listen"), [
    ("http://10.0.0.5:7070", "10.0.0.5:7070"),
    ("http://127.0.0.1:8080/agents/ps-00001", "127.0.0.1:8080"),
    ("http://[fd00::5]:7762/", "[fd00::5]:7762"),
])
def test_agent_config_listens_on_the_urls_host_and_port(cloud: Cloud, url: str, listen: str) -> None:
    config = deploying.agent_config(cloud.ctl, url)
    assert config["listen"] == listen
    assert config["controller_urls"] == [cloud.ctl.settings.callback_base]
    assert "token" not in config


@pytest.mark.parametrize("url", [
    "http://a{{lookup('pipe','id')}}:7171",
    "http://{{lookup('pipe','id')}}@10.0.0.5:7762",  # the netloc would have carried it into listen
    "http://10.0.0.5",
])
def test_agent_config_refuses_a_stored_url_the_api_would_refuse(cloud: Cloud, url: str) -> None:
    with pytest.raises(BadRequest) as e:
        deploying.agent_config(cloud.ctl, url)
    assert e.value.details["field"] == "agentUrl"


def test_deploy_role_refuses_an_address_that_reads_as_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    def deploy_agent(*_: Any, **__: Any) -> Any:
        raise AssertionError("deployed")

    monkeypatch.setattr("controller.deploy.deploy_agent", deploy_agent)
    with pytest.raises(BadRequest, match="refusing to deploy"):
        deploying.deploy_role(None, DeployTarget("-oProxyCommand=x"), "kvmagent", {},  # type: ignore[arg-type]
                              (0.0, 100.0))


def test_default_agent_urls_bracket_ipv6_and_use_the_roles_ports() -> None:
    from controller.deploy import AGENT_ROLES
    from controller.services.deploying import DEFAULT_PORTS, default_agent_url

    assert DEFAULT_PORTS == AGENT_ROLES
    assert default_agent_url("10.0.0.5", "kvmagent") == "http://10.0.0.5:7070"
    assert default_agent_url("fd00::5", "storageagent") == "http://[fd00::5]:7071"
    assert default_agent_url("host-a.example", "sftpbackup") == "http://host-a.example:7171"


def test_agents_admit_callbacks_from_every_node_up_and_the_operators_urls(cloud: Cloud) -> None:
    with cloud.ctl.db.write() as s:
        s.add(ControllerNode(node_id="b", url="http://10.0.0.12:8080", state="up"))
        s.add(ControllerNode(node_id="c", url="http://10.0.0.13:8080", state="lost"))
    cloud.ctl.settings = cloud.ctl.settings.model_copy(
        update={"agent_controller_urls": ["https://kvmcloud.example/", "http://10.0.0.12:8080"]})
    config = deploying.agent_config(cloud.ctl, "http://10.0.0.5:7070")
    assert config["controller_urls"] == [cloud.ctl.settings.callback_base, "http://10.0.0.12:8080",
                                         "https://kvmcloud.example"]
    with pytest.raises(ValueError, match="agent_controller_urls"):
        Settings(agent_controller_urls=["ftp://x"])
