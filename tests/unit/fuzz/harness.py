"""Property-based fuzzing of an in-process API from its own OpenAPI document.

schemathesis turns each operation of the document into a hypothesis strategy
of requests (path parameters, query, headers, body), both ones that fit the
schema (positive) and ones that break it (negative); every response must
hold to the error contract:

- never a 5xx, and never traceback text;
- every 4xx is JSON with ``error.code`` and ``error.message``; a 400 names the
  offending field in ``details`` and in the message;
- a request without the right bearer token is a 401 (a public path aside).

Runs are bounded and derandomized so CI repeats them exactly;
``KVMCLOUD_FUZZ_EXAMPLES`` raises the examples per operation for a long local run.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from agentcore.errors import ProcessFailed

EXAMPLES = int(os.environ.get("KVMCLOUD_FUZZ_EXAMPLES", "6"))
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/', "werkzeug.exceptions")

#: each operation, run alone: derandomized, no example database, no deadline (2 shared cores)
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


@contextmanager
def no_processes() -> Iterator[None]:
    """Refuse to start any process while fuzzing (the tests run as root on a shared host).

    The refusal is a :class:`ProcessFailed`, which a command reports as its
    own failure, exactly as it would a tool that is not installed.
    """
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ProcessFailed("processes are not started while fuzzing", argv=[str(args[0])[:80]])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess, "Popen", refuse)
        yield


@dataclass
class Api:
    """One API under fuzzing: its schema (bound to the WSGI app) and how to judge a reply."""

    name: str
    schema: Any
    token: str
    #: paths served without a token
    public: frozenset[str] = frozenset()
    #: extra judgement of a reply to an authenticated request (None: fine)
    judge: Callable[[str, int, Any], str | None] | None = None
    #: path → values of its ``{uuid}`` worth trying besides generated ones (rows that exist)
    known: Callable[[str], list[str]] | None = None
    failures: list[str] = field(default_factory=list)
    #: (label, status, error code) -> count, to see what the fuzzing reached
    seen: dict[tuple[str, int, str], int] = field(default_factory=dict)

    @classmethod
    def from_app(cls, name: str, app: Any, doc_path: str, token: str, **kw: Any) -> Api:
        return cls(name, schemathesis.openapi.from_wsgi(doc_path, app), token, **kw)

    def operations(self) -> list[Any]:
        return [r.ok() for r in self.schema.get_all_operations()]

    # -- the contract ---------------------------------------------------------

    def verdict(self, label: str, sent_token: str | None, status: int, text: str,
                content_type: str) -> str | None:
        """Why this reply breaks the contract, or None."""
        for marker in TRACEBACK_MARKERS:
            if marker in text:
                return f"traceback text in the reply: {text[:300]!r}"
        if status >= 500:
            return f"HTTP {status}: {text[:300]!r}"
        path = label.split(" ", 1)[1]
        authed = sent_token == f"Bearer {self.token}" or path in self.public
        if not authed and status != 401:
            return f"HTTP {status} without a valid token (expected 401)"
        if path == "/metrics" and status == 200:
            return None
        if "json" not in content_type:
            return f"HTTP {status} answered {content_type!r}, not JSON: {text[:200]!r}"
        try:
            body = json.loads(text) if text else None
        except ValueError:
            return f"HTTP {status} with a body that is not JSON: {text[:200]!r}"
        if 400 <= status < 500:
            return _error_verdict(status, body)
        if self.judge is not None:
            return self.judge(path, status, body)
        return None

    # -- running --------------------------------------------------------------

    def fuzz(self, operation: Any, mode: GenerationMode, *, with_token: bool = True,
             examples: int = EXAMPLES) -> None:
        """Send ``examples`` generated requests to one operation; record the first failure."""
        label = operation.label
        headers = {"Authorization": f"Bearer {self.token}"} if with_token else {}

        strategy = operation.as_strategy(generation_mode=mode)
        if self.known is not None and "{uuid}" in operation.path:
            strategy = st.one_of(strategy, *(
                operation.as_strategy(generation_mode=mode, path_parameters={"uuid": u})
                for u in self.known(operation.path)))

        @settings(SETTINGS, max_examples=examples)
        @given(case=strategy)
        def run(case: Any) -> None:
            if not with_token:
                (case.headers or {}).pop("Authorization", None)
            try:
                r = case.call(headers=headers)
            except Exception as e:  # the app raised through the WSGI layer: a 500 to a client
                raise AssertionError(f"{label}: the app raised {type(e).__name__}: {e}\n"
                                     f"  reproduce: {case.as_curl_command()}") from None
            sent = r.request.headers.get("Authorization")
            content_type = (r.headers.get("content-type") or [""])[0]
            self._count(label, r.status_code, r.text)
            why = self.verdict(label, sent, r.status_code, r.text, content_type)
            assert why is None, f"{label}: {why}\n  reproduce: {case.as_curl_command()}"

        try:
            run()
        except Unsatisfiable:  # nothing to break: no parameters and no body (GET /healthz)
            if mode is not GenerationMode.NEGATIVE:
                raise
        except AssertionError as e:
            self.failures.append(str(e).splitlines()[0] + "\n" + "\n".join(str(e).splitlines()[1:3]))

    def _count(self, label: str, status: int, text: str) -> None:
        try:
            body = json.loads(text)
            code = str(body["error"]["code"]) if body.get("error") else "-"
        except (ValueError, TypeError, KeyError, AttributeError):
            code = "?"
        if os.environ.get("FUZZ_DEBUG") and status == 400:
            print(label, text[:200])
        key = (label, status, code)
        self.seen[key] = self.seen.get(key, 0) + 1

    def fuzz_all(self, mode: GenerationMode, *, with_token: bool = True, examples: int = EXAMPLES,
                 skip: Callable[[str], bool] = lambda label: False) -> None:
        for op in self.operations():
            if not skip(op.label):
                self.fuzz(op, mode, with_token=with_token, examples=examples)

    def assert_clean(self) -> None:
        assert not self.failures, f"{self.name}: {len(self.failures)} operation(s) broke the contract:\n" + \
            "\n".join(self.failures)


def _error_verdict(status: int, body: Any) -> str | None:
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict) or not err.get("code") or not err.get("message"):
        return f"HTTP {status} without error.code and error.message: {body!r:.300}"
    if status != 400:
        return None
    details = err.get("details") or {}
    fields = details.get("fields") or ([{"field": details["field"]}] if details.get("field") else [])
    if not fields:
        return f"HTTP 400 that names no field: {body!r:.300}"
    first = str(fields[0]["field"])
    if first.split(".", maxsplit=1)[0] not in err["message"]:
        return f"HTTP 400 whose message does not name its field {first!r}: {err['message']!r:.300}"
    return None
