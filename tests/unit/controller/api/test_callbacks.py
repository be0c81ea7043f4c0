"""``POST /v1/agent-callbacks``: an agent's token answers only for the tasks sent to that agent,
and no callback is taken without an agent token, even when the controller knows none."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from controller.dispatch.transport import AgentRequest, AgentResponse, InProcessTransport
from controller.server import create_app
from controller.settings import Settings
from tests.unit.controller.harness import AGENT_TOKEN, API_TOKEN, Cloud

KVM_A, KVM_B = "http://10.7.0.1:7070", "http://10.7.0.2:7070"
TOKEN_A, TOKEN_B = "own-token-of-the-kvmagent-on-a", "own-token-of-the-kvmagent-on-b"


def _accepting(_req: AgentRequest) -> AgentResponse:
    return AgentResponse(202, {})  # takes the task; its reply comes by callback, later


def _callback(client: Any, task: str, token: str | None, body: dict[str, Any]) -> Any:
    headers = {"taskuuid": task, **({"Authorization": f"Bearer {token}"} if token else {})}
    return client.post("/v1/agent-callbacks", json=body, headers=headers)


def test_a_callback_is_taken_only_with_the_token_of_the_agent_the_task_went_to(
        cloud: Cloud, caplog: pytest.LogCaptureFixture) -> None:
    for url, token in ((KVM_A, TOKEN_A), (KVM_B, TOKEN_B)):
        cloud.ctl.agent_tokens.register(url, token, "kvmagent")  # as a deploy does
        cloud.transport.register(url, _accepting)
    call = cloud.ctl.dispatcher.call(KVM_B, "/vm/start", {}, timeout=60)
    forged = {"success": True, "forged": True}

    with caplog.at_level(logging.WARNING, logger="controller.api.callbacks"):
        for token in (TOKEN_A, AGENT_TOKEN):  # another agent's own, and the shared one B lacks
            r = _callback(cloud.client, call.task_uuid, token, forged)
            assert r.status_code == 403, r.get_data(as_text=True)
            assert r.get_json()["error"]["code"] == "FORBIDDEN"
    assert not call.done()
    assert "10.7.0.1:7070" in caplog.text and call.task_uuid in caplog.text
    assert TOKEN_A not in caplog.text and AGENT_TOKEN not in caplog.text

    r = _callback(cloud.client, call.task_uuid, TOKEN_B, {"success": True, "from": "b"})
    assert r.status_code == 200 and r.get_json() == {"accepted": True}
    assert call.result(5)["from"] == "b"
    # a token of no agent at all, and an API token, stay a 401
    assert _callback(cloud.client, call.task_uuid, "nobody's", forged).status_code == 401
    assert _callback(cloud.client, call.task_uuid, API_TOKEN, forged).status_code == 401


def test_agents_need_a_token_even_when_the_controller_knows_none(tmp_path: Path) -> None:
    transport = InProcessTransport({KVM_A: _accepting})
    app = create_app(Settings(db_url=f"sqlite:///{tmp_path}/c.db", api_tokens=[API_TOKEN],
                              tracker=False), transport)
    ctl = app.extensions["kvmcloud"]
    try:
        client = app.test_client(use_cookies=False)
        call = ctl.dispatcher.call(KVM_A, "/vm/start", {}, timeout=60)
        for token in (None, "", "anything"):
            r = _callback(client, call.task_uuid, token, {"success": True})
            assert r.status_code == 401, (token, r.get_data(as_text=True))
        assert not call.done()
        r = client.post(f"/v1/agent-events/{'0' * 32}", json={"vmUuid": "v", "state": "Stopped"})
        assert r.status_code == 401
    finally:
        ctl.close()
