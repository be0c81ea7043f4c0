"""ssh-keyscan's argv: the address comes after "--" (review finding F20)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from controller.deploy.errors import DeployError
from controller.deploy.known_hosts import KnownHosts


def test_the_address_is_never_read_as_an_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "getaddrinfo: Name or service not known\n")

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(DeployError, match="cannot reach SSH"):
        KnownHosts(tmp_path / "known_hosts").scan("-oProxyCommand=x", 22, 1.0)
    assert seen[0][0] == "ssh-keyscan"
    assert seen[0][-2:] == ["--", "-oProxyCommand=x"]
