from pathlib import Path

import pytest
from pydantic import ValidationError

from agentcore.config import AgentConfig


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "a.toml"
    p.write_text(text)
    return p


def test_loads_toml_with_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, f'listen = "127.0.0.1:7070"\ntoken = "0123456789abcdef0"\nstate_dir = "{tmp_path}"\n')
    monkeypatch.setenv("KVMCLOUD_LISTEN", "0.0.0.0:7171")
    monkeypatch.setenv("KVMCLOUD_CONTROLLER_URLS", '["http://ctl:8080/"]')
    c = AgentConfig.load(p)
    assert c.port == 7171 and c.host == "0.0.0.0"
    assert c.controller_urls == ["http://ctl:8080"]
    assert "0123456789abcdef0" not in repr(c)


@pytest.mark.parametrize(("line", "field"), [
    ('listen = "nohost"', "listen"),
    ('token = "short"', "token"),
    ('state_dir = "relative/dir"', "state_dir"),
    ('controller_urls = ["ftp://x"]', "controller_urls"),
    ('bogus = 1', "bogus"),
])
def test_invalid_config_names_the_field(tmp_path: Path, line: str, field: str) -> None:
    base = {"listen": '"127.0.0.1:1"', "token": '"0123456789abcdef0"', "state_dir": f'"{tmp_path}"'}
    key = line.split(" = ", maxsplit=1)[0]
    base[key] = line.split(" = ", 1)[1]
    p = write(tmp_path, "".join(f"{k} = {v}\n" for k, v in base.items()))
    with pytest.raises(ValidationError) as e:
        AgentConfig.load(p)
    assert field in str(e.value)
