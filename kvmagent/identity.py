"""Who this host is to the controller, kept in the agent's state directory.

``/host/connect`` writes it; a restarted agent reads it back, so it still
answers ``/host/ping`` with its host UUID and still reports events.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Identity:
    host_uuid: str
    events_url: str


class IdentityStore:
    """The host identity file (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mu = threading.Lock()
        self._current: Identity | None = None
        if path.exists():
            data = json.loads(path.read_text())
            self._current = Identity(host_uuid=data["host_uuid"], events_url=data["events_url"])

    @property
    def current(self) -> Identity | None:
        with self._mu:
            return self._current

    def host_uuid(self) -> str | None:
        cur = self.current
        return cur.host_uuid if cur else None

    def save(self, identity: Identity) -> None:
        with self._mu:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(identity)))
            os.replace(tmp, self.path)
            self._current = identity
