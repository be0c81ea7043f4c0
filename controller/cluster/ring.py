"""A consistent hash ring over resource UUIDs: which controller node owns a resource.

Each node stands on the ring at :data:`VNODES` points (``blake2b(node#i)``); a
key belongs to the first point at or after its own hash, going round. A node
joining takes about ``1/N`` of the keys, from every other node; a node leaving
hands only its own keys on, spread over the others: every other key stays put.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

VNODES = 128
_SPACE = 1 << 64


def _point(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """An immutable ring of node ids (build a new one when membership changes)."""

    def __init__(self, nodes: Iterable[str], vnodes: int = VNODES) -> None:
        self.nodes = tuple(sorted(set(nodes)))
        self.vnodes = vnodes
        points = sorted((_point(f"{n}#{i}"), n) for n in self.nodes for i in range(vnodes))
        self._hashes = [h for h, _ in points]
        self._owners = [n for _, n in points]

    def owner(self, key: str) -> str:
        """The node owning ``key`` (a resource UUID); ValueError on an empty ring."""
        if not self._hashes:
            raise ValueError("the ring has no node")
        i = bisect.bisect_left(self._hashes, _point(key))
        return self._owners[i % len(self._owners)]

    def shares(self) -> dict[str, float]:
        """The fraction of the hash space each node owns (they sum to 1)."""
        share = dict.fromkeys(self.nodes, 0.0)
        for i, h in enumerate(self._hashes):
            prev = self._hashes[i - 1] if i else self._hashes[-1] - _SPACE
            share[self._owners[i]] += (h - prev) / _SPACE
        return share

    def skew(self) -> float:
        """The largest share over the fair one (1.0: perfectly even; 0.0 on an empty ring)."""
        shares = self.shares()
        return max(shares.values()) * len(shares) if shares else 0.0
