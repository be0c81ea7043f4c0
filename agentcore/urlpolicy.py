"""Where an agent may send callbacks and reports: only to its controllers.

The allowed prefixes come from the config's ``controller_urls`` and from the
controller URLs a ``connect`` command handed over (kept in the state
directory, so a restart remembers them). A prefix matches on scheme, host and
port exactly and on a path boundary, so ``http://ctl:8080`` does not admit
``http://ctl:8080.evil`` or ``http://ctl:80800``.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit


def _parts(url: str) -> tuple[str, str, int | None, str] | None:
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname or u.username or u.password:
        return None
    return u.scheme, u.hostname.lower(), port or (443 if u.scheme == "https" else 80), u.path


@functools.lru_cache(maxsize=256)
def _cached_parts(prefix: str) -> tuple[str, str, int | None, str] | None:
    """The parts of a URL, parsed once: a controller gives the same few callback URLs
    with every command, and each is checked against every prefix."""
    return _parts(prefix)


class UrlPolicy:
    """The set of controller URL prefixes an agent may call."""

    def __init__(self, configured: list[str], store: Path | None = None) -> None:
        self._configured = [u.rstrip("/") for u in configured]
        self._store = store
        self._connected: list[str] = []
        self._lock = threading.Lock()
        if store is not None and store.exists():
            self._connected = list(json.loads(store.read_text()))
        # read on every callback URL check without the lock: replaced whole, never mutated
        self._all = tuple(self._configured + self._connected)

    def prefixes(self) -> list[str]:
        return list(self._all)

    def add(self, url: str) -> None:
        """Admit a controller URL handed over by ``connect``; persisted."""
        if _parts(url) is None:
            raise ValueError(f"not an http(s) URL: {url!r}")
        url = url.rstrip("/")
        with self._lock:
            if url in self._connected or url in self._configured:
                return
            self._connected.append(url)
            self._all = (*self._all, url)
            if self._store is not None:
                tmp = self._store.with_suffix(".tmp")
                tmp.write_text(json.dumps(self._connected))
                os.replace(tmp, self._store)

    def allows(self, url: str) -> bool:
        target = _cached_parts(url)
        if target is None:
            return False
        for prefix in self._all:
            p = _cached_parts(prefix)
            if p is None or p[:3] != target[:3]:
                continue
            base = p[3].rstrip("/")
            if target[3] == base or target[3].startswith(base + "/") or not base:
                return True
        return False
