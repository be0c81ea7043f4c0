"""JSON logs with the task id on every line and secrets masked."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

current_task: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_task", default=None)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_SECRET_FIELD = re.compile(
    r"""(['"]?\b(?:password|passwd|secret|token|key|keyring|authorization)['"]?\s*[:=]\s*)"""
    r"""('[^']*'|"[^"]*"|[^\s,}]+)""",
    re.IGNORECASE,
)


def add_secret(value: str) -> None:
    """Mask ``value`` wherever it appears in a log line."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def mask(text: str) -> str:
    for s in _secrets:
        if s in text:
            text = text.replace(s, "***")
    return _SECRET_FIELD.sub(r"\1***", text)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, task, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "task": getattr(record, "task", None) or current_task.get(),
            "message": mask(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "INFO", log_file: Path | None = None) -> None:
    """Route the root logger to JSON lines on stderr or ``log_file``."""
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "urllib3", "paramiko.transport"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
