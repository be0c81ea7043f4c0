"""Per-resource serialisation without parking worker threads.

A task that names resources (``vm:<uuid>``, ``volume:<path>``) runs only when
none of them is held. A task that cannot run yet is parked, not blocked on a
lock, so a burst of commands on one VM never starves the executor; parked
tasks start in arrival order as resources free up.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class ResourceLocks(Generic[T]):
    """Admits items whose keys are all free; parks the rest in arrival order."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._parked: list[tuple[T, frozenset[str]]] = []
        self._mu = threading.Lock()

    def admit(self, item: T, keys: list[str]) -> bool:
        """Take ``keys`` for ``item`` and return True, or park it and return False.

        An item also waits behind an earlier parked item that wants one of its
        keys, so arrival order holds per resource.
        """
        ks = frozenset(keys)
        if not ks:
            return True
        with self._mu:
            if self._free(ks, upto=len(self._parked)):
                self._held |= ks
                return True
            self._parked.append((item, ks))
            return False

    def release(self, keys: list[str]) -> list[T]:
        """Free ``keys``; return the parked items that now hold theirs."""
        if not keys:
            return []
        runnable: list[T] = []
        with self._mu:
            self._held -= set(keys)
            i = 0
            while i < len(self._parked):
                item, ks = self._parked[i]
                if self._free(ks, upto=i):
                    self._held |= ks
                    runnable.append(item)
                    del self._parked[i]
                else:
                    i += 1
        return runnable

    def withdraw(self, item: T) -> bool:
        """Remove a parked item (cancelled before it ran)."""
        with self._mu:
            for i, (it, _) in enumerate(self._parked):
                if it == item:
                    del self._parked[i]
                    return True
        return False

    def _free(self, ks: frozenset[str], upto: int) -> bool:
        if ks & self._held:
            return False
        return all(not (ks & other) for _, other in self._parked[:upto])

    def held(self) -> set[str]:
        with self._mu:
            return set(self._held)
