"""A daemon thread a controller part runs from ``start`` until ``stop``."""

from __future__ import annotations

import threading
from typing import ClassVar


class Background:
    """Runs ``_loop`` in one daemon thread; ``_loop`` returns once ``_stop`` is set."""

    thread_name: ClassVar[str] = "background"
    #: how long ``stop`` waits for the loop to return
    join_timeout: ClassVar[float] = 30.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.join_timeout)

    def _loop(self) -> None:
        raise NotImplementedError
