from agentcore.locks import ResourceLocks


def test_free_keys_are_admitted_and_busy_ones_parked_in_order() -> None:
    locks: ResourceLocks[str] = ResourceLocks()
    assert locks.admit("a", ["vm:1"])
    assert not locks.admit("b", ["vm:1"])
    assert not locks.admit("c", ["vm:1", "vol:9"])
    assert locks.admit("d", ["vm:2"])
    # e wants vol:9, which c (parked earlier) also wants: e must wait behind c
    assert not locks.admit("e", ["vol:9"])
    assert locks.release(["vm:1"]) == ["b"]
    assert locks.release(["vm:1"]) == ["c"]
    assert locks.release(["vm:1", "vol:9"]) == ["e"]


def test_no_keys_never_waits_and_withdraw_removes() -> None:
    locks: ResourceLocks[str] = ResourceLocks()
    assert locks.admit("a", [])
    assert locks.admit("b", ["x"])
    assert not locks.admit("c", ["x"])
    assert locks.withdraw("c")
    assert locks.release(["x"]) == []
    assert locks.held() == set()
