"""Start real agent processes (gunicorn on loopback) and a real callback receiver."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

TOKEN = "test-token-0123456789abcdef"


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    Ports from the ephemeral range can be taken by outgoing connections while a
    test server is down (even by a TCP self-connect to that very port), so a
    server that must come back on the same port picks from below it.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randint(max(1024, low - 12000), low - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def wait_until(pred: Any, timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def write_config(path: Path, **fields: Any) -> Path:
    lines = []
    for k, v in fields.items():
        if isinstance(v, str | Path):
            lines.append(f"{k} = {json.dumps(str(v))}")
        elif isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, list):
            lines.append(f"{k} = {json.dumps([str(x) for x in v])}")
        else:
            lines.append(f"{k} = {v}")
    path.write_text("\n".join(lines) + "\n")
    return path


class AgentProcess:
    """A real agent: ``python -m <module> serve --config FILE`` under gunicorn."""

    def __init__(self, argv_prefix: Sequence[str], workdir: Path, *, token: str = TOKEN,
                 controller_urls: Sequence[str] = (), extra: dict[str, Any] | None = None,
                 port: int | None = None) -> None:
        self.argv_prefix = list(argv_prefix)
        self.workdir = workdir
        self.token = token
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = workdir / "state"
        self.config_path = write_config(
            workdir / "agent.toml",
            listen=f"127.0.0.1:{self.port}", token=token, state_dir=self.state_dir,
            controller_urls=list(controller_urls), log_file=workdir / "agent.log",
            **(extra or {}),
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60,
                                   headers={"Authorization": f"Bearer {token}"})

    def start(self, timeout: float = 30) -> AgentProcess:
        out = open(self.workdir / "stdout.log", "ab")
        self.proc = subprocess.Popen(
            [*self.argv_prefix, "serve", "--config", str(self.config_path)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited with {self.proc.returncode}: "
                    + (self.workdir / "stdout.log").read_text()[-3000:]
                )
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(healthy, timeout, what="agent /healthz")
        return self

    def pids(self) -> list[int]:
        """The gunicorn master and its worker."""
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill9(self) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill9()

    def post(self, path: str, body: Any = None, **headers: str) -> httpx.Response:
        return self.client.post(path, json=body if body is not None else {}, headers=headers)

    def call(self, path: str, body: Any = None, **headers: str) -> dict[str, Any]:
        """A synchronous command; returns the reply."""
        r = self.post(path, body, **headers)
        assert r.status_code == 200, r.text
        return dict(r.json())


def python_agent(module: str) -> list[str]:
    return [sys.executable, "-m", module]


class CallbackReceiver:
    """A real HTTP server that records every POST; can go down and come back."""

    def __init__(self, port: int | None = None, status: int = 200) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.status = status
        self.posts: list[dict[str, Any]] = []
        self._cv = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> CallbackReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n) or b"null")
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._cv:
                    receiver.posts.append({"path": self.path, "headers": headers, "body": body})
                    receiver._cv.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def replies(self) -> dict[str, dict[str, Any]]:
        with self._cv:
            return {p["headers"]["taskuuid"]: p["body"] for p in self.posts
                    if p["headers"].get("kind") == "reply"}

    def wait_reply(self, task_uuid: str, timeout: float = 30) -> dict[str, Any]:
        end = time.monotonic() + timeout
        with self._cv:
            while True:
                for p in self.posts:
                    if p["headers"].get("taskuuid") == task_uuid and p["headers"].get("kind") == "reply":
                        return dict(p["body"])
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no reply for {task_uuid} within {timeout}s")
                self._cv.wait(left)
