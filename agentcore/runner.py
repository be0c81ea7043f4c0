"""The argv-only process runner.

Every child runs in its own session (so its whole process tree is one process
group), always with a timeout, and with its output captured for structured
errors. When the child belongs to a task, the task's cancel and deadline kill
the group.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

from agentcore.errors import AgentError, ProcessFailed, ProcessTimeout

log = logging.getLogger(__name__)

KILL_GRACE = 1.0
STDERR_TAIL = 4000


class ProcessOwner(Protocol):
    """Who a child process belongs to: a task that may be cancelled."""

    def adopt(self, pgid: int) -> None: ...
    def release(self, pgid: int) -> None: ...
    def stop_reason(self) -> AgentError | None: ...
    def remaining(self, default: float) -> float: ...


@dataclass(frozen=True)
class ProcessResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def kill_group(pgid: int, grace: float = KILL_GRACE) -> None:
    """SIGTERM a process group, then SIGKILL whatever is left after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)


def _redact(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    owner: ProcessOwner | None = None,
    input: str | bytes | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    on_line: Callable[[str], None] | None = None,
    stdout: IO[bytes] | None = None,
    redact: Sequence[str] = (),
) -> ProcessResult:
    """Run ``argv`` and wait for it, at most ``timeout`` seconds.

    The child gets its own session; whatever it leaves behind in that process
    group when it exits is killed (a tool meant to daemonize must setsid).

    ``on_line`` receives each line of stdout as it arrives (progress parsing);
    ``stdout`` sends stdout to a binary file instead of capturing it. Raises
    :class:`ProcessFailed` on a non-zero exit when ``check``, and
    :class:`ProcessTimeout`, or the owner's stop reason (cancel, deadline),
    after killing the process group.
    """
    if isinstance(argv, str | bytes):
        raise TypeError("argv must be a list of arguments, never a shell string")
    args = tuple(os.fspath(a) for a in argv)
    if owner is not None:
        timeout = min(timeout, owner.remaining(timeout))
        reason = owner.stop_reason()
        if reason is not None:
            raise reason
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    pgid = proc.pid
    if owner is not None:
        owner.adopt(pgid)
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    readers = _start_readers(proc, out_chunks, err_chunks, on_line, data)
    try:
        _wait(proc, owner, time.monotonic() + max(timeout, 0.0), timeout, args, redact)
    finally:
        # a child that exited may have left grandchildren in its group
        if proc.returncode is not None:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for t in readers:
            t.join(timeout=2)
        if owner is not None:
            owner.release(pgid)
    out = b"".join(out_chunks).decode(errors="replace")
    err = b"".join(err_chunks).decode(errors="replace")
    result = ProcessResult(args, proc.returncode, out, err)
    if proc.returncode != 0 and owner is not None and (reason := owner.stop_reason()) is not None:
        raise reason  # killed because the task was stopped, not a tool failure
    if check and proc.returncode != 0:
        raise ProcessFailed(
            f"{os.path.basename(args[0])} exited with {proc.returncode}: "
            f"{_redact(err.strip().splitlines()[-1] if err.strip() else '', redact)}",
            argv=[_redact(a, redact) for a in args],
            returncode=proc.returncode,
            stderr=_redact(err[-STDERR_TAIL:], redact),
        )
    return result


def _wait(
    proc: subprocess.Popen[bytes],
    owner: ProcessOwner | None,
    deadline: float,
    timeout: float,
    args: tuple[str, ...],
    redact: Sequence[str],
) -> None:
    """Wait for ``proc``; kill its group on the owner's stop or the timeout.

    The exit is noticed through a pidfd, so a short tool returns as soon as it
    ends rather than at the next tick of a polling loop.
    """
    try:
        pidfd: int | None = os.pidfd_open(proc.pid)
    except OSError:
        pidfd = None
    poller = select.poll()
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    try:
        while True:
            if pidfd is not None:
                poller.poll(50)
            else:
                time.sleep(0.01)
            if proc.poll() is not None:
                return
            if owner is not None and (reason := owner.stop_reason()) is not None:
                kill_group(proc.pid)
                proc.wait()
                raise reason
            if time.monotonic() >= deadline:
                kill_group(proc.pid)
                proc.wait()
                raise ProcessTimeout(
                    f"{os.path.basename(args[0])} did not finish in {timeout:.1f}s",
                    argv=[_redact(a, redact) for a in args],
                    timeout=timeout,
                )
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _start_readers(
    proc: subprocess.Popen[bytes],
    out_chunks: list[bytes],
    err_chunks: list[bytes],
    on_line: Callable[[str], None] | None,
    data: bytes | None,
) -> list[threading.Thread]:
    threads: list[threading.Thread] = []

    def pump(stream: IO[bytes], sink: list[bytes], lines: bool) -> None:
        try:
            if lines and on_line is not None:
                for raw in iter(stream.readline, b""):
                    sink.append(raw)
                    try:
                        on_line(raw.decode(errors="replace").rstrip("\r\n"))
                    except Exception:  # a progress parser must not kill the pump
                        log.debug("on_line callback failed", exc_info=True)
            else:
                for chunk in iter(lambda: stream.read(65536), b""):
                    sink.append(chunk)
        finally:
            stream.close()

    def feed() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(data or b"")
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()

    if proc.stdout is not None:
        threads.append(threading.Thread(target=pump, args=(proc.stdout, out_chunks, True), daemon=True))
    if proc.stderr is not None:
        threads.append(threading.Thread(target=pump, args=(proc.stderr, err_chunks, False), daemon=True))
    if data is not None:
        threads.append(threading.Thread(target=feed, daemon=True))
    for t in threads:
        t.start()
    return threads
