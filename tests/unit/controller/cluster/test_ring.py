"""The hash ring: ownership moves only for the joining or leaving node's share."""

from __future__ import annotations

import uuid

import pytest

from controller.cluster.ring import HashRing

KEYS = [uuid.UUID(int=i * 7919 + 1).hex for i in range(20000)]


def owners(ring: HashRing) -> dict[str, str]:
    return {k: ring.owner(k) for k in KEYS}


def test_a_join_moves_keys_only_to_the_new_node() -> None:
    before = owners(HashRing(["a", "b"]))
    after = owners(HashRing(["a", "b", "c"]))
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved, "the new node took nothing"
    assert {after[k] for k in moved} == {"c"}
    # about a third moves (128 vnodes: within a few points of it)
    assert 0.25 < len(moved) / len(KEYS) < 0.42


def test_a_leave_moves_only_the_leaving_nodes_keys() -> None:
    before = owners(HashRing(["a", "b", "c"]))
    after = owners(HashRing(["a", "c"]))
    for k in KEYS:
        if before[k] != "b":
            assert after[k] == before[k]
        else:
            assert after[k] in ("a", "c")


def test_shares_sum_to_one_and_match_the_keys_counted() -> None:
    ring = HashRing(["n1", "n2", "n3"])
    shares = ring.shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    counted = owners(ring)
    for node, share in shares.items():
        assert sum(1 for o in counted.values() if o == node) / len(KEYS) == pytest.approx(share, abs=0.02)


def test_skew_is_reported_and_small_with_128_vnodes() -> None:
    assert HashRing(["solo"]).skew() == pytest.approx(1.0)
    assert HashRing([]).skew() == 0.0
    skew = HashRing(["n1", "n2", "n3"]).skew()
    assert 1.0 <= skew < 1.3
    assert HashRing(["n1", "n2", "n3"], vnodes=1).skew() > skew  # why there are virtual nodes


def test_the_ring_is_the_same_whatever_the_order_nodes_are_given_in() -> None:
    assert owners(HashRing(["x", "y", "z"])) == owners(HashRing(["z", "x", "y", "x"]))


def test_an_empty_ring_owns_nothing() -> None:
    with pytest.raises(ValueError):
        HashRing([]).owner(KEYS[0])
