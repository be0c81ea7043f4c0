from pathlib import Path

from agentcore.journal import SCHEMA, TaskJournal
from agentcore.statedb import StateDB


def test_begin_is_idempotent_and_finish_stores_the_reply(tmp_path: Path) -> None:
    j = TaskJournal(StateDB(tmp_path / "t.db", SCHEMA))
    assert j.begin("t1", "/echo", None) is None
    existing = j.begin("t1", "/echo", None)
    assert existing is not None and existing.state == "queued"
    j.finish("t1", "succeeded", {"success": True}).result()
    rec = j.get("t1")
    assert rec is not None and rec.finished and rec.reply == {"success": True}


def test_unfinished_tasks_become_interrupted_on_recovery(tmp_path: Path) -> None:
    j = TaskJournal(StateDB(tmp_path / "t.db", SCHEMA))
    j.begin("a", "/x", "http://ctl/cb")
    j.begin("b", "/x", None)
    j.set_state("b", "running")
    j.begin("c", "/x", None)
    j.finish("c", "succeeded", {}).result()
    j2 = TaskJournal(StateDB(tmp_path / "t.db", SCHEMA))
    got = {r.task_uuid for r in j2.interrupt_unfinished({"success": False})}
    assert got == {"a", "b"}
    assert j2.get("a").state == "interrupted"  # type: ignore[union-attr]
    assert j2.get("c").state == "succeeded"  # type: ignore[union-attr]
    assert j2.prune(older_than=1e18) == 3
