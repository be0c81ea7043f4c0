"""Agent protocol benchmark: async accept rate and callback round trip of a no-op
command at concurrency 1, 16 and 64, beside a bare Flask endpoint under the same
gunicorn settings, measured in the same run. Also checks that 10,000 async
commands at concurrency 64 lose no reply.

The load generator and the callback receiver run in their own processes so the
measured server keeps its core.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.bench.common import Result, percentile, write
from tests.support.agents import TOKEN, AgentProcess, free_port, python_agent, wait_until

CONCURRENCY = [(1, 1000), (16, 4000), (64, 10000)]


def _receiver(port: int, ready: Any) -> None:
    times: dict[str, float] = {}
    lock = threading.Lock()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(n)
            if self.headers.get("kind") == "reply":
                with lock:
                    times[self.headers["taskuuid"]] = time.time()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            with lock:
                body = json.dumps(times).encode()
                if self.path == "/reset":
                    times.clear()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", port), H)
    srv.daemon_threads = True
    ready.set()
    srv.serve_forever()


def _load(port: int, path: str, n: int, concurrency: int, headers: dict[str, str], callback: str | None,
          out: Any) -> None:
    """Send n POSTs with `concurrency` keep-alive connections; report per-request send times."""
    sent: dict[str, float] = {}
    codes: list[int] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            tid = str(uuid.uuid4())
            h = {"Content-Type": "application/json", **headers, "taskuuid": tid}
            if callback:
                h["callbackurl"] = callback
            t0 = time.time()
            conn.request("POST", path, body=b"{}", headers=h)
            resp = conn.getresponse()
            resp.read()
            with lock:
                sent[tid] = t0
                codes.append(resp.status)
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    out.put({"elapsed": elapsed, "sent": sent, "codes": codes})


def run_load(port: int, path: str, n: int, c: int, headers: dict[str, str], callback: str | None) -> dict[str, Any]:
    q: Any = mp.Queue()
    p = mp.Process(target=_load, args=(port, path, n, c, headers, callback, q))
    p.start()
    res = q.get()
    p.join()
    return dict(res)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    rport = free_port()
    ready = mp.Event()
    receiver = mp.Process(target=_receiver, args=(rport, ready), daemon=True)
    receiver.start()
    ready.wait(10)
    rurl = f"http://127.0.0.1:{rport}"
    agent = AgentProcess(python_agent("tests.integration.agentcore.testagent"), work,
                         controller_urls=[rurl], extra={"workers": 8, "log_level": "WARNING"}).start()
    bport = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "tests.bench.bare_app", f"127.0.0.1:{bport}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _ok(f"http://127.0.0.1:{bport}/healthz"), what="bare app")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    results: list[Result] = []
    try:
        run_load(agent.port, "/test/noop", 300, 8, auth, rurl + "/cb")  # warm up
        run_load(bport, "/noop", 300, 8, {}, None)
        for c, n in CONCURRENCY:
            httpx.get(rurl + "/reset")
            bare_res = run_load(bport, "/noop", n, c, {}, None)
            agent_res = run_load(agent.port, "/test/noop", n, c, auth, rurl + "/cb")
            assert all(code == 202 for code in agent_res["codes"]), "agent refused commands"
            # wait for every reply to arrive (the no-loss check)
            deadline = time.time() + 120
            while True:
                got = httpx.get(rurl + "/stats", timeout=30).json()
                if len(got) >= n or time.time() > deadline:
                    break
                time.sleep(0.5)
            sent = agent_res["sent"]
            rtts = [1000 * (got[t] - sent[t]) for t in sent if t in got]
            lost = n - sum(1 for t in sent if t in got)
            rate = n / agent_res["elapsed"]
            bare_rate = n / bare_res["elapsed"]
            results += [
                Result.against(f"async accept rate, concurrency {c}", round(rate, 1), "commands/s", "higher",
                               f"bare Flask endpoint rate, concurrency {c}", round(bare_rate, 1)),
                Result(f"callback round trip p50, concurrency {c}", round(percentile(rtts, 50), 2), "ms", "lower"),
                Result(f"callback round trip p99, concurrency {c}", round(percentile(rtts, 99), 2), "ms", "lower"),
                Result(f"replies lost of {n} async commands, concurrency {c}", float(lost), "replies", "lower"),
            ]
    finally:
        agent.stop()
        bare.terminate()
        bare.wait(10)
        receiver.terminate()
    write("agent_protocol", results, command="make bench (BENCH=agent_protocol)")


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
