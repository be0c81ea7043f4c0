from pathlib import Path

import pytest

from agentcore.urlpolicy import UrlPolicy


@pytest.mark.parametrize(("url", "ok"), [
    ("http://ctl:8080/v1/agent-callbacks", True),
    ("http://ctl:8080", True),
    ("http://CTL:8080/v1/x", True),
    ("http://ctl:8080.evil.com/v1", False),
    ("http://ctl:80800/v1", False),
    ("https://ctl:8080/v1", False),
    ("http://ctl:8081/v1", False),
    ("http://user:pw@ctl:8080/v1", False),
    ("ftp://ctl:8080/v1", False),
    ("not a url", False),
])
def test_only_controller_prefixes_are_allowed(url: str, ok: bool) -> None:
    assert UrlPolicy(["http://ctl:8080"]).allows(url) is ok


def test_path_prefix_matches_on_a_boundary() -> None:
    p = UrlPolicy(["http://ctl:8080/v1"])
    assert p.allows("http://ctl:8080/v1/agent-callbacks")
    assert not p.allows("http://ctl:8080/v10/x")
    assert not p.allows("http://ctl:8080/other")


def test_connected_urls_persist(tmp_path: Path) -> None:
    store = tmp_path / "urls.json"
    UrlPolicy([], store).add("http://10.0.0.5:8080/v1")
    assert UrlPolicy([], store).allows("http://10.0.0.5:8080/v1/agent-events/h1")
    with pytest.raises(ValueError):
        UrlPolicy([], store).add("file:///etc")
