"""Fixtures of the kvmagent unit tests: an in-process agent on libvirt's test driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentcore.serve import build
from kvmagent.app import make_plugins
from kvmagent.config import KvmAgentConfig
from kvmagent.paths import set_storage_roots

TOKEN = "unit-token-0123456789"


@pytest.fixture(autouse=True)
def _no_storage_roots() -> Iterator[None]:
    """Storage roots are process-wide: every test starts and ends without them."""
    set_storage_roots(())
    yield
    set_storage_roots(())


class Client:
    """The in-process agent's Flask test client, with the bearer token."""

    def __init__(self, flask_client: Any) -> None:
        self.c = flask_client

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        r = self.c.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        return r.status_code, r.get_json()


@pytest.fixture
def test_agent(tmp_path: Path) -> Iterator[tuple[Client, Any]]:
    """The kvmagent with every plugin, on ``test:///default`` (domain type 'test')."""
    config = KvmAgentConfig(token=TOKEN, state_dir=tmp_path / "state", libvirt_uri="test:///default",
                            storage_roots=[tmp_path / "ps"], console_dir=tmp_path / "console")
    plugins = make_plugins(config, events=False)
    host = plugins[0].host  # type: ignore[attr-defined]
    host.domain_type = "test"
    runtime, app = build("kvmagent", config, plugins)
    try:
        yield Client(app.test_client()), host
    finally:
        runtime.stop()
