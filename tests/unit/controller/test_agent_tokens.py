"""Per-agent tokens: the one a deploy gave each agent is presented to it and accepted from it,
kept across controller restarts; agents not deployed by the controller share the configured one."""

from __future__ import annotations

from pathlib import Path

from controller.agent_tokens import AgentTokens, endpoint
from controller.db.base import Database


def _db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path}/c.db")
    db.create_all()
    return db


def test_deployed_agents_have_their_own_token(tmp_path: Path) -> None:
    db = _db(tmp_path)
    tokens = AgentTokens(db, shared="shared-token-0123456789")
    assert tokens.for_url("http://10.0.0.5:7070") == "shared-token-0123456789"
    assert tokens.known("http://10.0.0.5:7070") is None

    tokens.register("http://10.0.0.5:7070", "own-token-of-kvmagent-on-5", "kvmagent")
    assert tokens.for_url("http://10.0.0.5:7070/vm/start") == "own-token-of-kvmagent-on-5"
    assert tokens.for_url("http://10.0.0.6:7070") == "shared-token-0123456789"
    assert tokens.accepts("own-token-of-kvmagent-on-5") and tokens.accepts("shared-token-0123456789")
    assert not tokens.accepts("") and not tokens.accepts("own-token-of-kvmagent-on-")

    # a redeploy that changed the token: the old one is no longer accepted
    tokens.register("http://10.0.0.5:7070", "second-token-of-kvmagent-5", "kvmagent")
    assert not tokens.accepts("own-token-of-kvmagent-on-5")
    assert tokens.for_url("http://10.0.0.5:7070") == "second-token-of-kvmagent-5"

    again = AgentTokens(db, shared="shared-token-0123456789")  # a restarted controller
    assert again.known("http://10.0.0.5:7070") == "second-token-of-kvmagent-5"
    assert again.accepts("second-token-of-kvmagent-5")
    db.dispose()


def test_no_token_configured_and_none_deployed_accepts_no_agent(tmp_path: Path) -> None:
    db = _db(tmp_path)
    tokens = AgentTokens(db)
    assert not tokens.accepts("") and not tokens.accepts("anything")
    tokens.register("http://h1:7171", "own-token-of-the-store-agent", "sftpbackup")
    assert tokens.accepts("own-token-of-the-store-agent") and not tokens.accepts("anything-else")
    assert endpoint("HTTP://H1:7171/backup/connect") == "h1:7171"
    db.dispose()


def test_a_token_is_accepted_for_its_own_agents_only(tmp_path: Path) -> None:
    db = _db(tmp_path)
    tokens = AgentTokens(db, shared="shared-token-0123456789")
    tokens.register("http://10.0.0.5:7070", "own-token-of-kvmagent-on-5", "kvmagent")
    tokens.register("http://10.0.0.6:7070", "own-token-of-kvmagent-on-6", "kvmagent")
    assert tokens.accepts_for("own-token-of-kvmagent-on-5", ["http://10.0.0.5:7070"])
    assert not tokens.accepts_for("own-token-of-kvmagent-on-5", ["http://10.0.0.6:7070"])
    assert tokens.accepts_for("own-token-of-kvmagent-on-5", ["http://10.0.0.6:7070",
                                                            "http://10.0.0.5:7070/x"])
    # the shared token stands for the agents that have none of their own, and for no other
    assert tokens.accepts_for("shared-token-0123456789", ["http://10.0.0.7:7070"])
    assert not tokens.accepts_for("shared-token-0123456789", ["http://10.0.0.5:7070"])
    assert not tokens.accepts_for("", ["http://10.0.0.7:7070"]) and not tokens.accepts_for(
        "own-token-of-kvmagent-on-5", [])
    assert tokens.owner("own-token-of-kvmagent-on-6") == "10.0.0.6:7070"
    assert tokens.owner("shared-token-0123456789") == "shared"
    assert tokens.owner("nobody's") == "unknown"
    db.dispose()
