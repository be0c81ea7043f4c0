"""The simulator's outbox: replies and events POSTed to the controller.

One aiohttp client session with a bounded keep-alive connection pool sends
every callback of every simulated agent, retrying a failed POST with the same
jittered backoff the real agents' outbox uses. Nothing is persisted: a
simulator that stops loses what it had not sent, which a controller must
survive anyway (it polls ``GET /tasks/<id>``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp

from agentcore.outbox import backoff_seconds

log = logging.getLogger(__name__)


class CallbackSender:
    """Delivers POSTs from the simulator's event loop."""

    def __init__(self, *, concurrency: int = 32, retries: int = 6, timeout: float = 30.0) -> None:
        self.concurrency = concurrency
        self.retries = retries
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self._session: aiohttp.ClientSession | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout),
            json_serialize=json.dumps,
        )

    async def close(self) -> None:
        for task in list(self._inflight):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    @property
    def pending(self) -> int:
        return len(self._inflight)

    def send(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        """Queue one POST; returns at once (must be called on the event loop)."""
        task = asyncio.get_running_loop().create_task(self._deliver(url, body, headers))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _deliver(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        assert self._session is not None, "start() the sender first"
        data = json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **headers}
        for attempt in range(1, self.retries + 1):
            try:
                async with self._session.post(url, data=data, headers=hdrs) as resp:
                    await resp.read()
                    if resp.status < 500 and resp.status not in (408, 429):
                        if resp.status >= 400:
                            log.warning("callback to %s refused with %d", url, resp.status)
                        self.sent += 1
                        return
                    reason = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError) as e:
                reason = f"{type(e).__name__}: {e}"
            if attempt < self.retries:
                self.retried += 1
                await asyncio.sleep(backoff_seconds(attempt))
        self.failed += 1
        log.warning("callback to %s dropped after %d attempts: %s", url, self.retries, reason)
