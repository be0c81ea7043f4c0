"""The callback outbox: replies and reports that survive restarts.

Every reply to an asynchronous command and every report the agent pushes is
first written to a SQLite outbox, then POSTed by a few sender threads. A
failed POST is retried with jittered exponential backoff (tenacity's
``wait_random_exponential``), per destination: while a controller is down its
items wait together instead of each hammering it. Items older than
``max_age`` are dropped with an error log. Progress events are transient: sent
once, best effort, never stored.

Delivery is at least once: an item delivered just before a crash may be sent
again after the restart, so receivers treat a repeated ``taskuuid`` as a no-op.
"""

from __future__ import annotations

import heapq
import json
import logging
import sqlite3
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlsplit

import tenacity

from agentcore.httppost import PostConnection
from agentcore.statedb import StateDB

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    url       TEXT NOT NULL,
    headers   TEXT NOT NULL,
    body      BLOB NOT NULL,
    attempts  INTEGER NOT NULL DEFAULT 0,
    created   REAL NOT NULL
);
"""

# Delivered items are forgotten FLUSH_BATCH at a time, or FLUSH_DELAY seconds after the
# first: a transaction per reply would cost as much as storing it, and a crash in between
# only repeats a delivery, which at-least-once allows.
FLUSH_BATCH = 64
FLUSH_DELAY = 0.5


class _Flush:
    """The job that tells a sender to forget the delivered items."""


_FLUSH = _Flush()

_backoff = tenacity.wait_random_exponential(multiplier=0.25, max=15)


def backoff_seconds(attempt: int) -> float:
    """Jittered exponential wait before retry number ``attempt`` (1-based)."""
    state = cast(tenacity.RetryCallState, SimpleNamespace(attempt_number=attempt))
    return float(_backoff(state))


class DeliveryError(Exception):
    """The controller answered with a status worth retrying."""


@dataclass(order=True)
class _Item:
    due: float
    id: int = field(compare=True)
    url: str = field(compare=False)
    headers: dict[str, str] = field(compare=False)
    body: bytes = field(compare=False)
    attempts: int = field(compare=False, default=0)
    created: float = field(compare=False, default=0.0)


class CallbackOutbox:
    """Durable, retrying delivery of POSTs to the controller."""

    def __init__(
        self,
        db: StateDB,
        *,
        senders: int = 4,
        max_age: float = 7 * 24 * 3600,
        auth_token: str | None = None,
        on_retry: Callable[[], None] | None = None,
        on_result: Callable[[str], None] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._db = db
        self._cv = threading.Condition()
        self._heap: list[_Item] = []
        self._transient: deque[tuple[str, dict[str, str], bytes]] = deque(maxlen=1000)
        self._origin_retry_at: dict[str, float] = {}
        self._origin_attempts: dict[str, int] = {}
        self._in_flight = 0
        self._max_age = max_age
        self._auth = {"Authorization": f"Bearer {auth_token}"} if auth_token else {}
        self._on_retry = on_retry
        self._on_result = on_result
        self._timeout = timeout
        self._local = threading.local()
        self._delivered: list[int] = []
        self._flush_at = 0.0
        self._senders = senders
        self._threads: list[threading.Thread] = []
        self._stopping = False
        rows = db.read(lambda c: c.execute("SELECT id, url, headers, body, attempts, created FROM outbox").fetchall())
        for row in rows:
            heapq.heappush(
                self._heap,
                _Item(time.monotonic(), row[0], row[1], json.loads(row[2]), row[3], row[4], row[5]),
            )

    def start(self) -> None:
        for i in range(self._senders):
            t = threading.Thread(target=self._sender, name=f"outbox-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 2.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout)
        self._flush_delivered()

    def pending(self) -> int:
        with self._cv:
            return len(self._heap) + self._in_flight

    def insert_op(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> Callable[[sqlite3.Connection], _Item]:
        """The write that stores a POST (to combine with others in one transaction)."""
        data = json.dumps(body).encode()
        now = time.time()

        def op(c: sqlite3.Connection) -> _Item:
            cur = c.execute(
                "INSERT INTO outbox(url, headers, body, created) VALUES (?, ?, ?, ?)",
                (url, json.dumps(headers), data, now),
            )
            assert cur.lastrowid is not None
            return _Item(time.monotonic(), cur.lastrowid, url, headers, data, 0, now)

        return op

    def schedule(self, item: _Item) -> None:
        """Hand a stored item to the senders."""
        with self._cv:
            item.due = time.monotonic()
            heapq.heappush(self._heap, item)
            self._cv.notify()

    def enqueue(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        """Store a POST durably, then schedule it for delivery."""
        self._db.write(self.insert_op(url, body, headers)).add_done_callback(
            lambda f: self.schedule(f.result()) if f.exception() is None else None
        )

    def send_transient(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        """Send once, best effort (progress events); dropped if the queue is full."""
        with self._cv:
            self._transient.append((url, headers, json.dumps(body).encode()))
            self._cv.notify()

    # -- sender ---------------------------------------------------------

    def _next(self) -> _Item | tuple[str, dict[str, str], bytes] | _Flush | None:
        with self._cv:
            while not self._stopping:
                if self._transient:
                    return self._transient.popleft()
                now = time.monotonic()
                if self._delivered and now >= self._flush_at:
                    return _FLUSH
                if self._heap and self._heap[0].due <= now:
                    item = heapq.heappop(self._heap)
                    blocked = self._origin_retry_at.get(_origin(item.url), 0.0)
                    if blocked > now:
                        item.due = blocked
                        heapq.heappush(self._heap, item)
                        continue
                    self._in_flight += 1
                    return item
                wait = self._heap[0].due - now if self._heap else None
                if self._delivered:
                    wait = min(wait if wait is not None else FLUSH_DELAY, self._flush_at - now)
                self._cv.wait(timeout=wait)
            return None

    def _sender(self) -> None:
        while (job := self._next()) is not None:
            if isinstance(job, _Flush):
                self._flush_delivered()
                continue
            if isinstance(job, tuple):
                url, headers, body = job
                try:
                    self._post(url, headers, body)
                except (OSError, DeliveryError):
                    log.debug("transient event to %s dropped", url)
                continue
            try:
                self._deliver(job)
            finally:
                with self._cv:
                    self._in_flight -= 1

    def _connection(self, url: str) -> tuple[PostConnection, str]:
        """This sender thread's keep-alive connection to the URL's origin."""
        u = urlsplit(url)
        conns: dict[str, PostConnection] = self._local.__dict__.setdefault("conns", {})
        key = f"{u.scheme}://{u.netloc}"
        conn = conns.get(key)
        if conn is None:
            context = ssl.create_default_context() if u.scheme == "https" else None
            conn = PostConnection(u.scheme, u.hostname or "", u.port, timeout=self._timeout, context=context)
            conns[key] = conn
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        return conn, path

    def _post(self, url: str, headers: dict[str, str], body: bytes) -> None:
        all_headers = {"Content-Type": "application/json", **self._auth, **headers}
        for attempt in (1, 2):  # a keep-alive connection the server closed is retried once
            conn, path = self._connection(url)
            try:
                status = conn.post(path, all_headers, body)
            except OSError:
                if attempt == 2:
                    raise
                continue
            if status >= 500 or status in (408, 429):
                raise DeliveryError(f"HTTP {status}")
            return

    def _deliver(self, item: _Item) -> None:
        origin = _origin(item.url)
        try:
            self._post(item.url, item.headers, item.body)
        except (OSError, DeliveryError) as e:
            self._retry_later(item, origin, e)
            return
        except ValueError as e:  # a URL or header no HTTP request can carry: never deliverable
            self._drop(item, e)
            return
        with self._cv:
            self._origin_attempts.pop(origin, None)
            self._origin_retry_at.pop(origin, None)
            if not self._delivered:
                self._flush_at = time.monotonic() + FLUSH_DELAY
            self._delivered.append(item.id)
            flush = len(self._delivered) >= FLUSH_BATCH
        if flush:
            self._flush_delivered()
        if self._on_result:
            self._on_result("delivered")

    def _flush_delivered(self) -> None:
        """Forget delivered items, many per transaction."""
        with self._cv:
            ids, self._delivered = self._delivered, []
        if not ids:
            return
        self._db.write(lambda c: c.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids]))

    def _drop(self, item: _Item, err: Exception) -> None:
        log.error("dropping callback to %s after %d attempts: %s", item.url, item.attempts, err)
        self._db.write(lambda c: c.execute("DELETE FROM outbox WHERE id=?", (item.id,)))
        if self._on_result:
            self._on_result("dropped")

    def _retry_later(self, item: _Item, origin: str, err: Exception) -> None:
        item.attempts += 1
        if time.time() - item.created > self._max_age:
            self._drop(item, err)
            return
        if self._on_retry:
            self._on_retry()
        with self._cv:
            n = self._origin_attempts.get(origin, 0) + 1
            self._origin_attempts[origin] = n
            wait = backoff_seconds(n)
            due = time.monotonic() + wait
            self._origin_retry_at[origin] = max(self._origin_retry_at.get(origin, 0.0), due)
            item.due = due
            heapq.heappush(self._heap, item)
            self._cv.notify()
        attempts = item.attempts
        self._db.write(lambda c: c.execute("UPDATE outbox SET attempts=? WHERE id=?", (attempts, item.id)))
        log.info("callback to %s failed (%s); retry in %.1fs", item.url, err, wait)


def _origin(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}"
